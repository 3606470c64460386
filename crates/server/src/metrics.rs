//! What the server counts, exposed on the bundle endpoint's `/metrics`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use lanyard_core::metrics::{Counter, Exposition, Histogram};

use crate::status::ApiError;

/// The kinds of credential the server mints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MintKind {
    X509Svid,
    JwtSvid,
    TaskToken,
    AgentSvid,
}

impl MintKind {
    const ALL: [Self; 4] = [Self::X509Svid, Self::JwtSvid, Self::TaskToken, Self::AgentSvid];

    fn label(self) -> &'static str {
        match self {
            Self::X509Svid => "x509_svid",
            Self::JwtSvid => "jwt_svid",
            Self::TaskToken => "task_token",
            Self::AgentSvid => "agent_svid",
        }
    }
}

/// How a mint ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Minted.
    Ok,
    /// Refused: not allowed (policy, ceilings, revocation, attestation).
    Denied,
    /// Failed: bad input or an internal error.
    Error,
}

impl Outcome {
    const ALL: [Self; 3] = [Self::Ok, Self::Denied, Self::Error];

    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Denied => "denied",
            Self::Error => "error",
        }
    }

    /// How a handler's result counts.
    pub(crate) fn of<T>(result: &Result<T, ApiError>) -> Self {
        result.as_ref().err().map_or(Self::Ok, Self::of_error)
    }

    /// How a refusal counts.
    pub(crate) fn of_error(e: &ApiError) -> Self {
        match e {
            ApiError::PermissionDenied(_) | ApiError::Unauthenticated(_) => Self::Denied,
            _ => Self::Error,
        }
    }
}

/// The server's counters and histograms.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    mints: [[Counter; 3]; 4],
    mint_seconds: [Histogram; 4],
    decisions: [Counter; 2],
    /// Revocation-feed long-polls waiting right now.
    feed_waiting: AtomicI64,
    /// From a revocation's durable record to a feed answer carrying it.
    feed_lag: Histogram,
}

impl Metrics {
    /// Counts `n` mints of `kind` that ended `outcome`, and the time the call took.
    pub(crate) fn mint(&self, kind: MintKind, outcome: Outcome, n: u64, elapsed: Duration) {
        self.mints[kind as usize][outcome as usize].add(n);
        self.mint_seconds[kind as usize].observe(elapsed);
    }

    /// Counts a policy decision (ceilings and Cedar together).
    pub(crate) fn decision(&self, allowed: bool) {
        self.decisions[usize::from(!allowed)].inc();
    }

    /// A long-poll starts waiting; the guard stops it.
    pub(crate) fn feed_wait(&self) -> FeedWait<'_> {
        self.feed_waiting.fetch_add(1, Ordering::Relaxed);
        FeedWait(&self.feed_waiting)
    }

    /// Long-polls waiting now.
    pub(crate) fn feed_waiting(&self) -> usize {
        usize::try_from(self.feed_waiting.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// An answer carried an event recorded `lag` ago.
    pub(crate) fn feed_delivered(&self, lag: Duration) {
        self.feed_lag.observe(lag);
    }

    /// Appends every family to `e`.
    pub(crate) fn render(&self, e: &mut Exposition) {
        let name = "lanyard_mints_total";
        e.family(name, "counter", "Credentials minted, by kind and result (ok, denied, error).");
        for kind in MintKind::ALL {
            for outcome in Outcome::ALL {
                let value = self.mints[kind as usize][outcome as usize].get();
                e.sample(name, &[("kind", kind.label()), ("result", outcome.label())], value);
            }
        }
        let name = "lanyard_mint_duration_seconds";
        e.family(name, "histogram", "Time to answer a mint request, by kind (X.509: one batch).");
        for kind in MintKind::ALL {
            e.histogram(name, &[("kind", kind.label())], &self.mint_seconds[kind as usize]);
        }
        let name = "lanyard_policy_decisions_total";
        e.family(name, "counter", "Task-token policy decisions (ceilings, then Cedar), by result.");
        e.sample(name, &[("result", "allow")], self.decisions[0].get());
        e.sample(name, &[("result", "deny")], self.decisions[1].get());
        let name = "lanyard_feed_long_polls";
        e.family(name, "gauge", "Revocation-feed long-polls waiting now.");
        e.sample(name, &[], self.feed_waiting.load(Ordering::Relaxed));
        let name = "lanyard_feed_lag_seconds";
        e.family(name, "histogram", "From a revocation being recorded to a feed answer carrying it.");
        e.histogram(name, &[], &self.feed_lag);
    }
}

/// Counts a waiting long-poll until dropped.
pub(crate) struct FeedWait<'a>(&'a AtomicI64);

impl Drop for FeedWait<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mints_decisions_and_waits_are_counted_and_exposed() {
        let m = Metrics::default();
        m.mint(MintKind::TaskToken, Outcome::Ok, 1, Duration::from_micros(800));
        m.mint(
            MintKind::TaskToken,
            Outcome::of::<()>(&Err(ApiError::PermissionDenied("no".into()))),
            1,
            Duration::ZERO,
        );
        m.mint(MintKind::X509Svid, Outcome::Ok, 3, Duration::from_millis(2));
        m.decision(true);
        m.decision(false);
        m.decision(false);
        let waiting = m.feed_wait();
        let mut e = Exposition::default();
        m.render(&mut e);
        let text = e.finish();
        for line in [
            "lanyard_mints_total{kind=\"task_token\",result=\"ok\"} 1",
            "lanyard_mints_total{kind=\"task_token\",result=\"denied\"} 1",
            "lanyard_mints_total{kind=\"x509_svid\",result=\"ok\"} 3",
            "lanyard_mint_duration_seconds_count{kind=\"task_token\"} 2",
            "lanyard_policy_decisions_total{result=\"deny\"} 2",
            "lanyard_feed_long_polls 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        drop(waiting);
        let mut e = Exposition::default();
        m.render(&mut e);
        assert!(e.finish().lines().any(|l| l == "lanyard_feed_long_polls 0"));
    }
}
