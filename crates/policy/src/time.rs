//! The request time as Cedar sees it, in UTC, by plain arithmetic on Unix
//! seconds (no calendar crate, no clock read: the caller passes `now`).

const SECS_PER_DAY: u64 = 86_400;

/// Unix seconds split into the fields policies match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UtcTime {
    /// Seconds since the epoch, saturated to `i64::MAX`.
    pub(crate) unix: i64,
    /// 0-23.
    pub(crate) hour: i64,
    /// 0-59.
    pub(crate) minute: i64,
    /// 0 = Monday .. 6 = Sunday.
    pub(crate) weekday: i64,
}

impl UtcTime {
    pub(crate) fn from_unix(now_unix: u64) -> Self {
        let days = now_unix / SECS_PER_DAY;
        let secs_of_day = now_unix % SECS_PER_DAY;
        // 1970-01-01 was a Thursday, weekday 3 when Monday is 0.
        let weekday = (days + 3) % 7;
        Self {
            unix: i64::try_from(now_unix).unwrap_or(i64::MAX),
            hour: (secs_of_day / 3600) as i64,
            minute: (secs_of_day % 3600 / 60) as i64,
            weekday: weekday as i64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        // (unix, hour, minute, weekday)
        let cases = [
            (0, 0, 0, 3),               // 1970-01-01 00:00 Thursday
            (86_400 * 4, 0, 0, 0),      // 1970-01-05 Monday
            (1_704_067_200, 0, 0, 0),   // 2024-01-01 00:00 Monday
            (1_704_108_645, 11, 30, 0), // 2024-01-01 11:30:45 Monday
            (1_709_164_800, 0, 0, 3),   // 2024-02-29 Thursday (leap day)
            (1_719_705_599, 23, 59, 5), // 2024-06-29 23:59:59 Saturday
            (1_719_705_600, 0, 0, 6),   // 2024-06-30 Sunday
        ];
        for (unix, hour, minute, weekday) in cases {
            let t = UtcTime::from_unix(unix);
            assert_eq!((t.hour, t.minute, t.weekday), (hour, minute, weekday), "{unix}");
            assert_eq!(t.unix, unix as i64);
        }
    }

    #[test]
    fn saturates_past_i64() {
        let t = UtcTime::from_unix(u64::MAX);
        assert_eq!(t.unix, i64::MAX);
        assert!((0..24).contains(&t.hour) && (0..7).contains(&t.weekday));
    }
}
