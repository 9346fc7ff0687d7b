//! SQLSTATEs a chaos user injects, with the words a real server uses.
//!
//! Drivers, pools and ORMs react to the `C` field (HikariCP evicts on
//! `57P01`, Spring retries class `40`) and some match substrings of the `M`
//! text (SQLAlchemy's "terminating connection"), so an injected error is only
//! a faithful rehearsal if both are exactly what PostgreSQL 15 sends. The
//! texts in [`KNOWN`] come from captures of a PostgreSQL 15.18 server (see
//! `shared/reference/postgres-wire.md`, Appendix A) or, where not captured,
//! from the `errmsg`/`errdetail`/`errhint` calls in PostgreSQL 15's source.
//! Condition names are those of PostgreSQL's Appendix A (`errcodes.txt`).

/// One injectable condition: what a real server sends for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqlState {
    /// The five-character SQLSTATE, e.g. `40001`.
    pub code: &'static str,
    /// The Appendix A condition name, e.g. `serialization_failure`.
    pub name: &'static str,
    /// The severity the server reports it with: `ERROR`, `FATAL` (the server
    /// then closes the connection) or, for `57P02`, `WARNING`.
    pub severity: &'static str,
    /// The `M` field, byte for byte as the server sends it.
    pub message: &'static str,
    /// The `D` field, when the server always sends one.
    pub detail: Option<&'static str>,
    /// The `H` field, when the server always sends one.
    pub hint: Option<&'static str>,
}

/// The `M` text of `57014` when `statement_timeout` fires, rather than a
/// CancelRequest (captured from PostgreSQL 15.18).
pub const STATEMENT_TIMEOUT_MESSAGE: &str = "canceling statement due to statement timeout";

/// The `M` text of `55P03` when `lock_timeout` fires (postgres.c).
pub const LOCK_TIMEOUT_MESSAGE: &str = "canceling statement due to lock timeout";

/// The `M` text of `53300` for a role's `CONNECTION LIMIT`, sent after
/// AuthenticationOk (captured; the role name varies, here `role`).
pub const TOO_MANY_ROLE_CONNECTIONS_MESSAGE: &str = "too many connections for role \"role\"";

