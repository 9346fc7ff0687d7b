//! What kind of statement a SQL text starts with, cheaply and without a
//! parser.
//!
//! Faults target statement kinds ("fail 10 % of COMMITs", "delay writes"),
//! so the proxy classifies each Query or Parse text by its first keyword. It
//! is a lexer, not a parser: it skips whitespace, comments (nested block
//! comments too, as PostgreSQL allows) and leading parentheses, and for
//! `WITH` it scans past the CTE list outside quotes. Only the first
//! statement of a multi-statement string counts. Anything it does not
//! recognise is [`StatementKind::Other`], which faults can still target.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The kinds a fault can be limited to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatementKind {
    /// `SELECT`, `VALUES`, `TABLE`, and `WITH … SELECT`.
    Select,
    /// `INSERT`, and `WITH … INSERT`.
    Insert,
    /// `UPDATE`, and `WITH … UPDATE`.
    Update,
    /// `DELETE`, and `WITH … DELETE`.
    Delete,
    /// `CREATE`, `ALTER`, `DROP`, `TRUNCATE`, `COMMENT`, `GRANT`, `REVOKE`,
    /// `REINDEX`.
    Ddl,
    /// `BEGIN`, `START TRANSACTION`.
    Begin,
    /// `COMMIT` (also `AND CHAIN`), `END`; not `COMMIT PREPARED`.
    Commit,
    /// `ROLLBACK`, `ABORT`; not `ROLLBACK TO SAVEPOINT` nor
    /// `ROLLBACK PREPARED`.
    Rollback,
    /// Everything else: `SET`, `SHOW`, `COPY`, `DO`, `EXPLAIN`, `VACUUM`,
    /// `SAVEPOINT`, `PREPARE`, `EXECUTE`, `LISTEN`, `MERGE`, empty text, …
    Other,
}

impl StatementKind {
    /// Every kind, in [`index`](Self::index) order, e.g. to size per-kind
    /// counters.
    pub const ALL: [StatementKind; 9] = [
        StatementKind::Select,
        StatementKind::Insert,
        StatementKind::Update,
        StatementKind::Delete,
        StatementKind::Ddl,
        StatementKind::Begin,
        StatementKind::Commit,
        StatementKind::Rollback,
        StatementKind::Other,
    ];

    /// The lower-case name used in configs, the API and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            StatementKind::Select => "select",
            StatementKind::Insert => "insert",
            StatementKind::Update => "update",
            StatementKind::Delete => "delete",
            StatementKind::Ddl => "ddl",
            StatementKind::Begin => "begin",
            StatementKind::Commit => "commit",
            StatementKind::Rollback => "rollback",
            StatementKind::Other => "other",
        }
    }

    /// The position in [`ALL`](Self::ALL), for array-indexed counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for StatementKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a statement kind.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown statement kind \"{0}\" (valid: select, insert, update, delete, ddl, begin, commit, rollback, other)"
)]
pub struct UnknownKind(pub String);

impl FromStr for StatementKind {
    type Err = UnknownKind;

