use super::*;

fn sample(t: f64, rss_mib: u64, fds: u64, store: u64, audit: u64) -> Sample {
    let process = ProcessSample { rss_bytes: rss_mib * 1024 * 1024, fds };
    Sample {
        t,
        server: process,
        agent: process,
        verifier: process,
        store_bytes: store,
        audit_bytes: audit,
        ops: vec![
            OpPoint { op: "task-token".into(), per_sec: 100.0, p99_ms: Some(2.0), count: 1000, errors: 0 },
            OpPoint { op: "x509".into(), per_sec: 100.0, p99_ms: Some(0.5), count: 1000, errors: 1 },
        ],
    }
}

#[test]
fn a_steady_run_is_level_everywhere_and_settling_is_not_judged() {
    // A large first sample (before settling) must not count.
    let mut samples = vec![sample(5.0, 500, 900, 1 << 30, 0)];
    samples.extend((1..40u32).map(|i| sample(f64::from(i) * 10.0, 40, 30, 8 << 20, u64::from(i) << 20)));
    let judged = judge(&samples, Duration::from_secs(8));
    assert!(judged.iter().all(|j| matches!(j.verdict, Verdict::Level(_))), "{judged:#?}");
    let names: Vec<&str> = judged.iter().map(|j| j.name.as_str()).collect();
    assert!(names.contains(&"task-token p99 (ms)") && names.contains(&"x509 p99 (ms)"), "{names:?}");
    assert!(names.contains(&"audit log added per interval (MiB)"));
}

#[test]
fn growing_memory_descriptors_or_store_are_named() {
    let samples: Vec<Sample> = (1..40u32)
        .map(|i| sample(f64::from(i) * 10.0, 40 + u64::from(i), 30 + u64::from(i), u64::from(i) << 21, 0))
        .collect();
    let judged = judge(&samples, Duration::ZERO);
    let growing: Vec<&str> = judged.iter().filter(|j| j.verdict.is_growing()).map(|j| j.name.as_str()).collect();
    for name in ["server RSS (MiB)", "agent fds", "verifier RSS (MiB)", "store, sled files (MiB)"] {
        assert!(growing.contains(&name), "{name} in {growing:?}");
    }
}

#[test]
fn an_audit_log_growing_faster_and_faster_is_caught() {
    let samples: Vec<Sample> =
        (1..40u32).map(|i| sample(f64::from(i) * 10.0, 40, 30, 8 << 20, u64::from(i * i) << 20)).collect();
    let audit = judge(&samples, Duration::ZERO).into_iter().find(|j| j.name.starts_with("audit")).unwrap();
    assert!(audit.verdict.is_growing(), "{audit:?}");
}

#[test]
fn errors_above_a_tenth_of_a_percent_are_reported_per_operation() {
    let samples: Vec<Sample> = (1..5u32).map(|i| sample(f64::from(i), 40, 30, 0, 0)).collect();
    assert!(error_excess(&samples).is_empty(), "x509: 4 of 4004 is 0.1%");
    let mut bad = samples.clone();
    bad[0].ops[0].errors = 10;
    assert_eq!(error_excess(&bad), [("task-token".to_owned(), 4000, 10)]);
}

#[test]
fn csv_has_a_header_and_a_row_per_sample() {
    let samples = vec![sample(10.0, 1, 2, 3, 4), sample(20.0, 1, 2, 3, 4)];
    let text = csv(&samples);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines[0]
            .ends_with("task-token_per_sec,task-token_p99_ms,task-token_errors,x509_per_sec,x509_p99_ms,x509_errors")
    );
    assert_eq!(lines[1], "10,1048576,2,1048576,2,1048576,2,3,4,100,2,0,100,0.5,1");
    assert_eq!(lines[0].split(',').count(), lines[2].split(',').count());
}

#[test]
fn the_graph_is_a_png() {
    let Ok(font) = std::fs::read(plot::DEFAULT_FONT) else {
        // Not every machine has Debian's DejaVu fonts; the CLI then asks for --font.
        eprintln!("skipped: no {}", plot::DEFAULT_FONT);
        return;
    };
    let samples: Vec<Sample> =
        (1..30u32).map(|i| sample(f64::from(i) * 10.0, 40, 30, 8 << 20, u64::from(i) << 20)).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("soak.png");
    plot::draw(&samples, font, "test", &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000, "{} bytes", bytes.len());
}
