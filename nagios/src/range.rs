//! Threshold ranges in the monitoring-plugins syntax: `[@]START:END`.
//!
//! `START` may be omitted when it is 0, `~` means minus infinity, an empty `END`
//! means plus infinity. A range alerts when the value lies outside
//! `[START, END]` (endpoints inclusive), or inside it with a leading `@`.
//! Parsing is strict: anything but plain decimal numbers is rejected, as is a
//! start greater than its end.

use std::fmt;

/// A parsed threshold range.
#[derive(Debug, Clone, PartialEq)]
pub struct Range {
    /// Lower bound (may be `-inf`).
    pub start: f64,
    /// Upper bound (may be `+inf`).
    pub end: f64,
    /// `@`: alert when the value is inside the bounds.
    pub inside: bool,
    text: String,
}

/// Why a range string was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeError(String);

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RangeError {}

/// Parses a plain decimal number (`12`, `-7`, `+3`, `0.5`, `.5`): no exponent,
/// no `inf`/`nan`, no units, no surrounding spaces.
pub fn parse_decimal(text: &str) -> Option<f64> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let valid = all_digits(int)
        && match frac {
            None => !int.is_empty(),
            Some(f) => !f.is_empty() && all_digits(f),
        };
    if !valid {
        return None;
    }
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}

fn bound(text: &str, what: &str) -> Result<f64, RangeError> {
    parse_decimal(text).ok_or_else(|| {
        RangeError(format!(
            "{what} '{text}' is not a number (expected digits with an optional sign and decimal point)"
        ))
    })
}

impl Range {
    /// Parses `[@]START:END`, `END`, `START:`, `~:END`.
    pub fn parse(text: &str) -> Result<Range, RangeError> {
        if text.is_empty() {
            return Err(RangeError("the range is empty".into()));
        }
        let (inside, body) = match text.strip_prefix('@') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        if body.is_empty() {
            return Err(RangeError("'@' must be followed by a range".into()));
        }
        let (start, end) = match body.split_once(':') {
            Some((start, end)) => {
                let start = match start {
                    "" => 0.0,
                    "~" => f64::NEG_INFINITY,
                    s => bound(s, "start")?,
                };
                let end = match end {
                    "" => f64::INFINITY,
                    e => bound(e, "end")?,
                };
                (start, end)
            }
            None => (0.0, bound(body, "end")?),
        };
        if start > end {
            return Err(RangeError(format!(
                "start {} is greater than end {}",
                show(start),
                show(end)
            )));
        }
        Ok(Range {
            start,
            end,
            inside,
            text: text.to_string(),
        })
    }

    /// Whether `value` raises an alert for this range.
    pub fn alerts(&self, value: f64) -> bool {
        let outside = value < self.start || value > self.end;
        outside != self.inside
    }

    /// The range as the user wrote it (for perfdata).
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn show(v: f64) -> String {
    if v == f64::NEG_INFINITY {
        "~".into()
    } else {
        format!("{v}")
    }
}

/// Warning and critical ranges; either may be absent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Thresholds {
    /// `-w`
    pub warning: Option<Range>,
    /// `-c`
    pub critical: Option<Range>,
}

