//! Lock-free counters and histograms, and the Prometheus text format they
//! are exposed in. Cheap enough for every request: one relaxed atomic add
//! per counter, three per histogram observation.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds (seconds) of latency buckets: 100 µs to 10 s.
pub const LATENCY_BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0];

/// A latency histogram with [`LATENCY_BUCKETS`].
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at or below each bound (not cumulative; summed on output).
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|bound| secs <= *bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// How many observations.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Cumulative counts per bound, in [`LATENCY_BUCKETS`] order.
    pub fn cumulative(&self) -> [u64; LATENCY_BUCKETS.len()] {
        let mut total = 0;
        std::array::from_fn(|i| {
            total += self.buckets[i].load(Ordering::Relaxed);
            total
        })
    }

    /// Sum of all observations, in seconds.
    pub fn sum_secs(&self) -> f64 {
        Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)).as_secs_f64()
    }
}

/// A Prometheus text exposition (format 0.0.4) being written.
#[derive(Debug, Default)]
pub struct Exposition(String);

/// The content type of [`Exposition`] bodies.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

impl Exposition {
    /// Starts a metric family: its `HELP` and `TYPE` lines.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        self
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) -> &mut Self {
        self.0.push_str(name);
        write_labels(&mut self.0, labels, None);
        let _ = writeln!(self.0, " {value}");
        self
    }

    /// A histogram family's samples for one label set.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) -> &mut Self {
        for (bound, count) in LATENCY_BUCKETS.iter().zip(h.cumulative()) {
            let _ = write!(self.0, "{name}_bucket");
            write_labels(&mut self.0, labels, Some(&bound.to_string()));
            let _ = writeln!(self.0, " {count}");
        }
        let _ = write!(self.0, "{name}_bucket");
        write_labels(&mut self.0, labels, Some("+Inf"));
        let _ = writeln!(self.0, " {}", h.count());
        let _ = write!(self.0, "{name}_sum");
        write_labels(&mut self.0, labels, None);
        let _ = writeln!(self.0, " {}", h.sum_secs());
        let _ = write!(self.0, "{name}_count");
        write_labels(&mut self.0, labels, None);
        let _ = writeln!(self.0, " {}", h.count());
        self
    }

    /// The text.
    pub fn finish(self) -> String {
        self.0
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
        if !first {
            out.push(',');
        }
        first = false;
        let escaped = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let _ = write!(out, "{k}=\"{escaped}\"");
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_count_into_cumulative_buckets() {
        let h = Histogram::default();
        for micros in [50, 300, 300, 2_000, 20_000_000] {
            h.observe(Duration::from_micros(micros));
        }
        let c = h.cumulative();
        assert_eq!(c[0], 1, "<= 100 µs");
        assert_eq!(c[2], 3, "<= 500 µs");
        assert_eq!(c[4], 4, "<= 2.5 ms");
        assert_eq!(c[LATENCY_BUCKETS.len() - 1], 4, "20 s is past the last bound");
        assert_eq!(h.count(), 5, "but counted");
        assert!((h.sum_secs() - 20.00265).abs() < 1e-9);
    }

    #[test]
    fn exposition_is_prometheus_text() {
        let counter = Counter::default();
        counter.add(3);
        let h = Histogram::default();
        h.observe(Duration::from_millis(2));
        let mut e = Exposition::default();
        e.family("lanyard_mints_total", "counter", "Credentials minted.").sample(
            "lanyard_mints_total",
            &[("kind", "x509_svid"), ("result", "ok")],
            counter.get(),
        );
        e.family("lanyard_mint_duration_seconds", "histogram", "Mint latency.").histogram(
            "lanyard_mint_duration_seconds",
            &[("kind", "a\"b")],
            &h,
        );
        let text = e.finish();
        assert!(
            text.starts_with("# HELP lanyard_mints_total Credentials minted.\n# TYPE lanyard_mints_total counter\n")
        );
        assert!(text.contains("lanyard_mints_total{kind=\"x509_svid\",result=\"ok\"} 3\n"), "{text}");
        assert!(text.contains("lanyard_mint_duration_seconds_bucket{kind=\"a\\\"b\",le=\"0.0025\"} 1\n"), "{text}");
        assert!(text.contains("lanyard_mint_duration_seconds_bucket{kind=\"a\\\"b\",le=\"+Inf\"} 1\n"), "{text}");
        assert!(text.contains("lanyard_mint_duration_seconds_count{kind=\"a\\\"b\"} 1\n"), "{text}");
    }
}
