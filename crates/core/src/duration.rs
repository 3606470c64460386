//! Durations as operators write them: `30s`, `15m`, `1h`, `7d`, and TTLs.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Shortest lifetime a credential may be given.
pub const MIN_TTL: Duration = Duration::from_secs(10);
/// Longest lifetime a credential may be given (30 days).
pub const MAX_TTL: Duration = Duration::from_secs(30 * 86_400);

/// Why a string is not a duration, or a duration not a TTL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// Not digits followed by one of `s`, `m`, `h`, `d`.
    #[error("duration must be a whole number followed by s, m, h or d (e.g. 30s, 15m, 1h, 7d)")]
    Malformed,
    /// Too large to represent.
    #[error("duration is too large")]
    Overflow,
    /// Outside [`MIN_TTL`, `MAX_TTL`].
    #[error("lifetime must be between 10s and 30d")]
    OutOfRange,
}

const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];

/// Parses `<digits><unit>` with unit `s`, `m`, `h` or `d`.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let unit = s.chars().last().ok_or(DurationError::Malformed)?;
    let factor = UNITS.iter().find(|(u, _)| *u == unit).map(|(_, f)| *f).ok_or(DurationError::Malformed)?;
    let digits = &s[..s.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DurationError::Malformed);
    }
    let n: u64 = digits.parse().map_err(|_| DurationError::Overflow)?;
    n.checked_mul(factor).map(Duration::from_secs).ok_or(DurationError::Overflow)
}

/// Formats whole seconds in the largest unit that divides them exactly
/// (`90s`, `15m`, `7d`); sub-second parts are dropped.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (unit, factor) = UNITS.iter().find(|(_, f)| secs != 0 && secs.is_multiple_of(*f)).copied().unwrap_or(('s', 1));
    format!("{}{unit}", secs / factor)
}

/// A credential lifetime: whole seconds within [`MIN_TTL`, `MAX_TTL`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Ttl(u32);

impl Ttl {
    /// Five minutes: the default JWT-SVID lifetime.
    pub const FIVE_MINUTES: Self = Self(300);
    /// One hour: the default X.509-SVID and agent SVID lifetime.
    pub const ONE_HOUR: Self = Self(3600);

    /// A lifetime of `secs` seconds, if within bounds.
    pub fn from_secs(secs: u64) -> Result<Self, DurationError> {
        if secs < MIN_TTL.as_secs() || secs > MAX_TTL.as_secs() {
            return Err(DurationError::OutOfRange);
        }
        u32::try_from(secs).map(Self).map_err(|_| DurationError::OutOfRange)
    }

    /// The lifetime in seconds.
    pub fn as_secs(self) -> u32 {
        self.0
    }

    /// The lifetime as a [`Duration`].
    pub fn as_duration(self) -> Duration {
        Duration::from_secs(u64::from(self.0))
    }
}

impl FromStr for Ttl {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_secs(parse_duration(s)?.as_secs())
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.as_duration()))
    }
}

impl Serialize for Ttl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for Ttl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::from_secs(u64::from(u32::deserialize(deserializer)?)).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_malformed() {
        for s in ["", "s", "10", "10x", "-1s", "+1s", "1.5h", " 1h", "1h ", "1h30m", "1H"] {
            assert_eq!(parse_duration(s), Err(DurationError::Malformed), "{s:?}");
        }
        assert_eq!(parse_duration("99999999999999999999s"), Err(DurationError::Overflow));
        assert_eq!(parse_duration("999999999999999999d"), Err(DurationError::Overflow));
    }

    #[test]
    fn ttl_bounds() {
        assert_eq!("9s".parse::<Ttl>(), Err(DurationError::OutOfRange));
        assert_eq!("31d".parse::<Ttl>(), Err(DurationError::OutOfRange));
        assert_eq!("10s".parse::<Ttl>().map(Ttl::as_secs), Ok(10));
        assert_eq!("30d".parse::<Ttl>().map(|t| t.to_string()), Ok("30d".to_owned()));
        assert!(serde_json::from_str::<Ttl>("5").is_err());
    }

    proptest! {
        #[test]
        fn format_parse_round_trips(secs in 0u64..10_000_000_000) {
            let d = Duration::from_secs(secs);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        #[test]
        fn accepted_strings_round_trip_in_value(s in "[0-9]{1,12}[smhd]") {
            let d = parse_duration(&s).unwrap();
            prop_assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
    }
}
