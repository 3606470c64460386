//! Keys at rest: with a key-encryption key (KEK) configured, every private
//! signing key is sealed with AES-256-GCM before it reaches the store, bound
//! to its record id (the associated data), so a sealed key copied onto
//! another record does not open. The public half stays readable, so the
//! bundle and audit checkpoints can be checked without the KEK.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use base64::Engine as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// What a sealed key starts with (then nonce, then ciphertext and tag).
const MAGIC: &[u8] = b"lanyard-sealed-v1:";

/// The key-encryption key.
pub(crate) struct Kek(LessSafeKey);

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(<redacted>)")
    }
}

/// Why a KEK could not be loaded, or a key not unsealed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KekError {
    #[error("kek-file {path}: cannot read it: {reason}")]
    Read { path: String, reason: String },
    #[error("kek-file {0} is readable by group or others (chmod 600 it)")]
    Permissions(String),
    #[error("kek-file {0} must hold 32 bytes: raw, 64 hex digits, or base64")]
    Format(String),
    #[error("key {0}: cannot unseal it with this KEK (another KEK, or the record was altered)")]
    Unseal(String),
    #[error("key {0} is sealed: give the server its KEK (--kek-file)")]
    NeedKek(String),
    #[error("cannot seal a key: the random source failed")]
    Random,
}

impl Kek {
    /// Reads the KEK from `path`, which only its owner may read.
    pub(crate) fn from_file(path: &Path) -> Result<Self, KekError> {
        let shown = path.display().to_string();
        let read = |reason: String| KekError::Read { path: shown.clone(), reason };
        let meta = std::fs::metadata(path).map_err(|e| read(e.to_string()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(KekError::Permissions(shown));
        }
        let bytes = std::fs::read(path).map_err(|e| read(e.to_string()))?;
        Self::from_bytes(&bytes).ok_or(KekError::Format(shown))
    }

    /// 32 raw bytes, or 64 hex digits, or base64 of 32 bytes (surrounding
    /// whitespace ignored).
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let key = match bytes.len() {
            32 => bytes.to_vec(),
            _ => {
                let text = std::str::from_utf8(bytes).ok()?.trim();
                lanyard_core::hex::decode_lower::<32>(&text.to_ascii_lowercase())
                    .map(|k| k.to_vec())
                    .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())?
            }
        };
        let key = UnboundKey::new(&AES_256_GCM, &key).ok()?;
        Some(Self(LessSafeKey::new(key)))
    }

    /// Seals `pkcs8` for record `id`.
    pub(crate) fn seal(&self, id: &str, pkcs8: &[u8]) -> Result<Vec<u8>, KekError> {
        let mut nonce = [0u8; NONCE_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce).map_err(|_| KekError::Random)?;
        let mut sealed = pkcs8.to_vec();
        self.0
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), aad(id), &mut sealed)
            .map_err(|_| KekError::Random)?;
        Ok([MAGIC, &nonce, &sealed].concat())
    }

    /// Opens what [`Kek::seal`] sealed for record `id`.
    pub(crate) fn open(&self, id: &str, sealed: &[u8]) -> Result<Vec<u8>, KekError> {
        let body = sealed.strip_prefix(MAGIC).ok_or_else(|| KekError::Unseal(id.to_owned()))?;
        if body.len() < NONCE_LEN {
            return Err(KekError::Unseal(id.to_owned()));
        }
        let (nonce, ciphertext) = body.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KekError::Unseal(id.to_owned()))?;
        let mut buffer = ciphertext.to_vec();
        let plain = self.0.open_in_place(nonce, aad(id), &mut buffer).map_err(|_| KekError::Unseal(id.to_owned()))?;
        Ok(plain.to_vec())
    }
}

/// Whether a stored private key is sealed.
pub(crate) fn is_sealed(stored: &[u8]) -> bool {
    stored.starts_with(MAGIC)
}

/// The private key of record `id` as stored: opened with the KEK when
/// sealed; as is when not (a store from before a KEK was set).
pub(crate) fn unseal(kek: Option<&Kek>, id: &str, stored: &[u8]) -> Result<Vec<u8>, KekError> {
    match (is_sealed(stored), kek) {
        (false, _) => Ok(stored.to_vec()),
        (true, Some(kek)) => kek.open(id, stored),
        (true, None) => Err(KekError::NeedKek(id.to_owned())),
    }
}

fn aad(id: &str) -> Aad<Vec<u8>> {
    Aad::from(format!("lanyard-key:{id}").into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek() -> Kek {
        Kek::from_bytes(&[7; 32]).unwrap()
    }

    #[test]
    fn sealed_keys_open_only_for_their_record_and_kek() {
        let secret = b"a pkcs8 private key".to_vec();
        let sealed = kek().seal("kid-1", &secret).unwrap();
        assert!(is_sealed(&sealed));
        assert!(!sealed.windows(secret.len()).any(|w| w == secret.as_slice()), "no plaintext in the sealed form");
        assert_eq!(kek().open("kid-1", &sealed).unwrap(), secret);
        // Another record, another KEK, a flipped bit: all refused.
        assert!(matches!(kek().open("kid-2", &sealed), Err(KekError::Unseal(_))));
        let other = Kek::from_bytes(&[8; 32]).unwrap();
        assert!(matches!(other.open("kid-1", &sealed), Err(KekError::Unseal(_))));
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(kek().open("kid-1", &flipped), Err(KekError::Unseal(_))));
        // Two seals of one key differ (fresh nonces).
        assert_ne!(kek().seal("kid-1", &secret).unwrap(), sealed);
    }

    #[test]
    fn unseal_passes_plaintext_through_and_needs_the_kek_for_sealed_keys() {
        assert_eq!(unseal(None, "k", b"plain").unwrap(), b"plain");
        let sealed = kek().seal("k", b"plain").unwrap();
        assert!(matches!(unseal(None, "k", &sealed), Err(KekError::NeedKek(_))));
        assert_eq!(unseal(Some(&kek()), "k", &sealed).unwrap(), b"plain");
    }

    #[test]
    fn kek_files_are_32_bytes_raw_hex_or_base64_and_private() {
        let hex = "07".repeat(32);
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        for text in [hex.as_bytes(), b64.as_bytes(), &[7u8; 32][..]] {
            let kek = Kek::from_bytes(text).unwrap();
            assert_eq!(kek.open("k", &super::tests::kek().seal("k", b"x").unwrap()).unwrap(), b"x");
        }
        for bad in [&b"short"[..], &[1u8; 31][..], "zz".repeat(32).as_bytes()] {
            assert!(Kek::from_bytes(bad).is_none());
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        std::fs::write(&path, &hex).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(Kek::from_file(&path), Err(KekError::Permissions(_))));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Kek::from_file(&path).is_ok());
        assert!(matches!(Kek::from_file(&dir.path().join("missing")), Err(KekError::Read { .. })));
    }
}
