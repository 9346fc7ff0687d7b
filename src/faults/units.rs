//! Attribute value types shared by the faults.
//!
//! Toxiproxy's API sends times as integers in a fixed unit (milliseconds for
//! most toxics, microseconds for `slicer.delay`), while a hand-written TOML
//! file reads better as `"250ms"`. These types accept both forms and always
//! serialise back to the integer form, so the API stays byte-compatible.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration whose bare-integer form is in milliseconds (Toxiproxy's unit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Millis(pub Duration);

/// A duration whose bare-integer form is in microseconds (`slicer.delay`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Micros(pub Duration);

impl Millis {
    /// Builds from a whole number of milliseconds.
    pub fn from_ms(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }
}

impl Micros {
    /// Builds from a whole number of microseconds.
    pub fn from_us(us: u64) -> Self {
        Self(Duration::from_micros(us))
    }
}

/// Parses a human duration such as `"250ms"`, `"1.5s"` or `"2m"`.
///
/// A bare number without a unit is refused: `"100"` is ambiguous in a file
/// that mixes milliseconds and microseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    // humantime has no decimal support; handle "1.5s" style values here.
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if unit.is_empty() {
        return Err(format!(
            "duration `{text}` has no unit; write it as e.g. \"{text}ms\" or \"{text}s\""
        ));
    }
    if num.contains('.') {
        let value: f64 = num.parse().map_err(|_| format!("bad duration `{text}`"))?;
        let scale = match unit.trim() {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" | "hr" | "hrs" => 3600.0,
            _ => return Err(format!("bad duration `{text}`: unknown unit `{unit}`")),
        };
        return Ok(Duration::from_secs_f64(value * scale));
    }
    humantime::parse_duration(t).map_err(|e| format!("bad duration `{text}`: {e}"))
}

struct DurationVisitor {
    unit: Duration,
    unit_name: &'static str,
}

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a duration such as \"250ms\", or a whole number of {}",
            self.unit_name
        )
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        let n = u32::try_from(v).map_err(|_| E::custom(format!("duration {v} is too large")))?;
        Ok(self.unit * n)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        if v < 0 {
            return Err(E::custom(format!("duration must not be negative, got {v}")));
        }
        self.visit_u64(v as u64)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Err(E::invalid_type(de::Unexpected::Float(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v).map_err(E::custom)
    }
}

fn deserialize_in<'de, D: Deserializer<'de>>(
    d: D,
    unit: Duration,
    unit_name: &'static str,
) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor { unit, unit_name })
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_in(d, Duration::from_millis(1), "milliseconds").map(Millis)
    }
}

impl<'de> Deserialize<'de> for Micros {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_in(d, Duration::from_micros(1), "microseconds").map(Micros)
    }
}

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0.as_millis() as u64)
    }
}

impl Serialize for Micros {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0.as_micros() as u64)
    }
}

/// A duration written as text in a config (`"30s"`), used outside faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_in(d, Duration::from_millis(1), "milliseconds").map(HumanDuration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_human_and_integer_forms() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("100").is_err());
        assert!(parse_duration("fast").is_err());
        let m: Millis = serde_json::from_str("100").unwrap();
        assert_eq!(m.0, Duration::from_millis(100));
        let u: Micros = serde_json::from_str("100").unwrap();
        assert_eq!(u.0, Duration::from_micros(100));
        assert!(serde_json::from_str::<Millis>("-1").is_err());
        assert!(serde_json::from_str::<Millis>("1.5").is_err());
        assert_eq!(serde_json::to_string(&Millis::from_ms(7)).unwrap(), "7");
    }
}
