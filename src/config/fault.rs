//! A `[[proxy.fault]]` table (and, later, an experiment's `[[fault]]`) read
//! key by key, so every mistake is reported at the key that holds it.

use std::collections::BTreeMap;
use std::ops::Range;

use toml::Spanned;

use super::location::{ConfigError, Locator};
use crate::faults::{self, Direction, Fault, FaultSpec};

/// A fault table as written, with the position of every key and value.
pub type RawFault = Spanned<BTreeMap<Spanned<String>, Spanned<toml::Value>>>;

/// Keys every fault table takes besides its kind's attributes.
const COMMON: &[&str] = &["name", "kind", "direction", "toxicity"];

/// Reads a fault table. `extra` names further keys the caller handles (an
/// experiment's `target`, `start`, ...); they are returned untouched.
pub fn read_fault(
    raw: &RawFault,
    extra: &[&str],
    loc: &Locator<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<(FaultSpec, BTreeMap<String, Spanned<toml::Value>>)> {
    let table = raw.get_ref();
    let find = |key: &str| table.iter().find(|(k, _)| k.get_ref() == key);

    let Some((_, kind_value)) = find("kind") else {
        errors.push(loc.error(Some(raw.span()), "fault is missing `kind`"));
        return None;
    };
    let Some(kind) = kind_value.get_ref().as_str() else {
        errors.push(loc.error(Some(kind_value.span()), "`kind` must be a string"));
        return None;
    };
    let Some(attr_names) = Fault::attribute_names(kind) else {
        errors.push(loc.error(
            Some(kind_value.span()),
            format!(
                "unknown fault kind `{kind}`; known kinds: {}",
                faults::kind_list()
            ),
        ));
        return None;
    };

    let before = errors.len();
    let mut attrs = serde_json::Map::new();
    let mut rest = BTreeMap::new();
    let mut direction = Direction::Downstream;
    let mut toxicity = 1.0f32;
    let mut name = None;
    for (key, value) in table {
        let k = key.get_ref().as_str();
        let at = |span: Range<usize>| Some(span);
        match k {
            "kind" => {}
            "name" => match value.get_ref().as_str() {
                Some(s) if !s.is_empty() => name = Some(s.to_string()),
                _ => errors.push(loc.error(at(value.span()), "`name` must be a non-empty string")),
            },
            "direction" => match value.get_ref().as_str().map(str::parse::<Direction>) {
                Some(Ok(d)) => direction = d,
                Some(Err(e)) => errors.push(loc.error(at(value.span()), e)),
                None => errors.push(loc.error(
                    at(value.span()),
                    "`direction` must be \"upstream\" or \"downstream\"",
                )),
            },
            "toxicity" => {
                let v = match value.get_ref() {
                    toml::Value::Float(f) => Some(*f),
                    toml::Value::Integer(i) => Some(*i as f64),
                    _ => None,
                };
                match v.map(faults::check_toxicity) {
                    Some(Ok(t)) => toxicity = t,
                    Some(Err(e)) => errors.push(loc.error(at(value.span()), e)),
                    None => errors.push(loc.error(
                        at(value.span()),
                        "`toxicity` must be a number between 0 and 1",
                    )),
                }
            }
            _ if attr_names.contains(&k) => {
                let json = toml_to_json(value.get_ref());
                // Check each attribute on its own, so an error names its key.
                let mut single = serde_json::Map::new();
                single.insert(k.to_string(), json.clone());
                match Fault::from_parts(kind, serde_json::Value::Object(single)) {
                    Ok(_) => {
                        attrs.insert(k.to_string(), json);
                    }
                    Err(e) => errors.push(loc.error(
                        at(value.span()),
                        format!(
                            "bad value for `{k}` of {kind}: {}",
                            strip_serde_position(&e)
                        ),
                    )),
                }
            }
            _ if extra.contains(&k) => {
                rest.insert(k.to_string(), value.clone());
            }
            _ => {
                let mut expected: Vec<&str> = COMMON.to_vec();
                expected.extend_from_slice(attr_names);
                expected.extend_from_slice(extra);
                errors.push(loc.error(
                    at(key.span()),
                    format!(
                        "unknown key `{k}` for a {kind} fault; expected one of: {}",
                        expected.join(", ")
                    ),
                ));
            }
        }
    }
    if errors.len() > before {
        return None;
    }
    let fault = match Fault::from_parts(kind, serde_json::Value::Object(attrs)) {
        Ok(f) => f,
        Err(e) => {
            errors.push(loc.error(Some(raw.span()), e));
            return None;
        }
    };
    let name = name.unwrap_or_else(|| faults::default_name(kind, direction.as_str()));
    Some((
        FaultSpec {
            name,
            direction,
            toxicity,
            fault,
        },
        rest,
    ))
}

fn strip_serde_position(e: &str) -> &str {
    // serde_json appends " at line 1 column 2", meaningless for a TOML file.
    match e.find(" at line ") {
        Some(i) => &e[..i],
        None => e,
    }
}

fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    match v {
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(i) => serde_json::Value::from(*i),
        toml::Value::Float(f) => serde_json::Value::from(*f),
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(a) => serde_json::Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => serde_json::Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}
