//! "2 minutes ago": relative times worded the way Fedora's `producer_last_ran`
//! script shows them (the English wording of Python arrow 1.x's `humanize()`),
//! so the replacement prints the same words for the same times.
//!
//! Rules: the difference is rounded to whole seconds (half to even); under 10 s
//! is "just now"; then seconds, "a minute", minutes, "an hour", hours, "a day",
//! days; from a week on, calendar months count when at least one has passed
//! (more than 14 spare days count as a month, at most 12), otherwise weeks; then
//! "a year" until two years, then years. Past times end in "ago", future ones
//! start with "in".
//!
//! Written here because no crate prints arrow's words for the same times:
//! chrono-humanize 0.2.3 uses moment.js's thresholds ("now" up to 10 s, "a
//! minute" from 45 s and "2 minutes" from 90 s, "an hour" from 45 minutes, "a
//! day" from 22 hours, fixed 30-day months), and timeago 0.6.1 says "1 minute
//! ago", "now" and can combine units ("1 hour 1 minute ago").

const MINUTE: i64 = 60;
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;
const WEEK: i64 = 7 * DAY;
const YEAR: i64 = 365 * DAY;
/// Twice arrow's month (30.5 days), so the weeks/months boundary stays integral.
const TWO_MONTHS: i64 = 61 * DAY;
/// Timestamps are clamped to this many microseconds either side of 1970
/// (about 3000 years), which keeps the calendar arithmetic far from overflow.
const LIMIT_MICROS: f64 = 1e17;
const MICROS: i64 = 1_000_000;

/// Describes `then` relative to `now` (both Unix seconds).
pub fn humanize(then: f64, now: f64) -> String {
    let then_us = to_micros(then);
    let now_us = to_micros(now);
    let delta_us = then_us.saturating_sub(now_us);
    let delta = round_half_even(delta_us, MICROS);
    let past = delta < 0;
    let diff = delta.saturating_abs();
    let phrase = |text: String| {
        if past {
            format!("{text} ago")
        } else {
            format!("in {text}")
        }
    };
    if diff < 10 {
        return "just now".into();
    }
    if diff < MINUTE {
        return phrase(format!("{diff} seconds"));
    }
    if diff < 2 * MINUTE {
        return phrase("a minute".into());
    }
    if diff < HOUR {
        return phrase(format!("{} minutes", (diff / MINUTE).max(2)));
    }
    if diff < 2 * HOUR {
        return phrase("an hour".into());
    }
    if diff < DAY {
        return phrase(format!("{} hours", (diff / HOUR).max(2)));
    }
    if diff < 2 * DAY {
        return phrase("a day".into());
    }
    if diff < WEEK {
        return phrase(format!("{} days", (diff / DAY).max(2)));
    }
    let (later, earlier) = if then_us < now_us {
        (now_us, then_us)
    } else {
        (then_us, now_us)
    };
    if diff < YEAR {
        let months = calendar_months(later, earlier);
        if months == 1 {
            return phrase("a month".into());
        }
        if months > 1 {
            return phrase(format!("{months} months"));
        }
    }
    if diff < 2 * WEEK {
        return phrase("a week".into());
    }
    if 2 * diff < TWO_MONTHS {
        return phrase(format!("{} weeks", (diff / WEEK).max(2)));
    }
    if diff < 2 * YEAR {
        return phrase("a year".into());
    }
    phrase(format!("{} years", (diff / YEAR).max(2)))
}

fn to_micros(seconds: f64) -> i64 {
    let us = (seconds * 1e6).round();
    if us.is_nan() {
        0
    } else {
        us.clamp(-LIMIT_MICROS, LIMIT_MICROS) as i64
    }
}

/// `value / unit`, rounded to the nearest integer, ties to even.
fn round_half_even(value: i64, unit: i64) -> i64 {
    let quotient = value.div_euclid(unit);
    let remainder = value.rem_euclid(unit);
    match (2 * remainder).cmp(&unit) {
        std::cmp::Ordering::Less => quotient,
        std::cmp::Ordering::Greater => quotient + 1,
        std::cmp::Ordering::Equal => quotient + (quotient & 1),
    }
}