    /// Parses a kind name, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StatementKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

/// The kind of the first statement in `sql`; see [`StatementKind`] for the
/// rules. `MERGE` is `Other`: it may insert, update and delete at once.
pub fn classify(sql: &str) -> StatementKind {
    let mut lx = Lexer::new(sql);
    let first = loop {
        match lx.next() {
            Some(Token::Open) => continue,
            Some(Token::Word(w)) => break w,
            _ => return StatementKind::Other,
        }
    };
    let kw = |w: &str, k: &str| w.eq_ignore_ascii_case(k);
    let is = |k: &str| kw(first, k);
    if is("SELECT") || is("VALUES") || is("TABLE") {
        StatementKind::Select
    } else if is("INSERT") {
        StatementKind::Insert
    } else if is("UPDATE") {
        StatementKind::Update
    } else if is("DELETE") {
        StatementKind::Delete
    } else if is("WITH") {
        classify_with(&mut lx)
    } else if is("BEGIN") {
        StatementKind::Begin
    } else if is("START") {
        match lx.next() {
            Some(Token::Word(w)) if kw(w, "TRANSACTION") => StatementKind::Begin,
            _ => StatementKind::Other,
        }
    } else if is("COMMIT") {
        match lx.next() {
            Some(Token::Word(w)) if kw(w, "PREPARED") => StatementKind::Other,
            _ => StatementKind::Commit,
        }
    } else if is("END") {
        StatementKind::Commit
    } else if is("ROLLBACK") || is("ABORT") {
        let mut next = lx.next();
        if matches!(next, Some(Token::Word(w)) if kw(w, "WORK") || kw(w, "TRANSACTION")) {
            next = lx.next();
        }
        match next {
            Some(Token::Word(w)) if kw(w, "TO") || kw(w, "PREPARED") => StatementKind::Other,
            _ => StatementKind::Rollback,
        }
    } else if [
        "CREATE", "ALTER", "DROP", "TRUNCATE", "COMMENT", "GRANT", "REVOKE", "REINDEX",
    ]
    .iter()
    .any(|k| is(k))
    {
        StatementKind::Ddl
    } else {
        StatementKind::Other
    }
}

/// After `WITH`: the main statement's keyword at parenthesis depth 0, past
/// the CTE list. Data-modifying CTEs inside the list (`WITH d AS (DELETE …)
/// SELECT …`) do not count: only the main statement does.
fn classify_with(lx: &mut Lexer<'_>) -> StatementKind {
    let kw = |w: &str, k: &str| w.eq_ignore_ascii_case(k);
    let mut depth = 0usize;
    // Words right after these name a CTE or a column, so a CTE called
    // `update` (an unreserved keyword) is not taken for the statement.
    let mut after_name_slot = true;
    while let Some(tok) = lx.next() {
        match tok {
            Token::Open => depth += 1,
            Token::Close => depth = depth.saturating_sub(1),
            Token::Semicolon if depth == 0 => break,
            Token::Word(w) if depth == 0 && !after_name_slot => {
                if kw(w, "INSERT") {
                    return StatementKind::Insert;
                } else if kw(w, "UPDATE") {
                    return StatementKind::Update;
                } else if kw(w, "DELETE") {
                    return StatementKind::Delete;
                } else if kw(w, "MERGE") {
                    return StatementKind::Other;
                } else if kw(w, "SELECT") || kw(w, "VALUES") || kw(w, "TABLE") {
                    return StatementKind::Select;
                }
            }
            _ => {}
        }
        after_name_slot = depth == 0
            && match tok {
                Token::Comma => true,
                Token::Word(w) => ["RECURSIVE", "BY", "SET", "USING", "CYCLE"]
                    .iter()
                    .any(|k| kw(w, k)),
                _ => false,
            };
    }
    StatementKind::Select
}

/// Whether `sql` ends a transaction block: a [`StatementKind::Commit`] or
/// [`StatementKind::Rollback`].
pub fn is_transaction_end(sql: &str) -> bool {
    matches!(
        classify(sql),
        StatementKind::Commit | StatementKind::Rollback
    )
}

/// The tokens the classifier cares about; quoted text, numbers, operators
/// and comments are skipped or folded into `Punct`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token<'a> {
    Word(&'a str),
    Open,
    Close,
    Comma,
    Semicolon,
    /// A quoted string or identifier, a number, an operator, `$1`, …
    Punct,
}

/// A just-enough SQL lexer: PostgreSQL's rules for comments (`--`, nested
/// `/* */`), strings (`'…'` with `''`, `E'…'` with backslash escapes),
/// quoted identifiers (`"…"` with `""`) and dollar quotes (`$tag$…$tag$`).
/// Unterminated quotes or comments run to the end of the text.
struct Lexer<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Lexer<'a> {
    fn new(s: &'a str) -> Self {
        Lexer {
            s,
            b: s.as_bytes(),
            i: 0,
        }
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.b.get(self.i + ahead).copied()
    }

