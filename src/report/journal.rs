//! `journal.json`: the run result as it is, for tools.
//!
//! It is [`RunResult`] serialised with serde, so it reads back into the
//! same value: a later tool (a diff between two runs, a dashboard import)
//! never has to parse the human-readable reports. Numbers keep their raw
//! units (seconds, 0..1 ratios).
//!
//! Exact round-trips of every `f64` need serde_json's `float_roundtrip`
//! feature: without it, numbers of 16-17 significant digits (a throughput
//! of 2980/30) read back one ULP off. The writer is exact either way.

use crate::experiment::result::RunResult;

/// The journal text: pretty-printed JSON and a final newline.
pub fn text(r: &RunResult) -> Result<String, serde_json::Error> {
    let mut s = serde_json::to_string_pretty(r)?;
    s.push('\n');
    Ok(s)
}

/// Reads a journal back.
pub fn parse(s: &str) -> Result<RunResult, serde_json::Error> {
    serde_json::from_str(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;

    #[test]
    fn journals_round_trip() {
        for r in [
            fixtures::passed(),
            fixtures::violated(),
            fixtures::aborted(),
            fixtures::no_data(),
            fixtures::special(),
        ] {
            let s = text(&r).expect("serialise");
            assert_eq!(parse(&s).expect("parse back"), r);
        }
    }

    /// Any f64 must survive, not only short decimals. serde_json reads
    /// numbers of 16-17 significant digits back one ULP off unless its
    /// `float_roundtrip` feature is on, which is a Cargo.toml change.
    #[test]
    fn any_float_round_trips() {
        let mut r = fixtures::passed();
        r.duration_seconds = 2980.0 / 30.0;
        r.sources[0].p99 = Some(0.302 * 1.5);
        r.sources[0].throughput = 0.1 + 0.2;
        let s = text(&r).expect("serialise");
        assert_eq!(parse(&s).expect("parse back"), r);
    }

    #[test]
    fn journal_keeps_raw_units_and_field_order() {
        let s = text(&fixtures::violated()).expect("serialise");
        assert!(s.starts_with("{\n  \"experiment\": \"checkout survives a slow primary\""));
        assert!(s.contains("\"value\": 0.34"), "seconds, not ms");
        assert!(s.contains("\"verdict\": \"violated\""));
        assert!(s.contains("\"phase\": \"injection\""));
    }
}