/// Conditions worth injecting, with the server's own texts.
///
/// Messages that embed names or numbers (`%s`, `%u` in the server's
/// `errmsg`) cannot be reproduced exactly, since they vary per database;
/// for those the table keeps the server's template filled with generic
/// names: relation `relation`, column `column`, constraint names built the
/// way PostgreSQL names them (`relation_pkey`, `relation_column_fkey`,
/// `relation_column_check`), file `base/16384/16385`, key value `1`, and
/// example process and transaction numbers. Each such entry says which
/// parts are placeholders. Build-specific fields (`F`, `L`, `R`) and
/// per-occurrence fields (`W`, `P`) are not part of the table.
pub const KNOWN: &[SqlState] = &[
    // Class 08 - Connection Exception
    SqlState {
        code: "08006",
        name: "connection_failure",
        // The server only ever raises this once the client is gone (and
        // does not send it); drivers synthesize 08006 on socket errors.
        severity: "FATAL",
        message: "connection to client lost",
        detail: None,
        hint: None,
    },
    SqlState {
        code: "08P01",
        name: "protocol_violation",
        // postgres.c, on an unknown message type byte; placeholder: 0.
        severity: "FATAL",
        message: "invalid frontend message type 0",
        detail: None,
        hint: None,
    },
    // Class 22 - Data Exception
    SqlState {
        code: "22012",
        name: "division_by_zero",
        severity: "ERROR",
        message: "division by zero",
        detail: None,
        hint: None,
    },
    // Class 23 - Integrity Constraint Violation (placeholders: names, key)
    SqlState {
        code: "23502",
        name: "not_null_violation",
        severity: "ERROR",
        message: "null value in column \"column\" of relation \"relation\" violates not-null constraint",
        detail: Some("Failing row contains (null)."),
        hint: None,
    },
    SqlState {
        code: "23503",
        name: "foreign_key_violation",
        severity: "ERROR",
        message: "insert or update on table \"relation\" violates foreign key constraint \"relation_column_fkey\"",
        detail: Some("Key (column)=(1) is not present in table \"referenced\"."),
        hint: None,
    },
    SqlState {
        code: "23505",
        name: "unique_violation",
        severity: "ERROR",
        message: "duplicate key value violates unique constraint \"relation_pkey\"",
        detail: Some("Key (column)=(1) already exists."),
        hint: None,
    },
    SqlState {
        code: "23514",
        name: "check_violation",
        severity: "ERROR",
        message: "new row for relation \"relation\" violates check constraint \"relation_column_check\"",
        detail: Some("Failing row contains (1)."),
        hint: None,
    },
    // Class 25 - Invalid Transaction State
    SqlState {
        code: "25006",
        name: "read_only_sql_transaction",
        // What a write gets on a hot standby; placeholder: the command.
        severity: "ERROR",
        message: "cannot execute INSERT in a read-only transaction",
        detail: None,
        hint: None,
    },
    SqlState {
        code: "25P02",
        name: "in_failed_sql_transaction",
        severity: "ERROR",
        message: "current transaction is aborted, commands ignored until end of transaction block",
        detail: None,
        hint: None,
    },
    SqlState {
        code: "25P03",
        name: "idle_in_transaction_session_timeout",
        severity: "FATAL",
        message: "terminating connection due to idle-in-transaction timeout",
        detail: None,
        hint: None,
    },
    // Class 28 - Invalid Authorization Specification (placeholder: user)
    SqlState {
        code: "28P01",
        name: "invalid_password",
        severity: "FATAL",
        message: "password authentication failed for user \"user\"",
        detail: None,
        hint: None,
    },
    // Class 3D - Invalid Catalog Name (placeholder: database)
    SqlState {
        code: "3D000",
        name: "invalid_catalog_name",
        severity: "FATAL",
        message: "database \"database\" does not exist",
        detail: None,
        hint: None,
    },
    // Class 40 - Transaction Rollback
    SqlState {
        code: "40001",
        name: "serialization_failure",
        severity: "ERROR",
        message: "could not serialize access due to concurrent update",
        detail: None,
        hint: None,
    },
    SqlState {
        code: "40P01",
        name: "deadlock_detected",
        // Captured shape; placeholders: process and transaction numbers.
        severity: "ERROR",
        message: "deadlock detected",
        detail: Some(
            "Process 12345 waits for ShareLock on transaction 1001; blocked by process 12346.\n\
             Process 12346 waits for ShareLock on transaction 1000; blocked by process 12345.",
        ),
        hint: Some("See server log for query details."),
    },
    // Class 42 - Syntax Error or Access Rule Violation (placeholders: names)
    SqlState {
        code: "42501",
        name: "insufficient_privilege",
        severity: "ERROR",
        message: "permission denied for table relation",
        detail: None,
        hint: None,
    },
    SqlState {
        code: "42601",
        name: "syntax_error",
        severity: "ERROR",
        message: "syntax error at or near \"relation\"",
        detail: None,
        hint: None,
    },
    SqlState {
        code: "42P01",
        name: "undefined_table",
        severity: "ERROR",
        message: "relation \"relation\" does not exist",
        detail: None,
        hint: None,
    },
    // Class 53 - Insufficient Resources
    SqlState {
        code: "53100",
        name: "disk_full",
        // md.c, write failing with ENOSPC; placeholder: the file path.
        severity: "ERROR",
        message: "could not extend file \"base/16384/16385\": No space left on device",
        detail: None,
        hint: Some("Check free disk space."),
    },
    SqlState {
        code: "53200",
        name: "out_of_memory",
        // mcxt.c; placeholders: request size and memory context.
        severity: "ERROR",
        message: "out of memory",
        detail: Some("Failed on request of size 1048576 in memory context \"ExecutorState\"."),
        hint: None,
    },
    SqlState {
        code: "53300",
        name: "too_many_connections",
        // Sent right after the StartupMessage, before authentication.
        severity: "FATAL",
        message: "sorry, too many clients already",
        detail: None,
        hint: None,
    },
    // Class 55 - Object Not In Prerequisite State (placeholder: relation)
    SqlState {
        code: "55P03",
        name: "lock_not_available",
        // SELECT … FOR UPDATE NOWAIT; see also LOCK_TIMEOUT_MESSAGE.
        severity: "ERROR",
        message: "could not obtain lock on row in relation \"relation\"",
        detail: None,
        hint: None,
    },
    // Class 57 - Operator Intervention
    SqlState {
        code: "57014",
        name: "query_canceled",
        // After a CancelRequest; see also STATEMENT_TIMEOUT_MESSAGE.
        severity: "ERROR",
        message: "canceling statement due to user request",
        detail: None,
        hint: None,
    },
    SqlState {
        code: "57P01",
        name: "admin_shutdown",
        severity: "FATAL",
        message: "terminating connection due to administrator command",
        detail: None,
        hint: None,
    },
    SqlState {
        code: "57P02",
        name: "crash_shutdown",
        // Since PostgreSQL 14 quickdie() reports this as WARNING (so as a
        // NoticeResponse), then the server closes the connection.
        severity: "WARNING",
        message: "terminating connection because of crash of another server process",
        detail: Some(
            "The postmaster has commanded this server process to roll back the current \
             transaction and exit, because another server process exited abnormally and \
             possibly corrupted shared memory.",
        ),
        hint: Some(
            "In a moment you should be able to reconnect to the database and repeat your command.",
        ),
    },
    SqlState {
        code: "57P03",
        name: "cannot_connect_now",
        // Smart shutdown; the server also sends "is starting up" and
        // recovery variants with this code.
        severity: "FATAL",
        message: "the database system is shutting down",
        detail: None,
        hint: None,
    },
    SqlState {
        code: "57P05",
        name: "idle_session_timeout",
        severity: "FATAL",
        message: "terminating connection due to idle-session timeout",
        detail: None,
        hint: None,
    },
    // Class XX - Internal Error (elog(ERROR) uses XX000; placeholder: oid)
    SqlState {
        code: "XX000",
        name: "internal_error",
        severity: "ERROR",
        message: "cache lookup failed for relation 16384",
        detail: None,
        hint: None,
    },
];

