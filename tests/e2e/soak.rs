//! The soak tool (`just soak`) in a short run: real server, agent and
//! verifier under a steady rate, sampled every second.

use std::time::Duration;

use lanyard_soak::{SoakConfig, error_excess, judge, trend::Verdict};

use crate::harness::BIN;

#[test]
fn a_short_soak_samples_every_process_and_judges_every_series() {
    let config = SoakConfig {
        lanyard: BIN.into(),
        duration: Duration::from_secs(12),
        interval: Duration::from_secs(1),
        settle: Duration::from_secs(2),
        rate: 50,
        workloads: 4,
        x509_ttl: "1m".to_owned(),
    };
    let mut seen = 0;
    let samples = lanyard_soak::run(&config, |_| seen += 1).unwrap();
    assert_eq!(seen, samples.len());
    assert!((11..=12).contains(&samples.len()), "a sample a second: {}", samples.len());
    for s in &samples {
        for p in [s.server, s.agent, s.verifier] {
            assert!(p.rss_bytes > 1 << 20 && p.fds >= 3, "{s:?}");
        }
        assert!(s.store_bytes > 0 && s.audit_bytes > 0, "{s:?}");
        let ops: Vec<&str> = s.ops.iter().map(|o| o.op.as_str()).collect();
        assert_eq!(ops, ["x509", "jwt", "task-token", "verify"], "{s:?}");
    }
    // Steady: each operation near its rate once running, and the audit log grows with the mints.
    let last = samples.last().unwrap();
    assert!(last.ops.iter().all(|o| o.per_sec > 25.0 && o.p99_ms.is_some()), "{last:?}");
    assert!(last.audit_bytes > samples[0].audit_bytes);
    assert!(error_excess(&samples).is_empty(), "{:?}", error_excess(&samples));
    let judged = judge(&samples, config.settle);
    assert!(judged.len() >= 12, "{judged:#?}");
    assert!(judged.iter().all(|j| !matches!(j.verdict, Verdict::TooShort(_))), "{judged:#?}");
}
