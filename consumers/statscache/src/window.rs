//! Time windows: statscache's `Schedule`, aligned to the Unix epoch (UTC).
//!
//! A message with timestamp `t` falls in the bucket labelled with the
//! window's **end**: `b = (floor(t / I) + 1) * I`; the window is `[b - I, b)`.

use std::fmt;

/// A window length in whole seconds (at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    secs: i64,
}

impl Window {
    /// One minute.
    pub const MINUTE: Window = Window { secs: 60 };
    /// One hour.
    pub const HOUR: Window = Window { secs: 3600 };
    /// One day.
    pub const DAY: Window = Window { secs: 86_400 };

    /// A window of `secs` seconds; `None` for zero or negative lengths.
    pub fn from_secs(secs: i64) -> Option<Window> {
        (secs > 0).then_some(Window { secs })
    }

    /// The length in seconds.
    pub fn secs(self) -> i64 {
        self.secs
    }

    /// The end label of the bucket holding `timestamp` (Unix seconds), the
    /// first boundary strictly after it.
    pub fn bucket_end(self, timestamp: f64) -> i64 {
        let k = (timestamp / self.secs as f64).floor() as i64;
        (k + 1) * self.secs
    }

    /// The start of the bucket labelled `end`.
    pub fn bucket_start(self, end: i64) -> i64 {
        end - self.secs
    }
}

/// statscache's form: `[Nd][Nh][Nm][Ns]`, zero parts left out (`1m`, `1h`, `1d`, `1d2h3m4s`).
impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (d, h, m, s) = (
            self.secs / 86_400,
            self.secs % 86_400 / 3600,
            self.secs % 3600 / 60,
            self.secs % 60,
        );
        for (n, unit) in [(d, 'd'), (h, 'h'), (m, 'm'), (s, 's')] {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_statscache_does() {
        let cases = [
            (1, "1s"),
            (15, "15s"),
            (60, "1m"),
            (3600, "1h"),
            (86_400, "1d"),
            (86_400 + 2 * 3600 + 3 * 60 + 4, "1d2h3m4s"),
        ];
        for (secs, name) in cases {
            assert_eq!(Window::from_secs(secs).unwrap().to_string(), name);
        }
        assert_eq!(Window::from_secs(0), None);
    }

    #[test]
    fn buckets_are_labelled_by_their_end() {
        let m = Window::MINUTE;
        // 10:00:00 exactly opens a new window ending at 10:01:00.
        assert_eq!(m.bucket_end(36_000.0), 36_060);
        assert_eq!(m.bucket_end(36_059.999), 36_060);
        assert_eq!(m.bucket_end(36_060.0), 36_120);
        assert_eq!(m.bucket_start(36_060), 36_000);
        // A day window ends at the next midnight UTC.
        assert_eq!(Window::DAY.bucket_end(86_400.0 * 3.0 + 5.0), 86_400 * 4);
        assert_eq!(Window::from_secs(15).unwrap().bucket_end(14.999_999), 15);
    }
}