impl Thresholds {
    /// CRITICAL if the critical range alerts, else WARNING if the warning range
    /// does, else OK (monitoring-plugins' `get_status`).
    pub fn state(&self, value: f64) -> crate::status::State {
        use crate::status::State;
        if self.critical.as_ref().is_some_and(|r| r.alerts(value)) {
            State::Critical
        } else if self.warning.as_ref().is_some_and(|r| r.alerts(value)) {
            State::Warning
        } else {
            State::Ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::State;

    const INF: f64 = f64::INFINITY;

    #[test]
    fn parses_the_monitoring_plugins_vectors() {
        // (text, start, end, inside)
        let cases: &[(&str, f64, f64, bool)] = &[
            ("6", 0.0, 6.0, false),
            (":5.75", 0.0, 5.75, false),
            ("-7:23", -7.0, 23.0, false),
            ("~:-95.99", -INF, -95.99, false),
            ("~:0", -INF, 0.0, false),
            ("@0:657.8210567", 0.0, 657.8210567, true),
            ("@1:1", 1.0, 1.0, true),
            ("1:1", 1.0, 1.0, false),
            ("10", 0.0, 10.0, false),
            ("10:", 10.0, INF, false),
            ("~:10", -INF, 10.0, false),
            ("10:20", 10.0, 20.0, false),
            ("@10:20", 10.0, 20.0, true),
            ("~:", -INF, INF, false),
            (":", 0.0, INF, false),
            ("+3:4.5", 3.0, 4.5, false),
            ("-.5:.5", -0.5, 0.5, false),
        ];
        for &(text, start, end, inside) in cases {
            let r = Range::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((r.start, r.end, r.inside), (start, end, inside), "{text}");
            assert_eq!(r.as_str(), text);
        }
    }

    #[test]
    fn alerting_follows_the_vectors() {
        // (range, value, alerts)
        let cases: &[(&str, f64, bool)] = &[
            ("6", 0.0, false),
            ("6", 6.0, false),
            ("6", 6.1, true),
            ("6", -0.1, true),
            (":5.75", 5.75, false),
            (":5.75", 5.76, true),
            ("-7:23", -7.0, false),
            ("-7:23", 23.0, false),
            ("-7:23", -7.1, true),
            ("-7:23", 23.1, true),
            ("~:-95.99", -1000.0, false),
            ("~:-95.99", -95.99, false),
            ("~:-95.99", -95.98, true),
            ("~:0", 0.5, true),
            ("~:0", -10.0, false),
            ("~:0", 0.0, false),
            ("@0:657.8210567", 0.0, true),
            ("@0:657.8210567", 657.8210567, true),
            ("@0:657.8210567", -2.0, false),
            ("@0:657.8210567", 657.9, false),
            ("@1:1", 1.0, true),
            ("@1:1", 0.9, false),
            ("@1:1", 1.1, false),
            ("1:1", 1.0, false),
            ("1:1", 0.9, true),
            ("1:1", 1.1, true),
            ("10", 11.0, true),
            ("10", -1.0, true),
            ("10:", 9.0, true),
            ("10:", 1e9, false),
            ("~:10", -1e9, false),
            ("~:10", 10.5, true),
            ("10:20", 9.0, true),
            ("10:20", 21.0, true),
            ("10:20", 15.0, false),
            ("@10:20", 10.0, true),
            ("@10:20", 20.0, true),
            ("@10:20", 21.0, false),
            ("~:", -1e300, false),
        ];
        for &(text, value, alerts) in cases {
            let r = Range::parse(text).unwrap();
            assert_eq!(r.alerts(value), alerts, "{text} with {value}");
        }
    }

    #[test]
    fn rejects_malformed_ranges() {
        let cases: &[(&str, &str)] = &[
            ("2:1", "start 2 is greater than end 1"),
            ("abc", "end 'abc' is not a number"),
            ("", "the range is empty"),
            ("@", "'@' must be followed by a range"),
            ("1:12%", "end '12%' is not a number"),
            ("10%", "end '10%' is not a number"),
            ("1e3", "end '1e3' is not a number"),
            ("inf", "end 'inf' is not a number"),
            ("nan", "end 'nan' is not a number"),
            ("~", "end '~' is not a number"),
            ("5:~", "end '~' is not a number"),
            ("1:2:3", "end '2:3' is not a number"),
            (" 5", "end ' 5' is not a number"),
            ("5 ", "end '5 ' is not a number"),
            ("1.", "end '1.' is not a number"),
            ("-", "end '-' is not a number"),
            ("@@1", "end '@1' is not a number"),
            ("x:5", "start 'x' is not a number"),
            ("10:-5", "start 10 is greater than end -5"),
            ("~x:5", "start '~x' is not a number"),
        ];
        for &(text, want) in cases {
            let err = Range::parse(text).expect_err(text).to_string();
            assert!(
                err.starts_with(want),
                "{text:?}: got {err:?}, want {want:?}"
            );
        }
    }

    #[test]
    fn warning_30_critical_60() {
        let t = Thresholds {
            warning: Some(Range::parse("30").unwrap()),
            critical: Some(Range::parse("60").unwrap()),
        };
        let cases = [
            (15.3, State::Ok),
            (30.0, State::Ok),
            (30.0001, State::Warning),
            (60.0, State::Warning),
            (69.0, State::Critical),
            (-1.0, State::Critical),
        ];
        for (value, want) in cases {
            assert_eq!(t.state(value), want, "{value}");
        }
        assert_eq!(Thresholds::default().state(1e12), State::Ok);
    }

    #[test]
    fn decimals_are_strict() {
        for good in ["0", "12", "-7", "+3", "0.5", ".5", "-.5", "657.8210567"] {
            assert!(parse_decimal(good).is_some(), "{good}");
        }
        for bad in [
            "", "+", ".", "1.", "1e3", "0x10", "1_000", "inf", "NaN", "١٢",
        ] {
            assert!(parse_decimal(bad).is_none(), "{bad}");
        }
    }
}

/// Bounded fuzzing of the range parser (`fedhub_testkit::fuzz`: time budget
/// `FEDHUB_FUZZ_SECS`, failing inputs kept in `fuzz/regressions/nagios-range/`).
#[cfg(test)]
mod fuzz {
    use super::*;

    #[test]
    fn fuzz_the_nagios_range_parser() {
        let seeds: Vec<Vec<u8>> = [
            "10", "10:", "~:10", "10:20", "@10:20", "-5.5:+7", ".5", "@~:0",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        fedhub_testkit::fuzz::fuzz("nagios-range", &seeds, |input| {
            let Ok(text) = std::str::from_utf8(input) else {
                return;
            };
            match Range::parse(text) {
                Ok(range) => {
                    assert!(
                        !range.start.is_nan() && !range.end.is_nan(),
                        "{text:?}: a bound is NaN"
                    );
                    assert!(range.start <= range.end, "{text:?}: start above end");
                    // A value between the bounds alerts only for `@`.
                    let inside = if range.start.is_finite() {
                        range.start
                    } else {
                        range.end.min(0.0)
                    };
                    if inside.is_finite() {
                        assert_eq!(range.alerts(inside), range.inside, "{text:?} at {inside}");
                    }
                }
                Err(error) => assert!(!error.to_string().is_empty(), "{text:?}"),
            }
        });
    }
}