/// The SQLSTATE classes of PostgreSQL 15's Appendix A, as (class, generic
/// message): the section title in lower case, shortened where the title
/// carries a remark.
const CLASSES: &[(&str, &str)] = &[
    ("00", "successful completion"),
    ("01", "warning"),
    ("02", "no data"),
    ("03", "sql statement not yet complete"),
    ("08", "connection exception"),
    ("09", "triggered action exception"),
    ("0A", "feature not supported"),
    ("0B", "invalid transaction initiation"),
    ("0F", "locator exception"),
    ("0L", "invalid grantor"),
    ("0P", "invalid role specification"),
    ("0Z", "diagnostics exception"),
    ("20", "case not found"),
    ("21", "cardinality violation"),
    ("22", "data exception"),
    ("23", "integrity constraint violation"),
    ("24", "invalid cursor state"),
    ("25", "invalid transaction state"),
    ("26", "invalid sql statement name"),
    ("27", "triggered data change violation"),
    ("28", "invalid authorization specification"),
    ("2B", "dependent privilege descriptors still exist"),
    ("2D", "invalid transaction termination"),
    ("2F", "sql routine exception"),
    ("34", "invalid cursor name"),
    ("38", "external routine exception"),
    ("39", "external routine invocation exception"),
    ("3B", "savepoint exception"),
    ("3D", "invalid catalog name"),
    ("3F", "invalid schema name"),
    ("40", "transaction rollback"),
    ("42", "syntax error or access rule violation"),
    ("44", "with check option violation"),
    ("53", "insufficient resources"),
    ("54", "program limit exceeded"),
    ("55", "object not in prerequisite state"),
    ("57", "operator intervention"),
    ("58", "system error"),
    ("72", "snapshot failure"),
    ("F0", "configuration file error"),
    ("HV", "foreign data wrapper error"),
    ("P0", "pl/pgsql error"),
    ("XX", "internal error"),
];

/// The message for codes neither in [`KNOWN`] nor in a known class; it is
/// the text of the `RAISE` trick in the reference, so both kinds of
/// injection read alike.
pub const FALLBACK_MESSAGE: &str = "injected fault";

/// The table entry for `code` (exact, upper-case match).
pub fn lookup(code: &str) -> Option<&'static SqlState> {
    KNOWN.iter().find(|s| s.code == code)
}

/// Whether `code` is a well-formed SQLSTATE: five characters, each a digit
/// or an upper-case ASCII letter (what the SQL standard and the server
/// require; lower case is not accepted).
pub fn is_valid(code: &str) -> bool {
    code.len() == 5
        && code
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

/// The generic text of `code`'s class (its first two characters), e.g.
/// `"transaction rollback"` for `40xxx`; `None` for an unknown class or an
/// invalid code.
pub fn class_message(code: &str) -> Option<&'static str> {
    if !is_valid(code) {
        return None;
    }
    let class = &code[..2];
    CLASSES.iter().find(|(c, _)| *c == class).map(|(_, m)| *m)
}

