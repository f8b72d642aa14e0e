//! Durations as the attribute spells them: `"24h"`, `"1h30m"`, `"500ms"`.

/// Parses a duration into milliseconds. An error completes the sentence
/// "invalid `ttl`: ..., such as `ttl = \"24h\"`".
pub(crate) fn parse_duration_ms(text: &str) -> Result<u64, String> {
    const UNITS: &str = "units `ms`, `s`, `m`, `h` and `d`";
    if text.is_empty() {
        return Err(format!("it is empty; write a number and a unit ({UNITS})"));
    }
    let bytes = text.as_bytes();
    let mut total: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let digits_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == digits_start {
            return Err(format!(
                "expected a number at `{}`; write a number and a unit ({UNITS})",
                &text[digits_start..]
            ));
        }
        let digits = &text[digits_start..i];
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &text[unit_start..i];
        let factor: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => {
                return Err(format!("`{digits}` has no unit; add one of the {UNITS}"));
            }
            other => {
                return Err(format!("unknown unit `{other}`; use one of the {UNITS}"));
            }
        };
        let too_long = || format!("`{text}` is too long to represent; use a shorter duration");
        let number: u64 = digits.parse().map_err(|_| too_long())?;
        let part = number.checked_mul(factor).ok_or_else(too_long)?;
        total = total.checked_add(part).ok_or_else(too_long)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("24h"), Ok(86_400_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("2d"), Ok(172_800_000));
        assert_eq!(parse_duration_ms("0s"), Ok(0));
        assert!(parse_duration_ms("").is_err());
        assert!(parse_duration_ms("10").is_err());
        assert!(parse_duration_ms("10w").is_err());
        assert!(parse_duration_ms("h").is_err());
        assert!(parse_duration_ms("99999999999999999999d").is_err());
        assert!(parse_duration_ms("18446744073709551615d").is_err());
    }
}
