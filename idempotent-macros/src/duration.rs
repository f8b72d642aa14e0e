//! Durations as the attribute spells them: `"24h"`, `"1h30m"`, `"500ms"`, `"1 hour 30 minutes"`.
//!
//! A duration is one or more parts, each a whole number and a unit, with optional spaces
//! between the number and its unit and between parts. The units are `ms`, `s`, `m`, `h` and
//! `d`, or their names (`millisecond`, `sec`, `second`, `min`, `minute`, `hr`, `hour`, `day`,
//! singular or plural). What is close to that and has one meaning (`"1.5h"`, `"2w"`, `"1H"`)
//! is refused with the exact value to write instead, so that every spelling the attribute
//! accepts is one the reader of the code understands the same way.

/// Why a duration was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DurationError {
    /// What is wrong; the caller adds an example of the option. Completes the sentence
    /// "invalid `ttl`: ..., such as `ttl = \"24h\"`".
    Problem(String),
    /// The text means one duration, but not in a form the attribute accepts: `problem` says
    /// why, and `write` lists equivalent values that it accepts (one or two).
    Rewrite { problem: String, write: Vec<String> },
}

const UNITS: &str = "units `ms`, `s`, `m`, `h` and `d`";

const MS: u64 = 1;
const SECOND: u64 = 1_000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;
const WEEK: u64 = 7 * DAY;

/// Every spelling of every unit, with its length in milliseconds.
const UNIT_NAMES: &[(&[&str], u64)] = &[
    (&["ms", "msec", "msecs", "millisecond", "milliseconds"], MS),
    (&["s", "sec", "secs", "second", "seconds"], SECOND),
    (&["m", "min", "mins", "minute", "minutes"], MINUTE),
    (&["h", "hr", "hrs", "hour", "hours"], HOUR),
    (&["d", "day", "days"], DAY),
];

/// Spellings that have one meaning but are not units: refused with the value to write.
const WEEK_NAMES: &[&str] = &["w", "wk", "wks", "week", "weeks"];

/// The plural name of a unit, for messages.
fn unit_name(factor: u64) -> &'static str {
    match factor {
        MS => "milliseconds",
        SECOND => "seconds",
        MINUTE => "minutes",
        HOUR => "hours",
        DAY => "days",
        _ => "weeks",
    }
}

/// Parses a duration into milliseconds.
pub(crate) fn parse_duration_ms(text: &str) -> Result<u64, DurationError> {
    let problem = |message: String| Err(DurationError::Problem(message));
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return problem(format!("it is empty; write a number and a unit ({UNITS})"));
    }
    let too_long = || {
        DurationError::Problem(format!(
            "`{text}` is too long to represent; use a shorter duration"
        ))
    };
    let mut rest = trimmed;
    let mut total: u64 = 0;
    // The first reason the text, which has one meaning, must be written otherwise.
    let mut rewrite: Option<String> = None;
    while !rest.is_empty() {
        let part_start = rest;
        let whole_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (whole, after) = rest.split_at(whole_len);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(after) => {
                let len = after.bytes().take_while(u8::is_ascii_digit).count();
                after.split_at(len)
            }
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return problem(format!(
                "expected a number at `{rest}`; write a number and a unit ({UNITS})"
            ));
        }
        let number = &part_start[..part_start.len() - after.len()];
        let after = after.trim_start();
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(unit_len);
        let part = part_start[..part_start.len() - after.len()].trim_end();
        if unit.is_empty() {
            return problem(format!("`{number}` has no unit; add one of the {UNITS}"));
        }
        let factor = match lookup(unit) {
            Some(factor) => factor,
            None => match lookup(&unit.to_ascii_lowercase()) {
                Some(factor) => {
                    rewrite
                        .get_or_insert_with(|| format!("units are lowercase, and `{part}` is not"));
                    factor
                }
                None if WEEK_NAMES.contains(&unit.to_ascii_lowercase().as_str()) => {
                    rewrite.get_or_insert_with(|| {
                        format!("weeks are not one of the units (in `{part}`)")
                    });
                    WEEK
                }
                None => {
                    return problem(format!(
                        "unknown unit `{unit}`; use one of the {UNITS}, or their names (`millisecond`, `second`, `minute`, `hour`, `day`, singular or plural)"
                    ));
                }
            },
        };
        if !fraction.is_empty() {
            rewrite.get_or_insert_with(|| {
                format!("`{part}` is not a whole number of {}", unit_name(factor))
            });
        }
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| too_long())?
        };
        let mut part_ms = whole.checked_mul(factor).ok_or_else(too_long)?;
        if !fraction.is_empty() {
            part_ms = part_ms
                .checked_add(fraction_ms(fraction, factor, part)?)
                .ok_or_else(too_long)?;
        }
        total = total.checked_add(part_ms).ok_or_else(too_long)?;
        rest = after.trim_start();
    }
    match rewrite {
        None => Ok(total),
        Some(problem) => {
            let mut write = vec![compound(total)];
            let single = single_unit(total);
            if !write.contains(&single) {
                write.push(single);
            }
            Err(DurationError::Rewrite { problem, write })
        }
    }
}