/// Whole calendar months from `earlier` to `later` (UTC, microseconds), plus
/// one when more than 14 days are left over, at most 12.
fn calendar_months(later: i64, earlier: i64) -> i64 {
    let (ly, lm, _) = civil(later);
    let (ey, em, _) = civil(earlier);
    let mut months = (ly - ey) * 12 + (lm - em);
    // Step back until adding the months to `earlier` does not pass `later`.
    let mut shifted = add_months(earlier, months);
    while later < shifted && months > 0 {
        months -= 1;
        shifted = add_months(earlier, months);
    }
    let spare_days = (later - shifted).div_euclid(DAY * MICROS);
    if spare_days > 14 {
        months += 1;
    }
    months.min(12)
}

/// The date (year, month 1-12, day 1-31) of a UTC timestamp in microseconds.
fn civil(us: i64) -> (i64, i64, i64) {
    civil_from_days(us.div_euclid(DAY * MICROS))
}

/// `us` moved by `months` calendar months, the day clamped to the month's end,
/// the time of day kept.
fn add_months(us: i64, months: i64) -> i64 {
    let day_us = DAY * MICROS;
    let time_of_day = us.rem_euclid(day_us);
    let (y, m, d) = civil_from_days(us.div_euclid(day_us));
    let index = y * 12 + (m - 1) + months;
    let (ny, nm) = (index.div_euclid(12), index.rem_euclid(12) + 1);
    let nd = d.min(days_in_month(ny, nm));
    days_from_civil(ny, nm, nd) * day_us + time_of_day
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    // Count from 0000-03-01 so the leap day ends the year.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (m + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + d - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let d = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let m = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let y = year_of_era + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Produced by Python arrow 1.4.0: `arrow.get(NOW - d).humanize(arrow.get(NOW))`.
    const NOW: f64 = 1_795_392_098.835_433;
    const ARROW: &[(f64, &str)] = &[
        (0.0, "just now"),
        (4.4, "just now"),
        (9.4, "just now"),
        (9.5, "10 seconds ago"),
        (9.6, "10 seconds ago"),
        (10.5, "10 seconds ago"),
        (11.5, "12 seconds ago"),
        (44.0, "44 seconds ago"),
        (59.4, "59 seconds ago"),
        (59.5, "a minute ago"),
        (60.0, "a minute ago"),
        (119.0, "a minute ago"),
        (120.0, "2 minutes ago"),
        (179.9, "3 minutes ago"),
        (3599.0, "59 minutes ago"),
        (3600.0, "an hour ago"),
        (7199.0, "an hour ago"),
        (7200.0, "2 hours ago"),
        (86399.0, "23 hours ago"),
        (86400.0, "a day ago"),
        (172_799.0, "a day ago"),
        (172_800.0, "2 days ago"),
        (604_799.0, "6 days ago"),
        (604_800.0, "a week ago"),
        (1_209_599.0, "a week ago"),
        (1_209_600.0, "2 weeks ago"),
        (1_296_000.0, "a month ago"),
        (1_296_001.0, "a month ago"),
        (1_900_000.0, "a month ago"),
        (2_419_199.0, "a month ago"),
        (2_635_200.0, "a month ago"),
        (3_000_000.0, "a month ago"),
        (5_000_000.0, "2 months ago"),
        (10_000_000.0, "4 months ago"),
        (20_000_000.0, "8 months ago"),
        (29_807_999.0, "11 months ago"),
        (31_535_999.0, "12 months ago"),
        (31_536_000.0, "a year ago"),
        (47_260_800.0, "a year ago"),
        (63_071_999.0, "a year ago"),
        (63_072_000.0, "2 years ago"),
        (94_608_000.0, "3 years ago"),
        (-5.0, "just now"),
        (-10.0, "in 10 seconds"),
        (-30.0, "in 30 seconds"),
        (-90.0, "in a minute"),
        (-3600.0, "in an hour"),
        (-7200.0, "in 2 hours"),
        (-90000.0, "in a day"),
        (-864_000.0, "in a week"),
    ];

    #[test]
    fn matches_arrow() {
        for &(ago, want) in ARROW {
            assert_eq!(humanize(NOW - ago, NOW), want, "{ago} s ago");
        }
    }

    #[test]
    fn calendar_round_trip() {
        for days in [-800_000, -1, 0, 1, 59, 60, 365, 10_957, 20_780, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn extreme_inputs_do_not_panic() {
        for (then, now) in [
            (f64::NAN, NOW),
            (f64::INFINITY, NOW),
            (f64::NEG_INFINITY, NOW),
            (-1e300, 1e300),
            (0.0, NOW),
        ] {
            let _ = humanize(then, now);
        }
        assert_eq!(humanize(0.0, NOW), "56 years ago");
    }
}