/// The message to send for `code` when the user gave none:
///
/// 1. the [`KNOWN`] entry's `message` if there is one;
/// 2. otherwise, for a valid code of a known class, the class's generic
///    text in lower case ([`class_message`]), e.g. `40003` →
///    `"transaction rollback"`;
/// 3. otherwise (unknown class, or not a valid SQLSTATE)
///    [`FALLBACK_MESSAGE`], `"injected fault"`.
pub fn default_message(code: &str) -> String {
    lookup(code)
        .map(|s| s.message)
        .or_else(|| class_message(code))
        .unwrap_or(FALLBACK_MESSAGE)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn table_is_well_formed() {
        let mut seen = HashSet::new();
        for s in KNOWN {
            assert!(is_valid(s.code), "{}", s.code);
            assert!(seen.insert(s.code), "duplicate {}", s.code);
            assert!(
                matches!(s.severity, "ERROR" | "FATAL" | "WARNING"),
                "{}",
                s.code
            );
            assert!(!s.message.is_empty());
            assert!(
                !s.name.is_empty() && s.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            );
            assert!(class_message(s.code).is_some(), "class of {}", s.code);
            for text in [Some(s.message), s.detail, s.hint].into_iter().flatten() {
                assert!(!text.contains('\0'), "{}", s.code);
            }
            assert_eq!(lookup(s.code), Some(s));
        }
    }

    #[test]
    fn required_codes_are_present() {
        for code in [
            "40001", "40P01", "57014", "57P01", "57P02", "57P03", "53300", "53100", "53200",
            "23502", "23503", "23505", "23514", "22012", "25P02", "08P01", "08006", "42P01",
            "42501", "55P03", "XX000",
        ] {
            assert!(lookup(code).is_some(), "{code} missing");
        }
    }

    #[test]
    fn captured_texts_verbatim() {
        // From the PostgreSQL 15.18 captures in the wire reference.
        let cases = [
            (
                "57P01",
                "FATAL",
                "terminating connection due to administrator command",
            ),
            ("53300", "FATAL", "sorry, too many clients already"),
            ("57P03", "FATAL", "the database system is shutting down"),
            (
                "40001",
                "ERROR",
                "could not serialize access due to concurrent update",
            ),
            ("40P01", "ERROR", "deadlock detected"),
            ("57014", "ERROR", "canceling statement due to user request"),
            ("22012", "ERROR", "division by zero"),
            (
                "25P02",
                "ERROR",
                "current transaction is aborted, commands ignored until end of transaction block",
            ),
        ];
        for (code, severity, message) in cases {
            let s = lookup(code).unwrap();
            assert_eq!((s.severity, s.message), (severity, message), "{code}");
        }
        assert_eq!(
            lookup("40P01").unwrap().hint,
            Some("See server log for query details.")
        );
        assert_eq!(
            STATEMENT_TIMEOUT_MESSAGE,
            "canceling statement due to statement timeout"
        );
        let d = lookup("57P02").unwrap().detail.unwrap();
        assert!(d.starts_with(
            "The postmaster has commanded this server process to roll back the current transaction"
        ));
        assert!(!d.contains("  "));
    }

    #[test]
    fn names_follow_appendix_a() {
        let names = [
            ("40001", "serialization_failure"),
            ("40P01", "deadlock_detected"),
            ("57014", "query_canceled"),
            ("57P01", "admin_shutdown"),
            ("57P02", "crash_shutdown"),
            ("57P03", "cannot_connect_now"),
            ("53300", "too_many_connections"),
            ("53100", "disk_full"),
            ("23505", "unique_violation"),
            ("08P01", "protocol_violation"),
            ("XX000", "internal_error"),
        ];
        for (code, name) in names {
            assert_eq!(lookup(code).unwrap().name, name);
        }
    }

    #[test]
    fn validity() {
        for ok in ["40001", "57P01", "XX000", "0A000", "HV00R"] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in ["", "4000", "400011", "57p01", "40 01", "4000é", "ABCD-"] {
            assert!(!is_valid(bad), "{bad}");
        }
        assert_eq!(lookup("57p01"), None);
    }

    #[test]
    fn default_messages() {
        assert_eq!(default_message("40P01"), "deadlock detected");
        assert_eq!(default_message("40003"), "transaction rollback");
        assert_eq!(default_message("08001"), "connection exception");
        assert_eq!(default_message("P0001"), "pl/pgsql error");
        assert_eq!(default_message("ZZ999"), FALLBACK_MESSAGE);
        assert_eq!(default_message("nope"), FALLBACK_MESSAGE);
        assert_eq!(default_message("40é01"), FALLBACK_MESSAGE);
        assert_eq!(class_message("4"), None);
    }
}