fn lookup(unit: &str) -> Option<u64> {
    UNIT_NAMES
        .iter()
        .find(|(names, _)| names.contains(&unit))
        .map(|&(_, factor)| factor)
}

/// The milliseconds in `0.<fraction>` of a unit of `factor` ms, if that is a whole number.
fn fraction_ms(fraction: &str, factor: u64, part: &str) -> Result<u64, DurationError> {
    let digits = fraction.trim_end_matches('0');
    let finer = || {
        DurationError::Problem(format!(
            "`{part}` is finer than a millisecond, the smallest unit; write a whole number of each unit"
        ))
    };
    if digits.len() > 20 {
        return Err(finer());
    }
    let numerator: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| finer())?
    };
    let scale = 10u128.pow(u32::try_from(digits.len()).map_err(|_| finer())?);
    let scaled = numerator * u128::from(factor);
    if scaled % scale != 0 {
        return Err(finer());
    }
    u64::try_from(scaled / scale).map_err(|_| finer())
}

/// `5_400_000` as `"1h30m"`: each unit from the largest, those that are not zero.
fn compound(ms: u64) -> String {
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut left = ms;
    let mut out = String::new();
    for (factor, unit) in [
        (DAY, "d"),
        (HOUR, "h"),
        (MINUTE, "m"),
        (SECOND, "s"),
        (MS, "ms"),
    ] {
        let count = left / factor;
        if count > 0 {
            out.push_str(&format!("{count}{unit}"));
            left -= count * factor;
        }
    }
    out
}

/// `5_400_000` as `"90m"`: a count of the largest unit that divides it.
fn single_unit(ms: u64) -> String {
    if ms == 0 {
        return "0s".to_owned();
    }
    [
        (DAY, "d"),
        (HOUR, "h"),
        (MINUTE, "m"),
        (SECOND, "s"),
        (MS, "ms"),
    ]
    .into_iter()
    .find(|&(factor, _)| ms % factor == 0)
    .map_or_else(
        || format!("{ms}ms"),
        |(factor, unit)| format!("{}{unit}", ms / factor),
    )
}

#[cfg(test)]
mod tests {
    use super::{DurationError, parse_duration_ms};

    fn problem(text: &str) -> String {
        match parse_duration_ms(text) {
            Err(DurationError::Problem(problem)) => problem,
            other => panic!("`{text}`: expected a problem, got {other:?}"),
        }
    }

    fn rewrite(text: &str) -> (String, Vec<String>) {
        match parse_duration_ms(text) {
            Err(DurationError::Rewrite { problem, write }) => (problem, write),
            other => panic!("`{text}`: expected a rewrite, got {other:?}"),
        }
    }

