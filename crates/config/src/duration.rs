//! [`parse_duration`]: the duration syntax of the config file.

use std::time::Duration;

/// The units, largest first, with their length in milliseconds.
const UNITS: [(&str, u64); 4] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];

/// Parses a duration written as one or more `INTEGER UNIT` parts with no spaces, the units
/// being `h`, `m`, `s` and `ms`, each at most once and largest first: `"500ms"`, `"5s"`,
/// `"10m"`, `"1h"`, `"1h30m"`, `"2m30s"`, `"1s500ms"`. `"0s"` is zero. A bare number, a
/// fraction (`"1.5s"`), a sign, spaces or any other unit is refused.
///
/// # Errors
///
/// A message naming the text and saying what is accepted, e.g.
/// ``"`5` has no unit; write a duration like `500ms`, `5s`, `10m`, `1h` or `1h30m`"``.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let syntax = |why: &str| {
        format!("`{s}` {why}; write a duration like `500ms`, `5s`, `10m`, `1h` or `1h30m`")
    };
    if s.is_empty() {
        return Err(
            "the duration is empty; write one like `500ms`, `5s`, `10m`, `1h` or `1h30m`"
                .to_string(),
        );
    }
    let mut rest = s;
    let mut total: u64 = 0;
    // Index into UNITS of the smallest unit that may come next.
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(syntax("is not a duration"));
        }
        let (number, after) = rest.split_at(digits);
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(if after.is_empty() && total == 0 && next_unit == 0 {
                syntax("has no unit")
            } else {
                syntax("is not a duration")
            });
        }
        let Some(u) = UNITS.iter().position(|&(name, _)| name == unit) else {
            return Err(syntax(&format!(
                "has unknown unit `{unit}` (the units are `h`, `m`, `s` and `ms`)"
            )));
        };
        if u < next_unit {
            return Err(syntax(
                "repeats a unit or has a larger unit after a smaller one",
            ));
        }
        next_unit = u + 1;
        let too_long = || syntax("is too long");
        let n: u64 = number.parse().map_err(|_| too_long())?;
        let ms = n.checked_mul(UNITS[u].1).ok_or_else(too_long)?;
        total = total.checked_add(ms).ok_or_else(too_long)?;
        rest = after;
    }
    Ok(Duration::from_millis(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_integers_with_units() {
        let ms = |n| Ok(Duration::from_millis(n));
        assert_eq!(parse_duration("500ms"), ms(500));
        assert_eq!(parse_duration("5s"), ms(5_000));
        assert_eq!(parse_duration("10m"), ms(600_000));
        assert_eq!(parse_duration("1h"), ms(3_600_000));
        assert_eq!(parse_duration("1h30m"), ms(5_400_000));
        assert_eq!(parse_duration("2m30s"), ms(150_000));
        assert_eq!(parse_duration("1s500ms"), ms(1_500));
        assert_eq!(parse_duration("1h2m3s4ms"), ms(3_723_004));
        assert_eq!(parse_duration("0s"), ms(0));
        assert_eq!(parse_duration("90s"), ms(90_000));
        assert_eq!(parse_duration("007s"), ms(7_000));
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "", "5", "s", "1.5s", "-5s", "+5s", " 5s", "5s ", "5 s", "5S", "5sec", "5d", "5us",
            "1m1h", "1s1s", "1m1m", "5s5", "ms", "1h30", "off",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refuses_overflow() {
        let e = parse_duration("99999999999999999999s").unwrap_err();
        assert!(e.contains("too long"), "{e}");
        let e = parse_duration(&format!("{}h", u64::MAX / 1000)).unwrap_err();
        assert!(e.contains("too long"), "{e}");
    }

    #[test]
    fn messages_say_what_is_accepted() {
        assert_eq!(
            parse_duration("5").unwrap_err(),
            "`5` has no unit; write a duration like `500ms`, `5s`, `10m`, `1h` or `1h30m`"
        );
        assert!(parse_duration("5d")
            .unwrap_err()
            .contains("unknown unit `d`"));
        assert!(parse_duration("1m1h")
            .unwrap_err()
            .contains("larger unit after"));
    }
}
