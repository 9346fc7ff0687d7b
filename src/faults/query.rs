//! PostgreSQL faults: they act on queries and sessions of a
//! `protocol = "postgres"` proxy, not on bytes.
//!
//! Every kind carries a [`QueryMatch`] (which queries or sessions it picks)
//! flattened into its attributes, so a toxic reads
//! `{"type": "query_error", "attributes": {"sqlstate": "40001",
//! "statement": "insert", "count": 3}}`. The session code in
//! `crate::postgres::session` applies them; this file only holds their
//! attributes and the matching rules.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::units::Millis;
use crate::postgres::sqlstate;
use crate::postgres::statement::StatementKind;

/// A regular expression on the query text (Rust `regex` syntax; add `(?i)`
/// to ignore case). Compared and printed by its source text.
#[derive(Clone, Debug)]
pub struct SqlPattern(pub Arc<Regex>);

impl PartialEq for SqlPattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Serialize for SqlPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for SqlPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Regex::new(&text)
            .map(|r| SqlPattern(Arc::new(r)))
            .map_err(|e| serde::de::Error::custom(format!("bad regular expression in `sql`: {e}")))
    }
}

/// A statement kind, written in any case (`"SELECT"`, `"select"`).
fn statement_kind<'de, D: Deserializer<'de>>(d: D) -> Result<Option<StatementKind>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    text.map(|t| StatementKind::from_str(&t).map_err(serde::de::Error::custom))
        .transpose()
}

/// Which queries (or, for connection faults, which sessions) a PostgreSQL
/// fault acts on. Every field given must match; none given matches all.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueryMatch {
    /// Regular expression searched in the query text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sql: Option<SqlPattern>,
    /// The statement kind of the query (its first statement).
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "statement_kind"
    )]
    pub statement: Option<StatementKind>,
    /// The session's user (from its StartupMessage), exactly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The session's database, exactly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The session's `application_name`, exactly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_name: Option<String>,
    /// Let the first `after` matches through (counted across all sessions
    /// of the proxy, while the fault exists).
    #[serde(skip_serializing_if = "is_zero")]
    pub after: u64,
    /// Stop after this many injections (0: no limit).
    #[serde(skip_serializing_if = "is_zero")]
    pub count: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What a session knows about itself, from its StartupMessage.
#[derive(Clone, Debug, Default)]
pub struct SessionInfo {
    /// `user`.
    pub user: String,
    /// `database` (defaults to the user, as the server does).
    pub database: String,
    /// `application_name`, empty when not sent.
    pub application_name: String,
}

impl QueryMatch {
    /// Whether the session-level fields match.
    pub fn session_matches(&self, s: &SessionInfo) -> bool {
        self.user.as_ref().is_none_or(|u| *u == s.user)
            && self.database.as_ref().is_none_or(|d| *d == s.database)
            && self
                .application_name
                .as_ref()
                .is_none_or(|a| *a == s.application_name)
    }

    /// Whether a query matches (session fields included).
    pub fn query_matches(&self, s: &SessionInfo, sql: &str, kind: StatementKind) -> bool {
        self.session_matches(s)
            && self.statement.is_none_or(|k| k == kind)
            && self.sql.as_ref().is_none_or(|p| p.0.is_match(sql))
    }

    /// Whether the query-only fields (`sql`, `statement`) are set: a
    /// connection fault refuses them.
    pub fn has_query_fields(&self) -> bool {
        self.sql.is_some() || self.statement.is_some()
    }
}

/// Counts shared by every session of a proxy for one fault: how many
/// matches it has seen and how many times it acted, for `after` and
/// `count`. Kept across updates of the fault, reset when it is re-created.
#[derive(Debug, Default)]
pub struct FaultHits {
    matched: AtomicU64,
    injected: AtomicU64,
}

impl FaultHits {
    /// Called on a match that passed its toxicity draw: decides whether the
    /// fault acts on it, given `after` and `count`, and counts it.
    pub fn take(&self, m: &QueryMatch) -> bool {
        self.take_within(m.after, m.count)
    }

    /// [`FaultHits::take`] with `after` and `count` given directly (the
    /// HTTP faults carry their own matching type).
    pub fn take_within(&self, after: u64, count: u64) -> bool {
        let n = self.matched.fetch_add(1, Ordering::Relaxed);
        if n < after {
            return false;
        }
        if count == 0 {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        self.injected
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |i| {
                (i < count).then_some(i + 1)
            })
            .is_ok()
    }

