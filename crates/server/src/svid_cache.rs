//! X.509-SVIDs the server has already verified, so the task-token path does
//! not repeat an ECDSA verification (about three signatures' worth of CPU)
//! for the certificate a connector presents on every request; and agent
//! certificates already parsed, so the node API does not parse an agent's
//! TLS client certificate again on every call over the same connection.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use lanyard_ca::svid::{self, SvidInfo, Usage};
use ring::digest::{SHA256, digest};

/// Most certificates remembered; past it the cache starts over.
pub(crate) const MAX_CACHED_SVIDS: usize = 16_384;

/// A connector's X.509-SVID that verified, and the SHA-256 of its DER (the
/// cache's key, and what a token's `cnf` binds to).
pub(crate) struct VerifiedSvid {
    /// What the certificate says.
    pub(crate) info: SvidInfo,
    /// SHA-256 of the certificate's DER.
    pub(crate) sha256: [u8; 32],
}

/// Verified leaves by SHA-256 of their DER, for one bundle sequence.
#[derive(Default)]
pub(crate) struct SvidCache {
    verified: Mutex<(u64, HashMap<[u8; 32], SvidInfo>)>,
}

impl SvidCache {
    /// Verifies `leaf` against `roots` at `now`, or answers from the cache
    /// when this exact certificate verified under this bundle `sequence`
    /// and is still within its validity.
    pub(crate) fn verify(
        &self,
        leaf: &[u8],
        roots: &[Vec<u8>],
        sequence: u64,
        now: SystemTime,
    ) -> Result<VerifiedSvid, lanyard_ca::CaError> {
        let mut key = [0u8; 32];
        key.copy_from_slice(digest(&SHA256, leaf).as_ref());
        if let Ok(cache) = self.verified.lock()
            && let (seq, Some(info)) = (cache.0, cache.1.get(&key))
            // INVARIANT: entries are only ever verified under `seq`; a bundle
            // change (a key revoked) empties the cache below.
            && seq == sequence
            && info.not_before <= now
            && now < info.not_after
        {
            return Ok(VerifiedSvid { info: info.clone(), sha256: key });
        }
        let info = svid::verify_chain(std::slice::from_ref(&leaf.to_vec()), roots, now, Usage::Client)?;
        if let Ok(mut cache) = self.verified.lock() {
            if cache.0 != sequence || cache.1.len() >= MAX_CACHED_SVIDS {
                *cache = (sequence, HashMap::new());
            }
            cache.1.insert(key, info.clone());
        }
        Ok(VerifiedSvid { info, sha256: key })
    }
}

/// What [`svid::inspect_leaf`] found in agent certificates, by SHA-256 of
/// their DER. rustls verified each at the TLS handshake; this only spares
/// the X.509 parse (the agent's record, ban and current serial are still
/// read from the store on every call). Only certificates that parsed are kept.
#[derive(Default)]
pub(crate) struct LeafCache {
    parsed: Mutex<HashMap<[u8; 32], SvidInfo>>,
}

impl LeafCache {
    /// [`svid::inspect_leaf`] of `der`, from the cache when seen before.
    pub(crate) fn inspect(&self, der: &[u8]) -> Result<SvidInfo, lanyard_ca::CaError> {
        let mut key = [0u8; 32];
        key.copy_from_slice(digest(&SHA256, der).as_ref());
        if let Ok(parsed) = self.parsed.lock()
            && let Some(info) = parsed.get(&key)
        {
            return Ok(info.clone());
        }
        let info = svid::inspect_leaf(der)?;
        if let Ok(mut parsed) = self.parsed.lock() {
            if parsed.len() >= MAX_CACHED_SVIDS {
                parsed.clear();
            }
            parsed.insert(key, info.clone());
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lanyard_ca::{X509Authority, X509SvidTemplate, csr, task_token};

    use super::*;

    fn authority(now: SystemTime) -> X509Authority {
        X509Authority::generate(&"example.org".parse().unwrap(), now, Duration::from_secs(3600)).unwrap()
    }

    /// A leaf for `spiffe_id` from `ca`, valid for 60 s from `now`.
    fn leaf(ca: &X509Authority, spiffe_id: &str, now: SystemTime) -> Vec<u8> {
        let (_, request) = csr::new_key_and_csr().unwrap();
        let template = X509SvidTemplate {
            spiffe_id: spiffe_id.parse().unwrap(),
            dns_names: vec![],
            ttl: Duration::from_secs(60),
            public_key: csr::parse_csr(&request).unwrap(),
        };
        ca.sign_svid(&template, now).unwrap().der
    }

    #[test]
    fn caches_only_what_verified_and_forgets_on_bundle_change_and_expiry() {
        let now = SystemTime::now();
        let (ca, other) = (authority(now), authority(now));
        let leaf = leaf(&ca, "spiffe://example.org/c", now);
        let roots = vec![ca.cert_der().to_vec()];
        let cache = SvidCache::default();
        assert!(cache.verify(&leaf, &[other.cert_der().to_vec()], 1, now).is_err());
        assert!(cache.verify(&leaf, &roots, 1, now).is_ok());
        // Cached under sequence 1; under sequence 2 it is verified again, against the new roots.
        assert!(cache.verify(&leaf, &[other.cert_der().to_vec()], 2, now).is_err());
        assert!(cache.verify(&leaf, &roots, 2, now).is_ok());
        // Past its notAfter the cache does not answer, and verification fails.
        assert!(cache.verify(&leaf, &roots, 2, now + Duration::from_secs(61)).is_err());
    }

    #[test]
    fn the_digest_answered_is_the_certificates_whether_cached_or_not() {
        let now = SystemTime::now();
        let ca = authority(now);
        let (leaf, roots) = (leaf(&ca, "spiffe://example.org/c", now), vec![ca.cert_der().to_vec()]);
        let cache = SvidCache::default();
        let verified = cache.verify(&leaf, &roots, 1, now).unwrap();
        let cached = cache.verify(&leaf, &roots, 1, now).unwrap();
        for svid in [verified, cached] {
            assert_eq!(task_token::x5t_s256_of_digest(&svid.sha256), task_token::x5t_s256(&leaf));
            assert_eq!(svid.info.spiffe_id.as_str(), "spiffe://example.org/c");
        }
    }

    #[test]
    fn agent_leaves_parse_once_and_refusals_are_never_kept() {
        let now = SystemTime::now();
        let ca = authority(now);
        let leaf = leaf(&ca, "spiffe://example.org/agent/a", now);
        let cache = LeafCache::default();
        let first = cache.inspect(&leaf).unwrap();
        assert_eq!(first.spiffe_id.as_str(), "spiffe://example.org/agent/a");
        assert_eq!(cache.inspect(&leaf).unwrap().serial, first.serial);
        assert_eq!(cache.parsed.lock().unwrap().len(), 1);
        // A CA certificate is no leaf: refused, each time, and not kept.
        for _ in 0..2 {
            assert!(cache.inspect(ca.cert_der()).is_err());
        }
        assert!(cache.inspect(&leaf[..leaf.len() - 1]).is_err());
        assert_eq!(cache.parsed.lock().unwrap().len(), 1);
    }
}
