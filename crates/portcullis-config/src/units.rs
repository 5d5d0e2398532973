//! Durations (`"30s"`, `"5m"`, `"250ms"`, `"1h30m"`) and byte sizes (`"256MiB"`, `"64KiB"`, `1024`)
//! as they are written in config files.
//!
//! Hand-written rather than humantime-serde (dormant since 2022): forty lines give error messages
//! that name the accepted units, which is what a user with a typo needs.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A duration written as a string of number+unit parts: `ms`, `s`, `m`, `h`, `d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// Parses `"1h30m"`, `"250ms"`, `"0s"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let err = || {
            format!(
                "invalid duration {text:?}: expected a number and a unit (ms, s, m, h, d), like \"30s\" or \"1m30s\""
            )
        };
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(err());
        }
        let mut total = std::time::Duration::ZERO;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
            if digits == 0 {
                return Err(err());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| err())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let part = match &rest[..unit_len] {
                "ms" => std::time::Duration::from_millis(n),
                "s" => std::time::Duration::from_secs(n),
                "m" => std::time::Duration::from_secs(n.saturating_mul(60)),
                "h" => std::time::Duration::from_secs(n.saturating_mul(3600)),
                "d" => std::time::Duration::from_secs(n.saturating_mul(86_400)),
                _ => return Err(err()),
            };
            total = total.saturating_add(part);
            rest = &rest[unit_len..];
        }
        Ok(Self(total))
    }

    /// Builds a duration from seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    /// Builds a duration from milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self(std::time::Duration::from_millis(ms))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Duration::parse(&text).map_err(de::Error::custom)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A size in bytes, written as an integer or a string with a unit: `B`, `KB`, `MB`, `GB`
/// (powers of 1000) or `KiB`, `MiB`, `GiB` (powers of 1024).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `"256MiB"`, `"64 KiB"`, `"1000"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let err = || {
            format!(
                "invalid size {text:?}: expected a number and a unit (B, KB, MB, GB, KiB, MiB, GiB), like \"256MiB\""
            )
        };
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        if split == 0 {
            return Err(err());
        }
        let n: u64 = t[..split].parse().map_err(|_| err())?;
        let mult: u64 = match t[split..].trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1000,
            "MB" => 1000 * 1000,
            "GB" => 1000 * 1000 * 1000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            _ => return Err(err()),
        };
        n.checked_mul(mult).map(Self).ok_or_else(err)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size like \"256MiB\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0)
    }
}

impl Serialize for Duration {
    /// As written in config: whole seconds as `"30s"`, anything finer as `"1500ms"`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            serializer.serialize_str(&format!("{}s", ms / 1000))
        } else {
            serializer.serialize_str(&format!("{ms}ms"))
        }
    }
}

impl Serialize for ByteSize {
    /// As a number of bytes.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as D;

    #[test]
    fn durations_parse_single_and_compound_units() {
        assert_eq!(Duration::parse("30s").unwrap().0, D::from_secs(30));
        assert_eq!(Duration::parse("250ms").unwrap().0, D::from_millis(250));
        assert_eq!(Duration::parse("1h30m").unwrap().0, D::from_secs(5400));
        assert_eq!(Duration::parse("2d").unwrap().0, D::from_secs(172_800));
        assert_eq!(Duration::parse("0s").unwrap().0, D::ZERO);
    }

    #[test]
    fn bad_durations_name_the_units() {
        for bad in ["", "30", "s", "10 sec", "1.5s", "-1s", "5x"] {
            let e = Duration::parse(bad).unwrap_err();
            assert!(e.contains("ms, s, m, h, d"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn sizes_parse_binary_and_decimal_units() {
        assert_eq!(ByteSize::parse("256MiB").unwrap().0, 256 << 20);
        assert_eq!(ByteSize::parse("64 KiB").unwrap().0, 64 << 10);
        assert_eq!(ByteSize::parse("1KB").unwrap().0, 1000);
        assert_eq!(ByteSize::parse("1000").unwrap().0, 1000);
        assert!(ByteSize::parse("12XB").is_err());
        assert!(ByteSize::parse("99999999999999GiB").is_err());
    }
}