    /// Times the fault acted.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }
}

/// An SQLSTATE code: five characters of `0-9A-Z`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct SqlStateCode(pub String);

impl SqlStateCode {
    fn new(code: &str) -> Self {
        Self(code.to_string())
    }
}

impl<'de> Deserialize<'de> for SqlStateCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// toxiproxy-cli style clients send `-a sqlstate=40001` as a number.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(u64),
        }
        let code = match Raw::deserialize(d)? {
            Raw::Text(t) => t.to_ascii_uppercase(),
            Raw::Number(n) => format!("{n:05}"),
        };
        if sqlstate::is_valid(&code) {
            Ok(SqlStateCode(code))
        } else {
            Err(serde::de::Error::custom(format!(
                "`{code}` is not an SQLSTATE (five characters, 0-9 and A-Z, e.g. \"40001\")"
            )))
        }
    }
}

impl fmt::Display for SqlStateCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Severity of an injected error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Severity {
    /// The statement fails; the session goes on.
    #[default]
    #[serde(rename = "ERROR")]
    Error,
    /// The server ends the session after the message.
    #[serde(rename = "FATAL")]
    Fatal,
}

impl<'de> Deserialize<'de> for Severity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.to_ascii_uppercase().as_str() {
            "ERROR" => Ok(Severity::Error),
            "FATAL" => Ok(Severity::Fatal),
            _ => Err(serde::de::Error::custom(format!(
                "severity `{s}` is invalid; it is \"ERROR\" or \"FATAL\""
            ))),
        }
    }
}

/// Attributes of `query_latency`: matching queries are held this long
/// before they reach the server (a simple Query, or an extended-protocol
/// batch from the matching Execute up to its Sync).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueryLatency {
    /// Added delay (ms).
    pub latency: Millis,
    /// Uniform variation either way (ms).
    pub jitter: Millis,
    /// Which queries.
    #[serde(flatten)]
    pub matching: QueryMatch,
}

/// Attributes of `query_error`: a matching query fails with an
/// ErrorResponse, raised by the server itself so that the transaction state
/// on both sides agrees.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueryError {
    /// The SQLSTATE (default 40001, serialization_failure).
    pub sqlstate: SqlStateCode,
    /// The message; default: the real server's text for the SQLSTATE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `ERROR` (the statement fails) or `FATAL` (the session ends).
    pub severity: Severity,
    /// The DETAIL field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The HINT field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Which queries.
    #[serde(flatten)]
    pub matching: QueryMatch,
}

impl Default for QueryError {
    fn default() -> Self {
        Self {
            sqlstate: SqlStateCode::new("40001"),
            message: None,
            severity: Severity::Error,
            detail: None,
            hint: None,
            matching: QueryMatch::default(),
        }
    }
}

impl QueryError {
    /// The message to send: the configured one or the server's own text.
    pub fn message_text(&self) -> String {
        match &self.message {
            Some(m) => m.clone(),
            None => sqlstate::default_message(&self.sqlstate.0),
        }
    }

    /// The DETAIL to send: the configured one, else the table's.
    pub fn detail_text(&self) -> Option<String> {
        self.detail.clone().or_else(|| {
            if self.message.is_some() {
                return None;
            }
            sqlstate::lookup(&self.sqlstate.0).and_then(|s| s.detail.map(str::to_string))
        })
    }

    /// The HINT to send: the configured one, else the table's.
    pub fn hint_text(&self) -> Option<String> {
        self.hint.clone().or_else(|| {
            if self.message.is_some() {
                return None;
            }
            sqlstate::lookup(&self.sqlstate.0).and_then(|s| s.hint.map(str::to_string))
        })
    }
}

/// When `terminate` ends a session relative to the matching query.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum When {
    /// The query never reaches the server.
    #[default]
    Before,
    /// The server runs the query, but its answer never reaches the client
    /// (on a COMMIT: "commit outcome unknown").
    After,
}