    fn next(&mut self) -> Option<Token<'a>> {
        self.skip_blank();
        let c = self.peek(0)?;
        let tok = match c {
            b'(' => {
                self.i += 1;
                Token::Open
            }
            b')' => {
                self.i += 1;
                Token::Close
            }
            b',' => {
                self.i += 1;
                Token::Comma
            }
            b';' => {
                self.i += 1;
                Token::Semicolon
            }
            b'\'' => {
                self.i += 1;
                self.skip_quoted(b'\'', false);
                Token::Punct
            }
            b'"' => {
                self.i += 1;
                self.skip_quoted(b'"', false);
                Token::Punct
            }
            b'$' => {
                self.i += 1;
                self.skip_dollar();
                Token::Punct
            }
            c if is_ident_start(c) => {
                let start = self.i;
                while self.peek(0).is_some_and(is_ident_char) {
                    self.i += 1;
                }
                let word = self.s.get(start..self.i).unwrap_or_default();
                // E'…' (any case) is an escape string: backslashes escape.
                if word.eq_ignore_ascii_case("e") && self.peek(0) == Some(b'\'') {
                    self.i += 1;
                    self.skip_quoted(b'\'', true);
                    Token::Punct
                } else {
                    Token::Word(word)
                }
            }
            _ => {
                // Numbers, operators and any other byte (including the
                // rest of a multi-byte character, which is never ASCII).
                self.i += 1;
                Token::Punct
            }
        };
        Some(tok)
    }

    /// Skips whitespace and comments.
    fn skip_blank(&mut self) {
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some(c), _) if c.is_ascii_whitespace() => self.i += 1,
                (Some(b'-'), Some(b'-')) => {
                    while self.peek(0).is_some_and(|c| c != b'\n') {
                        self.i += 1;
                    }
                }
                (Some(b'/'), Some(b'*')) => {
                    self.i += 2;
                    let mut depth = 1usize;
                    while depth > 0 {
                        match (self.peek(0), self.peek(1)) {
                            (None, _) => return,
                            (Some(b'/'), Some(b'*')) => {
                                depth += 1;
                                self.i += 2;
                            }
                            (Some(b'*'), Some(b'/')) => {
                                depth -= 1;
                                self.i += 2;
                            }
                            _ => self.i += 1,
                        }
                    }
                }
                _ => return,
            }
        }
    }

    /// Skips to just past the closing `quote`; a doubled quote is a literal
    /// one, and with `backslash` so is `\` followed by anything.
    fn skip_quoted(&mut self, quote: u8, backslash: bool) {
        while let Some(c) = self.peek(0) {
            self.i += 1;
            if backslash && c == b'\\' {
                self.i += 1;
            } else if c == quote {
                if self.peek(0) == Some(quote) {
                    self.i += 1;
                } else {
                    return;
                }
            }
        }
        self.i = self.i.min(self.b.len());
    }

    /// After a `$`: a dollar quote `$tag$…$tag$` (tag empty or an
    /// identifier not starting with a digit) is skipped whole; `$1` and a
    /// lone `$` are not quotes.
    fn skip_dollar(&mut self) {
        let tag_start = self.i;
        let mut j = self.i;
        if self.b.get(j).is_some_and(|&c| is_ident_start(c)) {
            while self
                .b
                .get(j)
                .is_some_and(|&c| is_ident_char(c) && c != b'$')
            {
                j += 1;
            }
        }
        if self.b.get(j) != Some(&b'$') {
            return;
        }
        let delim = &self.b[tag_start - 1..=j];
        let body_start = j + 1;
        self.i = match find(&self.b[body_start..], delim) {
            Some(at) => body_start + at + delim.len(),
            None => self.b.len(),
        };
    }
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident_char(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == b'$'
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::StatementKind::*;
    use super::*;

    fn check(cases: &[(&str, StatementKind)]) {
        for (sql, want) in cases {
            assert_eq!(classify(sql), *want, "{sql:?}");
        }
    }

    #[test]
    fn plain_first_keywords() {
        check(&[
            ("SELECT 1", Select),
            ("select * from t", Select),
            ("VALUES (1), (2)", Select),
            ("TABLE t", Select),
            ("INSERT INTO t VALUES (1)", Insert),
            ("UPDATE t SET a = 1", Update),
            ("DELETE FROM t", Delete),
            (
                "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
                Other,
            ),
            ("", Other),
            ("   ", Other),
            (";", Other),
            ("-- only a comment", Other),
        ]);
    }

    #[test]
    fn whitespace_comments_and_parens_are_skipped() {
        check(&[
            ("  \n\t SELECT 1", Select),
            ("-- note\nUPDATE t SET a = 1", Update),
            ("/* c */ DELETE FROM t", Delete),
            (
                "/* outer /* inner */ still comment */ INSERT INTO t DEFAULT VALUES",
                Insert,
            ),
            ("/* a */ -- b\n /* c */ COMMIT", Commit),
            ("(SELECT 1) UNION (SELECT 2)", Select),
            ("((VALUES (1)))", Select),
            ("/* unterminated SELECT", Other),
            ("--SELECT\n", Other),
        ]);
    }

    #[test]
    fn transaction_control() {
        check(&[
            ("BEGIN", Begin),
            ("begin isolation level serializable", Begin),
            ("BEGIN WORK", Begin),
            ("START TRANSACTION READ ONLY", Begin),
            ("START", Other),
            ("COMMIT", Commit),
            ("commit work", Commit),
            ("COMMIT AND CHAIN", Commit),
            ("COMMIT AND NO CHAIN", Commit),
            ("END", Commit),
            ("END TRANSACTION", Commit),
            ("COMMIT PREPARED 'tx1'", Other),
            ("COMMIT /* x */ PREPARED 'tx1'", Other),
            ("ROLLBACK", Rollback),
            ("rollback;", Rollback),
            ("ROLLBACK AND CHAIN", Rollback),
            ("ABORT", Rollback),
            ("ABORT TRANSACTION", Rollback),
            ("ROLLBACK TO sp1", Other),
            ("ROLLBACK TO SAVEPOINT sp1", Other),
            ("ROLLBACK WORK TO SAVEPOINT sp1", Other),
            ("rollback transaction to sp1", Other),
            ("ROLLBACK PREPARED 'tx1'", Other),
            ("SAVEPOINT sp1", Other),
            ("RELEASE SAVEPOINT sp1", Other),
            ("PREPARE TRANSACTION 'tx1'", Other),
        ]);
        assert!(is_transaction_end("COMMIT"));
        assert!(is_transaction_end("  abort"));
        assert!(!is_transaction_end("ROLLBACK TO sp"));
        assert!(!is_transaction_end("BEGIN"));
    }

    #[test]
    fn ddl_and_other() {
        check(&[
            ("CREATE TABLE t (id int)", Ddl),
            ("alter table t add column b int", Ddl),
            ("DROP INDEX i", Ddl),
            ("TRUNCATE t", Ddl),
            ("COMMENT ON TABLE t IS 'x'", Ddl),
            ("GRANT SELECT ON t TO u", Ddl),
            ("REVOKE ALL ON t FROM u", Ddl),
            ("REINDEX TABLE t", Ddl),
            ("SET statement_timeout = 0", Other),
            ("SHOW server_version", Other),
            ("COPY t FROM STDIN", Other),
            ("DO $$BEGIN RAISE EXCEPTION 'x'; END$$", Other),
            ("EXPLAIN SELECT 1", Other),
            ("VACUUM t", Other),
            ("PREPARE p AS SELECT 1", Other),
            ("EXECUTE p", Other),
            ("LISTEN chan", Other),
            ("1 + 1", Other),
            ("'SELECT'", Other),
        ]);
    }

    #[test]
    fn only_the_first_statement_counts() {
        check(&[
            ("SELECT 1; DELETE FROM t", Select),
            ("BEGIN; UPDATE t SET a = 1; COMMIT", Begin),
            ("COMMIT; BEGIN", Commit),
        ]);
    }

    #[test]
    fn with_queries() {
        check(&[
            ("WITH a AS (SELECT 1) SELECT * FROM a", Select),
            ("WITH a AS (SELECT 1) INSERT INTO t SELECT * FROM a", Insert),
            ("with a as (select 1) update t set x = 1 from a", Update),
            ("WITH a AS (SELECT 1) DELETE FROM t USING a", Delete),
            (
                "WITH RECURSIVE r(n) AS (VALUES (1) UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r",
                Select,
            ),
            (
                "WITH a AS (SELECT 1), b AS MATERIALIZED (SELECT 2) DELETE FROM t",
                Delete,
            ),
            ("WITH a AS NOT MATERIALIZED (SELECT 1) TABLE a", Select),
            // A data-modifying CTE does not make the main statement a write.
            (
                "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
                Select,
            ),
            (
                "WITH a AS (SELECT 1) MERGE INTO t USING a ON true WHEN MATCHED THEN DELETE",
                Other,
            ),
            // CTEs named like keywords.
            ("WITH update AS (SELECT 1) SELECT * FROM update", Select),
            (
                "WITH x AS (SELECT 1), insert AS (SELECT 2) DELETE FROM t",
                Delete,
            ),
            (
                "WITH RECURSIVE t(id) AS (SELECT 1) CYCLE id SET is_cycle USING path SELECT * FROM t",
                Select,
            ),
            ("WITH", Select),
            ("WITH a AS (SELECT 1); DELETE FROM t", Select),
        ]);
    }

    #[test]
    fn with_queries_skip_quotes_and_comments() {
        check(&[
            ("WITH a AS (SELECT ')') DELETE FROM t", Delete),
            ("WITH a AS (SELECT 'it''s (') UPDATE t SET x = 1", Update),
            (
                "WITH a AS (SELECT E'\\' (') INSERT INTO t VALUES (1)",
                Insert,
            ),
            ("WITH \"a)\" AS (SELECT 1) UPDATE t SET x = 1", Update),
            ("WITH \"DELETE\" AS (SELECT 1) SELECT 1", Select),
            ("WITH a AS (SELECT $$ ) delete $$) SELECT 1", Select),
            (
                "WITH a AS (SELECT $x$ ) $$ ( $x$) INSERT INTO t VALUES (1)",
                Insert,
            ),
            ("WITH a AS (SELECT $1) DELETE FROM t WHERE id = $1", Delete),
            ("WITH a AS (SELECT 1) /* DELETE */ SELECT 1", Select),
            ("WITH a AS (SELECT 1) -- DELETE\nSELECT 1", Select),
            ("WITH a AS (SELECT 1) /* ( */ DELETE FROM t", Delete),
            ("WITH a AS (SELECT 'unterminated DELETE", Select),
            ("WITH a AS (SELECT 1)\u{00e9} SELECT 1", Select),
            ("WITH a AS (SELECT 'é') INSERT INTO t VALUES ('ü')", Insert),
        ]);
    }

    #[test]
    fn kinds_names_and_indices() {
        for (i, k) in StatementKind::ALL.into_iter().enumerate() {
            assert_eq!(k.index(), i);
            assert_eq!(k.as_str().parse::<StatementKind>().unwrap(), k);
            assert_eq!(
                k.as_str().to_uppercase().parse::<StatementKind>().unwrap(),
                k
            );
            assert_eq!(k.to_string(), k.as_str());
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<StatementKind>(&json).unwrap(), k);
        }
        let err = "merge".parse::<StatementKind>().unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown statement kind \"merge\" (valid: select, insert, update, delete, ddl, begin, commit, rollback, other)"
        );
    }

    #[test]
    fn arbitrary_text_never_panics() {
        use rand::{RngExt, SeedableRng};
        let alphabet: Vec<char> = "SELECT with update () ;,'\"$tag$ E\\ -- /* */ \n é 1 $1"
            .chars()
            .collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..20_000 {
            let n = rng.random_range(0..30usize);
            let s: String = (0..n)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            let _ = classify(&s);
            let with = format!("WITH {s}");
            let _ = classify(&with);
        }
    }
}