    #[test]
    fn short_forms() {
        assert_eq!(parse_duration_ms("24h"), Ok(86_400_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("2d"), Ok(172_800_000));
        assert_eq!(parse_duration_ms("0s"), Ok(0));
        assert_eq!(parse_duration_ms("1d2h3m4s5ms"), Ok(93_784_005));
    }

    #[test]
    fn long_forms_and_spaces() {
        assert_eq!(parse_duration_ms("1 hour"), Ok(3_600_000));
        assert_eq!(parse_duration_ms("60 minutes"), Ok(3_600_000));
        assert_eq!(parse_duration_ms("1 hour 30 minutes"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("1h 30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("  30 s  "), Ok(30_000));
        assert_eq!(parse_duration_ms("2 days"), Ok(172_800_000));
        assert_eq!(parse_duration_ms("1 day"), Ok(86_400_000));
        assert_eq!(parse_duration_ms("90 secs"), Ok(90_000));
        assert_eq!(parse_duration_ms("1 sec"), Ok(1_000));
        assert_eq!(parse_duration_ms("1 second"), Ok(1_000));
        assert_eq!(parse_duration_ms("5 mins"), Ok(300_000));
        assert_eq!(parse_duration_ms("1 min"), Ok(60_000));
        assert_eq!(parse_duration_ms("2 hrs"), Ok(7_200_000));
        assert_eq!(parse_duration_ms("250 milliseconds"), Ok(250));
        assert_eq!(parse_duration_ms("1 millisecond"), Ok(1));
        assert_eq!(parse_duration_ms("100 msec"), Ok(100));
    }

    #[test]
    fn a_missing_unit_is_named() {
        assert_eq!(
            problem("10"),
            "`10` has no unit; add one of the units `ms`, `s`, `m`, `h` and `d`"
        );
        assert_eq!(
            problem("1h 30"),
            "`30` has no unit; add one of the units `ms`, `s`, `m`, `h` and `d`"
        );
    }

    #[test]
    fn fractions_say_what_to_write() {
        assert_eq!(
            rewrite("1.5h"),
            (
                "`1.5h` is not a whole number of hours".to_owned(),
                vec!["1h30m".to_owned(), "90m".to_owned()]
            )
        );
        assert_eq!(
            rewrite("0.5s"),
            (
                "`0.5s` is not a whole number of seconds".to_owned(),
                vec!["500ms".to_owned()]
            )
        );
        assert_eq!(
            rewrite("2.25 days").1,
            vec!["2d6h".to_owned(), "54h".to_owned()]
        );
        assert_eq!(rewrite(".5m").1, vec!["30s".to_owned()]);
        assert_eq!(rewrite("1.0h").1, vec!["1h".to_owned()]);
        assert_eq!(
            problem("1.0005s"),
            "`1.0005s` is finer than a millisecond, the smallest unit; write a whole number of each unit"
        );
    }

    #[test]
    fn weeks_and_capitals_say_what_to_write() {
        assert_eq!(
            rewrite("2w"),
            (
                "weeks are not one of the units (in `2w`)".to_owned(),
                vec!["14d".to_owned()]
            )
        );
        assert_eq!(rewrite("1 week").1, vec!["7d".to_owned()]);
        assert_eq!(
            rewrite("1H"),
            (
                "units are lowercase, and `1H` is not".to_owned(),
                vec!["1h".to_owned()]
            )
        );
        assert_eq!(
            rewrite("1 Hour 30 Minutes").1,
            vec!["1h30m".to_owned(), "90m".to_owned()]
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(
            problem(""),
            "it is empty; write a number and a unit (units `ms`, `s`, `m`, `h` and `d`)"
        );
        assert_eq!(problem("   "), problem(""));
        assert!(problem("10y").starts_with("unknown unit `y`; use one of the units"));
        assert!(problem("10 fortnights").starts_with("unknown unit `fortnights`"));
        assert!(problem("h").starts_with("expected a number at `h`"));
        assert!(problem("-5s").starts_with("expected a number at `-5s`"));
        assert!(problem("1h, 30m").starts_with("expected a number at `, 30m`"));
        assert!(problem("1 hour and 30 minutes").starts_with("expected a number at `and"));
        assert!(problem("99999999999999999999d").contains("too long to represent"));
        assert!(problem("18446744073709551615d").contains("too long to represent"));
        assert!(problem("213503982334601d 1d").contains("too long to represent"));
    }
}