/// Attributes of `terminate`: the session ends as `pg_terminate_backend`
/// ends it — FATAL 57P01 to the client, both legs closed, the server rolls
/// the open transaction back.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Terminate {
    /// Before or after the matching query is answered.
    pub when: When,
    /// Instead of a match: end each session once it has had this many
    /// queries answered (0: use matching).
    #[serde(skip_serializing_if = "is_zero")]
    pub after_queries: u64,
    /// Which queries.
    #[serde(flatten)]
    pub matching: QueryMatch,
}

/// Attributes of `reject_connections`: new sessions get the server's FATAL
/// right after their StartupMessage; live sessions are untouched.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RejectConnections {
    /// 53300 (too many clients, the default) or 57P03 (shutting down), or
    /// any other SQLSTATE.
    pub sqlstate: SqlStateCode,
    /// The message; default: the server's text for the SQLSTATE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Which sessions (`user`, `database`, `application_name`, `after`,
    /// `count`).
    #[serde(flatten)]
    pub matching: QueryMatch,
}

impl Default for RejectConnections {
    fn default() -> Self {
        Self {
            sqlstate: SqlStateCode::new("53300"),
            message: None,
            matching: QueryMatch::default(),
        }
    }
}

/// Attributes of `startup_latency`: matching sessions wait this long
/// between their StartupMessage and the server seeing it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StartupLatency {
    /// Added delay (ms).
    pub latency: Millis,
    /// Uniform variation either way (ms).
    pub jitter: Millis,
    /// Which sessions.
    #[serde(flatten)]
    pub matching: QueryMatch,
}

/// Attribute names shared by every PostgreSQL fault.
pub const MATCH_ATTRIBUTES: &[&str] = &[
    "sql",
    "statement",
    "user",
    "database",
    "application_name",
    "after",
    "count",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> SessionInfo {
        SessionInfo {
            user: "app".into(),
            database: "shop".into(),
            application_name: "checkout".into(),
        }
    }

    #[test]
    fn matching_needs_every_given_field() {
        let m: QueryMatch = serde_json::from_value(serde_json::json!({
            "sql": "(?i)insert into payments", "statement": "INSERT", "user": "app"
        }))
        .unwrap();
        let s = info();
        assert!(m.query_matches(&s, "INSERT INTO payments VALUES (1)", StatementKind::Insert));
        assert!(!m.query_matches(&s, "INSERT INTO orders VALUES (1)", StatementKind::Insert));
        assert!(!m.query_matches(&s, "insert into payments", StatementKind::Select));
        let other = SessionInfo {
            user: "admin".into(),
            ..info()
        };
        assert!(!m.query_matches(&other, "INSERT INTO payments", StatementKind::Insert));
        assert!(QueryMatch::default().query_matches(&s, "", StatementKind::Other));
    }

    #[test]
    fn after_and_count() {
        let m = QueryMatch {
            after: 2,
            count: 3,
            ..Default::default()
        };
        let hits = FaultHits::default();
        let taken: Vec<bool> = (0..8).map(|_| hits.take(&m)).collect();
        assert_eq!(taken, [false, false, true, true, true, false, false, false]);
        assert_eq!(hits.injected(), 3);
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            serde_json::json!({"sqlstate": "4000"}),
            serde_json::json!({"sqlstate": "40-01"}),
            serde_json::json!({"severity": "PANIC"}),
            serde_json::json!({"sql": "("}),
            serde_json::json!({"statement": "merge-ish"}),
        ] {
            assert!(
                serde_json::from_value::<QueryError>(bad.clone()).is_err(),
                "{bad}"
            );
        }
        let e: QueryError =
            serde_json::from_value(serde_json::json!({"sqlstate": "40p01", "severity": "fatal"}))
                .unwrap();
        assert_eq!(e.sqlstate.0, "40P01");
        assert_eq!(e.severity, Severity::Fatal);
        let n: QueryError = serde_json::from_value(serde_json::json!({"sqlstate": 8006})).unwrap();
        assert_eq!(n.sqlstate.0, "08006");
    }

    #[test]
    fn attributes_serialise_compactly() {
        let e = QueryError::default();
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"sqlstate": "40001", "severity": "ERROR"})
        );
        let t: Terminate =
            serde_json::from_value(serde_json::json!({"when": "after", "statement": "commit"}))
                .unwrap();
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            serde_json::json!({"when": "after", "statement": "commit"})
        );
    }
}
