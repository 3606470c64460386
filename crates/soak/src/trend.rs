//! Whether a series keeps growing (pure).
//!
//! The samples taken after the settle time are cut into three equal parts
//! (early, middle, late) and compared by their medians, which a few outliers
//! do not move: a series keeps growing when the middle is above the early
//! part and the late part is above the middle by more than the series'
//! tolerance. A leak climbs through all three; a cache that fills and then
//! stays, a sawtooth of a compacting store, or noise around a level does not.

/// How much a series may rise from the middle to the late part and still be
/// called level: `relative` of the middle median plus `absolute`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// A fraction of the middle median (0.05 is 5%).
    pub relative: f64,
    /// In the series' own unit.
    pub absolute: f64,
}

/// The fewest samples after settling that a judgement needs (two per part).
pub const MIN_SAMPLES: usize = 6;

/// What the judgement found.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Level: the medians of the three parts (early, middle, late).
    Level([f64; 3]),
    /// Keeps growing: the medians of the three parts.
    Growing([f64; 3]),
    /// Fewer than [`MIN_SAMPLES`] samples after settling.
    TooShort(usize),
}

impl Verdict {
    /// Whether the series keeps growing.
    pub fn is_growing(&self) -> bool {
        matches!(self, Self::Growing(_))
    }
}

/// Judges `values` (in time order, the settle time already dropped).
pub fn judge(values: &[f64], tolerance: Tolerance) -> Verdict {
    if values.len() < MIN_SAMPLES {
        return Verdict::TooShort(values.len());
    }
    let third = values.len() / 3;
    let (early, rest) = values.split_at(third);
    let (middle, late) = rest.split_at(rest.len() - third);
    let medians = [median(early), median(middle), median(late)];
    let [a, b, c] = medians;
    let allowed = b.abs() * tolerance.relative + tolerance.absolute;
    if b > a && c - b > allowed { Verdict::Growing(medians) } else { Verdict::Level(medians) }
}

/// The median of a non-empty slice (the mean of the two middle values for an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    match sorted.len() % 2 {
        0 => (sorted[mid - 1] + sorted[mid]) / 2.0,
        _ => sorted[mid],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1024.0 * 1024.0;
    const RSS: Tolerance = Tolerance { relative: 0.02, absolute: 2.0 * MIB };

    #[test]
    fn a_steady_leak_is_growing() {
        // 50 MiB plus 100 KiB a sample: 18 MiB over 180 samples (30 minutes at 10 s).
        let leak: Vec<f64> = (0..180).map(|i| 50.0 * MIB + f64::from(i) * 100.0 * 1024.0).collect();
        assert!(judge(&leak, RSS).is_growing(), "{:?}", judge(&leak, RSS));
    }

    #[test]
    fn a_level_with_noise_a_filled_cache_and_a_sawtooth_are_not() {
        let noise: Vec<f64> = (0..180).map(|i| 50.0 * MIB + f64::from(i % 7) * MIB).collect();
        assert!(!judge(&noise, RSS).is_growing());
        // Fills over the first third, then stays.
        let cache: Vec<f64> = (0..180).map(|i| 40.0 * MIB + f64::from(i.min(60)) * 0.2 * MIB).collect();
        assert!(!judge(&cache, RSS).is_growing(), "{:?}", judge(&cache, RSS));
        // Grows by 10 MiB and is compacted back, again and again.
        let sawtooth: Vec<f64> = (0..180).map(|i| 30.0 * MIB + f64::from(i % 20) * 0.5 * MIB).collect();
        assert!(!judge(&sawtooth, RSS).is_growing());
    }

    #[test]
    fn growth_within_the_tolerance_is_level_and_outliers_do_not_count() {
        let slow: Vec<f64> = (0..30).map(|i| 100.0 + f64::from(i) * 0.1).collect();
        let fds = Tolerance { relative: 0.0, absolute: 3.0 };
        assert!(!judge(&slow, fds).is_growing(), "3 descriptors over the run is within the tolerance");
        let mut spikes = vec![100.0; 30];
        spikes[25] = 1000.0;
        spikes[28] = 1000.0;
        assert!(!judge(&spikes, fds).is_growing());
        let climbing: Vec<f64> = (0..30).map(|i| 100.0 + f64::from(i)).collect();
        assert_eq!(judge(&climbing, fds), Verdict::Growing([104.5, 114.5, 124.5]));
    }

    #[test]
    fn too_few_samples_are_not_judged() {
        assert_eq!(judge(&[1.0, 2.0, 3.0, 4.0, 5.0], RSS), Verdict::TooShort(5));
        assert!(!judge(&[], RSS).is_growing());
    }
}
