//! Human durations (`30s`, `2m`, `1h30m`, `250ms`, `500us`) in flags, scenario files and
//! threshold expressions, and their display in tables.

use std::time::Duration;

/// Parses `1h30m`, `2m`, `30s`, `1.5s`, `250ms`, `500us`, `0`: one or more number-unit pairs.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".to_owned());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{text:?}: missing unit (use h, m, s, ms or us)"))?;
        let (num, tail) = rest.split_at(num_len);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("{text:?}: {num:?} is not a number"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let seconds = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            _ => {
                return Err(format!(
                    "{text:?}: unknown unit {unit:?} (use h, m, s, ms or us)"
                ));
            }
        };
        total += value * seconds;
        rest = next;
    }
    Duration::try_from_secs_f64(total).map_err(|e| format!("{text:?}: {e}"))
}

/// A latency for tables: `812us`, `12.3ms`, `1.52s`.
pub fn format_latency(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0}us")
    } else if us < 1e6 {
        format!("{:.2}ms", us / 1e3)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

/// A duration for headings: `10s`, `2m30s`, `1h0m5s`.
pub fn format_span(d: Duration) -> String {
    let s = d.as_secs();
    let ms = d.subsec_millis();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, sec) if ms == 0 => format!("{sec}s"),
        (0, 0, sec) => format!("{sec}.{ms:03}s"),
        (0, m, sec) => format!("{m}m{sec}s"),
        (h, m, sec) => format!("{h}h{m}m{sec}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_compound_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_missing_and_unknown_units() {
        assert!(parse_duration("30").unwrap_err().contains("missing unit"));
        assert!(
            parse_duration("3d")
                .unwrap_err()
                .contains("unknown unit \"d\"")
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn formats_latencies_in_the_nearest_unit() {
        assert_eq!(format_latency(Duration::from_micros(812)), "812us");
        assert_eq!(format_latency(Duration::from_micros(12_345)), "12.35ms");
        assert_eq!(format_latency(Duration::from_millis(1520)), "1.52s");
        assert_eq!(format_span(Duration::from_secs(150)), "2m30s");
    }
}
