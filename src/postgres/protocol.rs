//! PostgreSQL wire protocol 3: framing, the few bodies a proxy inspects, and
//! builders for the messages it synthesizes.
//!
//! A fault-injecting proxy forwards almost every byte unchanged, so a frame
//! is kept as its raw bytes ([`Frame::raw`]) and only the bodies the proxy
//! decides on (query texts, statement and portal names, ReadyForQuery
//! status, error fields, backend keys) are decoded, on demand and without
//! copying. Everything here is pure: no I/O, no async.
//!
//! Readers are incremental: they return `Ok(None)` and consume nothing until
//! `buf` holds a whole packet, then split it off the front. Malformed input
//! gives a [`ProtocolError`] and never a panic; on an error nothing is
//! consumed, and the caller is expected to abandon the connection, as the
//! protocol says a receiver must (§55.1.1).
//!
//! Type bytes depend on the direction (`E` is ErrorResponse from the server
//! but Execute from the client), so frame readers take a [`Side`] and reject
//! any type byte not in that side's table (§55.7).
//!
//! Strings are NUL-terminated and decoded as UTF-8: the proxy assumes
//! `client_encoding` UTF8, the default of every modern driver.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Protocol version 3.0, the StartupMessage code every current client sends.
pub const PROTOCOL_3_0: i32 = 196608;
/// Protocol version 3.2 (PostgreSQL 18): variable-length cancel keys.
pub const PROTOCOL_3_2: i32 = 0x0003_0002;
/// SSLRequest code, 1234 << 16 | 5679.
pub const SSL_REQUEST: i32 = 80877103;
/// GSSENCRequest code, 1234 << 16 | 5680.
pub const GSSENC_REQUEST: i32 = 80877104;
/// CancelRequest code, 1234 << 16 | 5678.
pub const CANCEL_REQUEST: i32 = 80877102;
/// The server's limit for startup packets (`MAX_STARTUP_PACKET_LENGTH`);
/// anything longer is refused before it is buffered.
pub const MAX_STARTUP_LEN: usize = 10_000;
/// The server's limit for one message (`PQ_LARGE_MESSAGE_LIMIT`, 1 GB - 1),
/// counted like the length word: itself plus the body.
pub const MAX_FRAME_LEN: usize = 0x3fff_ffff - 1;

/// Largest cancel key protocol 3.2 allows (the server sends at most 32).
const MAX_CANCEL_KEY: usize = 256;

/// Type bytes a client may send (§55.7).
const FRONTEND_TAGS: &[u8] = b"BCdcfDEHFpPQSX";
/// Type bytes a server may send (§55.7).
const BACKEND_TAGS: &[u8] = b"RK23CdcGHWDIEVvnNAtS1sZT";

/// Why bytes are not a valid protocol message. Each message says what and
/// where, so a log line names the culprit; the side (client or upstream) is
/// the caller's to add.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The length word of a frame is below its own size.
    #[error("frame length {len} is below 4 (type {tag})")]
    FrameTooShort { tag: Tag, len: i32 },
    /// The length word of a frame is above the limit.
    #[error("frame length {len} exceeds {max} (type {tag})")]
    FrameTooLong { tag: Tag, len: usize, max: usize },
    /// A type byte that the given side never sends.
    #[error("frame type {tag} is not a valid {side} message")]
    BadFrameType { tag: Tag, side: Side },
    /// The length word of a startup packet is below the 8-byte minimum.
    #[error("startup packet length {len} is below 8")]
    StartupTooShort { len: i32 },
    /// The startup packet is longer than [`MAX_STARTUP_LEN`].
    #[error("startup packet of {len} bytes exceeds {MAX_STARTUP_LEN}")]
    StartupTooLong { len: usize },
    /// A startup code that is neither a protocol version nor a known request.
    #[error("unknown startup code {0}")]
    UnknownStartupCode(i32),
    /// A StartupMessage for a protocol major version other than 3.
    #[error("unsupported protocol version {major}.{minor}")]
    UnsupportedVersion { major: i32, minor: i32 },
    /// A fixed-size startup request with the wrong length.
    #[error("{what} of {len} bytes, expected {expected}")]
    BadRequestLength {
        what: &'static str,
        len: usize,
        expected: &'static str,
    },
    /// A string runs to the end of the body without its NUL.
    #[error("unterminated string in {0}")]
    Unterminated(&'static str),
    /// A string is not UTF-8.
    #[error("invalid UTF-8 in {0}")]
    InvalidUtf8(&'static str),
    /// The body ends before a fixed-size field.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// The body goes on after its last field.
    #[error("trailing bytes after {0}")]
    TrailingBytes(&'static str),
    /// A startup parameter name without a value.
    #[error("startup parameter \"{0}\" has no value")]
    MissingValue(String),
    /// A one-byte field with a value outside its set.
    #[error("invalid {what} {value}")]
    BadField { what: &'static str, value: Tag },
    /// An accessor was given a frame of another type.
    #[error("expected a {expected} frame, got {actual}")]
    WrongType { expected: &'static str, actual: Tag },
}

/// A type byte, displayed as `'Q'` when printable and `0x00` otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag(pub u8);

impl std::fmt::Display for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_ascii_graphic() || self.0 == b' ' {
            write!(f, "'{}'", char::from(self.0))
        } else {
            write!(f, "0x{:02x}", self.0)
        }
    }
}

/// One startup-phase packet from a client (these have no type byte).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Startup {
    /// SSLRequest: the client asks for TLS and reads exactly one byte back.
    Ssl,
    /// GSSENCRequest: the client asks for GSSAPI encryption.
    GssEnc,
    /// CancelRequest, sent on a fresh connection. `raw` is the whole packet
    /// so it can be relayed unchanged; `secret` is `len - 12` bytes (4 in
    /// protocol 3.0, up to 256 in 3.2).
    Cancel { raw: Bytes, pid: i32, secret: Bytes },
    /// StartupMessage. `raw` is the whole packet; `params` keep the client's
    /// order.
    Message {
        raw: Bytes,
        version: i32,
        params: Vec<(String, String)>,
    },
}

impl Startup {
    /// The value of a StartupMessage parameter (`user`, `database`, …);
    /// `None` for other packets or an absent name. Names are case-sensitive,
    /// as the server treats them.
    pub fn param(&self, name: &str) -> Option<&str> {
        match self {
            Startup::Message { params, .. } => params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str()),
            _ => None,
        }
    }
}

/// Reads one startup-phase packet off the front of `buf`.
///
/// Returns `Ok(None)`, consuming nothing, while the packet is incomplete. A
/// length word above [`MAX_STARTUP_LEN`] is an error at once, before the
/// rest arrives, so a hostile client cannot make the proxy buffer it.
/// StartupMessages of any 3.x version are accepted (3.0 and 3.2 exist; the
/// server answers other minors with NegotiateProtocolVersion itself);
/// versions 1.x and 2.x are [`ProtocolError::UnsupportedVersion`], and any
/// other code is [`ProtocolError::UnknownStartupCode`].
pub fn read_startup(buf: &mut BytesMut) -> Result<Option<Startup>, ProtocolError> {
    let Some(len) = be_i32(buf, 0) else {
        return Ok(None);
    };
    if len < 8 {
        return Err(ProtocolError::StartupTooShort { len });
    }
    let total = len as usize;
    if total > MAX_STARTUP_LEN {
        return Err(ProtocolError::StartupTooLong { len: total });
    }
    if buf.len() < total {
        return Ok(None);
    }
    let code = be_i32(buf, 4).unwrap_or_default();
    let packet = match code {
        SSL_REQUEST | GSSENC_REQUEST => {
            let (what, startup) = if code == SSL_REQUEST {
                ("SSLRequest", Startup::Ssl)
            } else {
                ("GSSENCRequest", Startup::GssEnc)
            };
            if total != 8 {
                return Err(ProtocolError::BadRequestLength {
                    what,
                    len: total,
                    expected: "8",
                });
            }
            buf.advance(total);
            startup
        }
        CANCEL_REQUEST => {
            if !(16..=12 + MAX_CANCEL_KEY).contains(&total) {
                return Err(ProtocolError::BadRequestLength {
                    what: "CancelRequest",
                    len: total,
                    expected: "16 to 268",
                });
            }
            let pid = be_i32(buf, 8).unwrap_or_default();
            let raw = buf.split_to(total).freeze();
            let secret = raw.slice(12..);
            Startup::Cancel { raw, pid, secret }
        }
        _ => {
            let (major, minor) = (code >> 16, code & 0xffff);
            match major {
                3 => {}
                // The retired protocols 1.0 and 2.0 (PostgreSQL 14 dropped 2.0).
                1 | 2 => return Err(ProtocolError::UnsupportedVersion { major, minor }),
                _ => return Err(ProtocolError::UnknownStartupCode(code)),
            }
            let params = startup_params(&buf[8..total])?;
            let raw = buf.split_to(total).freeze();
            Startup::Message {
                raw,
                version: code,
                params,
            }
        }
    };
    Ok(Some(packet))
}

/// Parses `name\0value\0 … \0`, which must end exactly at the terminator.
fn startup_params(body: &[u8]) -> Result<Vec<(String, String)>, ProtocolError> {
    const WHAT: &str = "StartupMessage";
    let mut r = Reader::new(body, WHAT);
    let mut params = Vec::new();
    loop {
        match r.rest().first() {
            None => return Err(ProtocolError::Unterminated(WHAT)),
            Some(0) => {
                r.pos += 1;
                r.finish()?;
                return Ok(params);
            }
            Some(_) => {}
        }
        let name = r.cstr()?;
        if r.rest().is_empty() {
            return Err(ProtocolError::MissingValue(name.to_owned()));
        }
        let value = r.cstr()?;
        params.push((name.to_owned(), value.to_owned()));
    }
}

/// Which peer sent a frame; it decides what a type byte means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client.
    Frontend,
    /// The server.
    Backend,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Frontend => "frontend",
            Side::Backend => "backend",
        })
    }
}

impl Side {
    /// Whether this side ever sends a frame with type byte `tag`.
    pub fn sends(self, tag: u8) -> bool {
        match self {
            Side::Frontend => FRONTEND_TAGS.contains(&tag),
            Side::Backend => BACKEND_TAGS.contains(&tag),
        }
    }
}

/// A whole message: type byte, length word and body, kept as the raw bytes
/// so it can be forwarded unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The type byte, `raw[0]`.
    pub tag: u8,
    /// The whole message, type byte included.
    pub raw: Bytes,
}

impl Frame {
    /// The body after the type byte and length word (empty if `raw` was
    /// built by hand shorter than a header).
    pub fn body(&self) -> &[u8] {
        self.raw.get(5..).unwrap_or_default()
    }
}

/// Reads one frame sent by `side` off the front of `buf`.
///
/// Returns `Ok(None)`, consuming nothing, while the frame is incomplete. The
/// type byte is checked as soon as it arrives and the length as soon as the
/// header is there (it must be at least 4 and at most `max`; callers pass
/// [`MAX_FRAME_LEN`]), so a bad stream fails before anything is buffered.
pub fn read_frame(
    buf: &mut BytesMut,
    side: Side,
    max: usize,
) -> Result<Option<Frame>, ProtocolError> {
    let Some(&tag) = buf.first() else {
        return Ok(None);
    };
    if !side.sends(tag) {
        return Err(ProtocolError::BadFrameType {
            tag: Tag(tag),
            side,
        });
    }
    let Some(len) = be_i32(buf, 1) else {
        return Ok(None);
    };
    if len < 4 {
        return Err(ProtocolError::FrameTooShort { tag: Tag(tag), len });
    }
    let len = len as usize;
    if len > max {
        return Err(ProtocolError::FrameTooLong {
            tag: Tag(tag),
            len,
            max,
        });
    }
    if buf.len() < len + 1 {
        return Ok(None);
    }
    let raw = buf.split_to(len + 1).freeze();
    Ok(Some(Frame { tag, raw }))
}

/// How many more bytes the frame at the front of `buf` needs, so a caller
/// can reserve them in one go. 0 when a whole frame is there, and also when
/// it cannot be known yet (fewer than 5 bytes) or the length word is invalid
/// ([`read_frame`] reports that).
pub fn frame_missing(buf: &[u8]) -> usize {
    match be_i32(buf, 1) {
        Some(len) if len >= 4 => (len as usize + 1).saturating_sub(buf.len()),
        _ => 0,
    }
}

/// The SQL text of a Query (`Q`) frame.
pub fn query_text(f: &Frame) -> Result<&str, ProtocolError> {
    let mut r = body_of(f, b'Q', "Query")?;
    let sql = r.cstr()?;
    r.finish()?;
    Ok(sql)
}

/// The names a Parse (`P`) frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseMsg<'a> {
    /// The prepared statement's name; empty for the unnamed statement.
    pub statement: &'a str,
    /// The SQL text.
    pub query: &'a str,
}

/// The statement name and SQL of a Parse (`P`) frame. Only these two fields
/// are checked; the parameter types that follow are the server's to check.
pub fn parse_msg(f: &Frame) -> Result<ParseMsg<'_>, ProtocolError> {
    let mut r = body_of(f, b'P', "Parse")?;
    let statement = r.cstr()?;
    let query = r.cstr()?;
    Ok(ParseMsg { statement, query })
}

/// The names a Bind (`B`) frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindMsg<'a> {
    /// The destination portal; empty for the unnamed portal.
    pub portal: &'a str,
    /// The source prepared statement; empty for the unnamed statement.
    pub statement: &'a str,
}

/// The portal and statement names of a Bind (`B`) frame. Only these two are
/// checked; parameter values, which may be large, are left alone.
pub fn bind_msg(f: &Frame) -> Result<BindMsg<'_>, ProtocolError> {
    let mut r = body_of(f, b'B', "Bind")?;
    let portal = r.cstr()?;
    let statement = r.cstr()?;
    Ok(BindMsg { portal, statement })
}

/// The portal name of a frontend Execute (`E`) frame.
pub fn execute_portal(f: &Frame) -> Result<&str, ProtocolError> {
    let mut r = body_of(f, b'E', "Execute")?;
    let portal = r.cstr()?;
    r.i32()?;
    r.finish()?;
    Ok(portal)
}

/// What a Describe or Close names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A prepared statement (`S`).
    Statement,
    /// A portal (`P`).
    Portal,
}

impl Target {
    fn byte(self) -> u8 {
        match self {
            Target::Statement => b'S',
            Target::Portal => b'P',
        }
    }
}

/// The target of a frontend Describe (`D`) or Close (`C`) frame.
pub fn describe_or_close(f: &Frame) -> Result<(Target, &str), ProtocolError> {
    let what = match f.tag {
        b'D' => "Describe",
        b'C' => "Close",
        other => {
            return Err(ProtocolError::WrongType {
                expected: "Describe or Close",
                actual: Tag(other),
            });
        }
    };
    let mut r = body_of(f, f.tag, what)?;
    let target = match r.u8()? {
        b'S' => Target::Statement,
        b'P' => Target::Portal,
        other => {
            return Err(ProtocolError::BadField {
                what: "Describe/Close target",
                value: Tag(other),
            });
        }
    };
    let name = r.cstr()?;
    r.finish()?;
    Ok((target, name))
}

/// The transaction status of a ReadyForQuery (`Z`) frame: `b'I'` idle,
/// `b'T'` in a transaction block, `b'E'` in a failed one.
pub fn ready_status(f: &Frame) -> Result<u8, ProtocolError> {
    let mut r = body_of(f, b'Z', "ReadyForQuery")?;
    let status = r.u8()?;
    if !matches!(status, b'I' | b'T' | b'E') {
        return Err(ProtocolError::BadField {
            what: "ReadyForQuery status",
            value: Tag(status),
        });
    }
    r.finish()?;
    Ok(status)
}

/// The tag of a backend CommandComplete (`C`) frame, e.g. `UPDATE 1`.
pub fn command_tag(f: &Frame) -> Result<&str, ProtocolError> {
    let mut r = body_of(f, b'C', "CommandComplete")?;
    let tag = r.cstr()?;
    r.finish()?;
    Ok(tag)
}

/// The fields of a backend ErrorResponse (`E`) or NoticeResponse (`N`), in
/// wire order, as (field code, value).
pub fn error_fields(f: &Frame) -> Result<Vec<(u8, String)>, ProtocolError> {
    Ok(borrowed_fields(f)?
        .into_iter()
        .map(|(c, v)| (c, v.to_owned()))
        .collect())
}

fn borrowed_fields(f: &Frame) -> Result<Vec<(u8, &str)>, ProtocolError> {
    let what = match f.tag {
        b'E' => "ErrorResponse",
        b'N' => "NoticeResponse",
        other => {
            return Err(ProtocolError::WrongType {
                expected: "ErrorResponse or NoticeResponse",
                actual: Tag(other),
            });
        }
    };
    let mut r = body_of(f, f.tag, what)?;
    let mut fields = Vec::new();
    loop {
        let code = r.u8()?;
        if code == 0 {
            r.finish()?;
            return Ok(fields);
        }
        fields.push((code, r.cstr()?));
    }
}

/// The process id and secret key of a BackendKeyData (`K`) frame; the
/// secret is 4 bytes in protocol 3.0 and up to 256 in 3.2.
pub fn backend_key(f: &Frame) -> Result<(i32, Bytes), ProtocolError> {
    let mut r = body_of(f, b'K', "BackendKeyData")?;
    let pid = r.i32()?;
    let secret_len = r.rest().len();
    if !(4..=MAX_CANCEL_KEY).contains(&secret_len) {
        return Err(ProtocolError::BadRequestLength {
            what: "BackendKeyData secret",
            len: secret_len,
            expected: "4 to 256",
        });
    }
    Ok((pid, f.raw.slice(f.raw.len() - secret_len..)))
}

/// An ErrorResponse (`E`) with these fields in this order.
pub fn error_response(fields: &[(u8, &str)]) -> Bytes {
    fields_frame(b'E', fields)
}

/// A ReadyForQuery (`Z`) with this status byte (`b'I'`, `b'T'` or `b'E'`).
pub fn ready_for_query(status: u8) -> Bytes {
    build(b'Z', |b| b.put_u8(status))
}

/// A simple Query (`Q`).
pub fn query(sql: &str) -> Bytes {
    build(b'Q', |b| put_cstr(b, sql))
}

/// A Parse (`P`) declaring no parameter types.
pub fn parse(statement: &str, query: &str) -> Bytes {
    build(b'P', |b| {
        put_cstr(b, statement);
        put_cstr(b, query);
        b.put_i16(0);
    })
}

/// A Bind (`B`) with no parameters and no result format codes (all text).
pub fn bind(portal: &str, statement: &str) -> Bytes {
    build(b'B', |b| {
        put_cstr(b, portal);
        put_cstr(b, statement);
        b.put_i16(0); // parameter format codes
        b.put_i16(0); // parameter values
        b.put_i16(0); // result format codes
    })
}

/// An Execute (`E`); `max_rows` 0 means no limit.
pub fn execute(portal: &str, max_rows: i32) -> Bytes {
    build(b'E', |b| {
        put_cstr(b, portal);
        b.put_i32(max_rows);
    })
}

/// A Close (`C`) of a statement or portal.
pub fn close(target: Target, name: &str) -> Bytes {
    build(b'C', |b| {
        b.put_u8(target.byte());
        put_cstr(b, name);
    })
}

/// An ErrorResponse shaped like a real PostgreSQL 15 server's: `S`, `V`,
/// `C`, `M`, then `D` and `H` when given (the server's order; it adds
/// `F`/`L`/`R`, which are build-specific and left out). Drivers match on
/// `C` and on the `M` text, so pass the server's exact words (see
/// [`super::sqlstate`]).
pub fn server_error(
    severity: &str,
    sqlstate: &str,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) -> Bytes {
    let mut fields = vec![
        (b'S', severity),
        (b'V', severity),
        (b'C', sqlstate),
        (b'M', message),
    ];
    fields.extend(detail.map(|d| (b'D', d)));
    fields.extend(hint.map(|h| (b'H', h)));
    error_response(&fields)
}

/// Rebuilds an ErrorResponse or NoticeResponse without the fields whose
/// codes are in `drop` (e.g. `b"FLR"` to hide the server's source location),
/// keeping the rest in order and the frame's type.
pub fn strip_error_fields(f: &Frame, drop: &[u8]) -> Result<Bytes, ProtocolError> {
    let kept: Vec<(u8, &str)> = borrowed_fields(f)?
        .into_iter()
        .filter(|(c, _)| !drop.contains(c))
        .collect();
    Ok(fields_frame(f.tag, &kept))
}

fn fields_frame(tag: u8, fields: &[(u8, &str)]) -> Bytes {
    build(tag, |b| {
        for &(code, value) in fields {
            // A 0 code would end the list early; it has no meaning anyway.
            if code != 0 {
                b.put_u8(code);
                put_cstr(b, value);
            }
        }
        b.put_u8(0);
    })
}

/// Builds a frame: type byte, length word patched in after `body` wrote.
fn build(tag: u8, body: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    b.put_u8(tag);
    b.put_i32(0);
    body(&mut b);
    let len = i32::try_from(b.len() - 1).unwrap_or(i32::MAX);
    b[1..5].copy_from_slice(&len.to_be_bytes());
    b.freeze()
}

/// Writes `s` as a C string. A NUL inside `s` would end the string early on
/// the wire and shift every later field, so `s` is cut at its first NUL.
fn put_cstr(b: &mut BytesMut, s: &str) {
    let s = s.split('\0').next().unwrap_or_default();
    b.put_slice(s.as_bytes());
    b.put_u8(0);
}

/// A big-endian i32 at `at`, if the bytes are there.
fn be_i32(buf: &[u8], at: usize) -> Option<i32> {
    let bytes: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
    Some(i32::from_be_bytes(bytes))
}

/// Checks the type and returns a reader over the body.
fn body_of<'a>(f: &'a Frame, tag: u8, what: &'static str) -> Result<Reader<'a>, ProtocolError> {
    if f.tag != tag {
        return Err(ProtocolError::WrongType {
            expected: what,
            actual: Tag(f.tag),
        });
    }
    Ok(Reader::new(f.body(), what))
}

/// A cursor over a message body; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    fn cstr(&mut self) -> Result<&'a str, ProtocolError> {
        let rest = self.rest();
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(ProtocolError::Unterminated(self.what))?;
        let s =
            std::str::from_utf8(&rest[..end]).map_err(|_| ProtocolError::InvalidUtf8(self.what))?;
        self.pos += end + 1;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, ProtocolError> {
        let b = *self
            .rest()
            .first()
            .ok_or(ProtocolError::Truncated(self.what))?;
        self.pos += 1;
        Ok(b)
    }

    fn i32(&mut self) -> Result<i32, ProtocolError> {
        let v = be_i32(self.rest(), 0).ok_or(ProtocolError::Truncated(self.what))?;
        self.pos += 4;
        Ok(v)
    }

    fn finish(&self) -> Result<(), ProtocolError> {
        if self.rest().is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::TrailingBytes(self.what))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Reads the single frame `bytes` holds, checking nothing is left over.
    fn frame_of(bytes: &[u8], side: Side) -> Frame {
        let mut buf = BytesMut::from(bytes);
        let f = read_frame(&mut buf, side, MAX_FRAME_LEN)
            .expect("valid frame")
            .expect("whole frame");
        assert!(buf.is_empty());
        f
    }

    /// A hand-made frame with any tag and body, length computed.
    fn raw_frame(tag: u8, body: &[u8]) -> Frame {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        Frame {
            tag,
            raw: Bytes::from(v),
        }
    }

    fn startup_packet(code: i32, rest: &[u8]) -> Vec<u8> {
        let mut v = ((rest.len() + 8) as i32).to_be_bytes().to_vec();
        v.extend_from_slice(&code.to_be_bytes());
        v.extend_from_slice(rest);
        v
    }

    fn read_one_startup(bytes: &[u8]) -> Result<Option<Startup>, ProtocolError> {
        read_startup(&mut BytesMut::from(bytes))
    }

    // ---- startup ----

    #[test]
    fn ssl_and_gssenc_requests() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&startup_packet(SSL_REQUEST, b""));
        buf.extend_from_slice(&startup_packet(GSSENC_REQUEST, b""));
        assert_eq!(read_startup(&mut buf).unwrap(), Some(Startup::Ssl));
        assert_eq!(read_startup(&mut buf).unwrap(), Some(Startup::GssEnc));
        assert!(buf.is_empty());
        // The real SSLRequest bytes libpq sends.
        let libpq = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        assert_eq!(read_one_startup(&libpq).unwrap(), Some(Startup::Ssl));
    }

    #[test]
    fn startup_message_params_in_order() {
        let body = b"user\0alice\0database\0shop\0application_name\0psql\0\0";
        let pkt = startup_packet(PROTOCOL_3_0, body);
        let s = read_one_startup(&pkt).unwrap().unwrap();
        let Startup::Message {
            raw,
            version,
            params,
        } = &s
        else {
            panic!("not a StartupMessage: {s:?}");
        };
        assert_eq!(raw.as_ref(), pkt.as_slice());
        assert_eq!(*version, PROTOCOL_3_0);
        let names: Vec<_> = params.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["user", "database", "application_name"]);
        assert_eq!(s.param("user"), Some("alice"));
        assert_eq!(s.param("database"), Some("shop"));
        assert_eq!(s.param("options"), None);
        assert_eq!(Startup::Ssl.param("user"), None);
    }

    #[test]
    fn startup_message_3_2_and_no_params() {
        let s = read_one_startup(&startup_packet(PROTOCOL_3_2, b"\0"))
            .unwrap()
            .unwrap();
        assert!(
            matches!(s, Startup::Message { version: PROTOCOL_3_2, ref params, .. } if params.is_empty())
        );
    }

    #[test]
    fn cancel_request_3_0_and_3_2() {
        let mut rest = 4242i32.to_be_bytes().to_vec();
        rest.extend_from_slice(&(-1546182369i32).to_be_bytes());
        let pkt = startup_packet(CANCEL_REQUEST, &rest);
        assert_eq!(pkt.len(), 16);
        let Some(Startup::Cancel { raw, pid, secret }) = read_one_startup(&pkt).unwrap() else {
            panic!("not a cancel");
        };
        assert_eq!(raw.as_ref(), pkt.as_slice());
        assert_eq!(pid, 4242);
        assert_eq!(secret.as_ref(), (-1546182369i32).to_be_bytes());

        // 3.2: a 32-byte key.
        let mut rest = 7i32.to_be_bytes().to_vec();
        rest.extend_from_slice(&[0xab; 32]);
        let pkt = startup_packet(CANCEL_REQUEST, &rest);
        let Some(Startup::Cancel { pid, secret, .. }) = read_one_startup(&pkt).unwrap() else {
            panic!("not a cancel");
        };
        assert_eq!((pid, secret.len()), (7, 32));
    }

    #[test]
    fn startup_byte_by_byte_consumes_nothing_until_whole() {
        let first = startup_packet(PROTOCOL_3_0, b"user\0bob\0\0");
        let second = startup_packet(SSL_REQUEST, b"");
        let all: Vec<u8> = first.iter().chain(&second).copied().collect();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in &all {
            buf.put_u8(b);
            let before = buf.len();
            match read_startup(&mut buf).unwrap() {
                Some(s) => got.push(s),
                None => assert_eq!(buf.len(), before),
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].param("user"), Some("bob"));
        assert_eq!(got[1], Startup::Ssl);
        assert!(buf.is_empty());
    }

    #[test]
    fn malformed_startup_packets() {
        let e = |b: &[u8]| read_one_startup(b).unwrap_err().to_string();
        assert_eq!(e(&[0, 0, 0, 4]), "startup packet length 4 is below 8");
        assert_eq!(
            e(&[0xff, 0xff, 0xff, 0xff]),
            "startup packet length -1 is below 8"
        );
        let mut big = 20_000i32.to_be_bytes().to_vec();
        big.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
        assert_eq!(e(&big), "startup packet of 20000 bytes exceeds 10000");
        // Exactly at the limit is fine (still incomplete here).
        let mut at = 10_000i32.to_be_bytes().to_vec();
        at.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
        assert_eq!(read_one_startup(&at).unwrap(), None);
        assert_eq!(e(&startup_packet(1234, b"")), "unknown startup code 1234");
        assert_eq!(
            e(&startup_packet(1234 << 16 | 5681, b"")),
            format!("unknown startup code {}", 1234 << 16 | 5681)
        );
        assert_eq!(
            e(&startup_packet(2 << 16, b"\0")),
            "unsupported protocol version 2.0"
        );
        assert_eq!(
            e(&startup_packet(4 << 16, b"\0")),
            format!("unknown startup code {}", 4 << 16)
        );
        assert_eq!(
            e(&startup_packet(SSL_REQUEST, b"xxxx")),
            "SSLRequest of 12 bytes, expected 8"
        );
        assert_eq!(
            e(&startup_packet(CANCEL_REQUEST, b"\0\0\0\x01")),
            "CancelRequest of 12 bytes, expected 16 to 268"
        );
        assert_eq!(
            e(&startup_packet(PROTOCOL_3_0, b"user\0bob\0")),
            "unterminated string in StartupMessage"
        );
        assert_eq!(
            e(&startup_packet(PROTOCOL_3_0, b"user\0bob")),
            "unterminated string in StartupMessage"
        );
        assert_eq!(
            e(&startup_packet(PROTOCOL_3_0, b"user\0")),
            "startup parameter \"user\" has no value"
        );
        assert_eq!(
            e(&startup_packet(PROTOCOL_3_0, b"user\0\xff\0\0")),
            "invalid UTF-8 in StartupMessage"
        );
        assert_eq!(
            e(&startup_packet(PROTOCOL_3_0, b"\0junk")),
            "trailing bytes after StartupMessage"
        );
        assert_eq!(
            e(&startup_packet(PROTOCOL_3_0, b"")),
            "unterminated string in StartupMessage"
        );
        // Truncated packets are just incomplete.
        let pkt = startup_packet(PROTOCOL_3_0, b"user\0bob\0\0");
        for cut in 0..pkt.len() {
            assert_eq!(read_one_startup(&pkt[..cut]).unwrap(), None, "cut {cut}");
        }
    }

    #[test]
    fn startup_error_consumes_nothing() {
        let pkt = startup_packet(1234, b"");
        let mut buf = BytesMut::from(&pkt[..]);
        assert!(read_startup(&mut buf).is_err());
        assert_eq!(buf.len(), pkt.len());
    }

    // ---- framing ----

    #[test]
    fn frames_byte_by_byte() {
        let stream: Vec<u8> = [
            query("SELECT 1"),
            parse("s1", "SELECT $1"),
            bind("p1", "s1"),
            execute("p1", 0),
            close(Target::Portal, "p1"),
            Bytes::from_static(b"S\0\0\0\x04"),
        ]
        .concat();
        let mut buf = BytesMut::new();
        let mut tags = Vec::new();
        for &b in &stream {
            buf.put_u8(b);
            let missing = frame_missing(&buf);
            let before = buf.len();
            match read_frame(&mut buf, Side::Frontend, MAX_FRAME_LEN).unwrap() {
                Some(f) => {
                    assert_eq!(missing, 0);
                    tags.push(f.tag);
                }
                None => {
                    assert_eq!(buf.len(), before);
                    if before >= 5 {
                        assert!(missing > 0);
                    }
                }
            }
        }
        assert_eq!(tags, b"QPBECS");
        assert!(buf.is_empty());
    }

    #[test]
    fn frame_missing_counts() {
        assert_eq!(frame_missing(b""), 0);
        assert_eq!(frame_missing(b"Q\0\0"), 0);
        assert_eq!(frame_missing(b"Q\0\0\0\x0aab"), 4);
        assert_eq!(frame_missing(b"Q\0\0\0\x04"), 0);
        assert_eq!(frame_missing(b"Q\0\0\0\x04extra"), 0);
        assert_eq!(frame_missing(b"Q\xff\xff\xff\xff"), 0);
        assert_eq!(frame_missing(b"Q\0\0\0\x02"), 0);
    }

    #[test]
    fn frame_errors() {
        let e = |b: &[u8], side: Side, max: usize| {
            read_frame(&mut BytesMut::from(b), side, max)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            e(b"Q\0\0\0\x03", Side::Frontend, MAX_FRAME_LEN),
            "frame length 3 is below 4 (type 'Q')"
        );
        assert_eq!(
            e(b"Q\xff\xff\xff\xff", Side::Frontend, MAX_FRAME_LEN),
            "frame length -1 is below 4 (type 'Q')"
        );
        assert_eq!(
            e(b"Q\x40\0\0\0", Side::Frontend, MAX_FRAME_LEN),
            format!(
                "frame length {} exceeds {} (type 'Q')",
                0x4000_0000, MAX_FRAME_LEN
            )
        );
        assert_eq!(
            e(b"D\0\0\0\x64", Side::Backend, 50),
            "frame length 100 exceeds 50 (type 'D')"
        );
        assert_eq!(
            e(b"x", Side::Frontend, MAX_FRAME_LEN),
            "frame type 'x' is not a valid frontend message"
        );
        assert_eq!(
            e(b"\0", Side::Backend, MAX_FRAME_LEN),
            "frame type 0x00 is not a valid backend message"
        );
        // Direction matters: 'Z' only from the server, 'Q' only from the client.
        assert!(read_frame(&mut BytesMut::from(&b"Z"[..]), Side::Frontend, 9).is_err());
        assert!(read_frame(&mut BytesMut::from(&b"Q"[..]), Side::Backend, 9).is_err());
        // Every table entry is accepted by its side.
        for &t in FRONTEND_TAGS {
            let f = frame_of(&[t, 0, 0, 0, 4], Side::Frontend);
            assert_eq!(f.tag, t);
            assert!(f.body().is_empty());
        }
        for &t in BACKEND_TAGS {
            frame_of(&[t, 0, 0, 0, 4], Side::Backend);
        }
        // A length exactly at max is fine.
        assert!(
            read_frame(&mut BytesMut::from(&b"D\0\0\0\x32"[..]), Side::Backend, 50)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn frame_error_consumes_nothing() {
        let mut buf = BytesMut::from(&b"Q\0\0\0\x02rest"[..]);
        assert!(read_frame(&mut buf, Side::Frontend, MAX_FRAME_LEN).is_err());
        assert_eq!(buf.len(), 9);
    }

    #[test]
    fn hand_built_short_frame_body_is_empty() {
        let f = Frame {
            tag: b'Q',
            raw: Bytes::from_static(b"Q"),
        };
        assert!(f.body().is_empty());
        assert_eq!(
            query_text(&f).unwrap_err().to_string(),
            "unterminated string in Query"
        );
    }

    // ---- builders through readers ----

    #[test]
    fn query_round_trip() {
        let bytes = query("SELECT 'é', 1");
        assert_eq!(&bytes[..5], b"Q\0\0\0\x13");
        let f = frame_of(&bytes, Side::Frontend);
        assert_eq!(query_text(&f).unwrap(), "SELECT 'é', 1");
        assert_eq!(
            query_text(&frame_of(&query(""), Side::Frontend)).unwrap(),
            ""
        );
    }

    #[test]
    fn parse_bind_execute_close_round_trip() {
        let f = frame_of(&parse("s1", "SELECT $1"), Side::Frontend);
        assert_eq!(
            parse_msg(&f).unwrap(),
            ParseMsg {
                statement: "s1",
                query: "SELECT $1"
            }
        );
        let f = frame_of(&bind("", "s1"), Side::Frontend);
        assert_eq!(f.raw.as_ref(), b"B\0\0\0\x0e\0s1\0\0\0\0\0\0\0");
        assert_eq!(
            bind_msg(&f).unwrap(),
            BindMsg {
                portal: "",
                statement: "s1"
            }
        );
        let f = frame_of(&execute("p", 10), Side::Frontend);
        assert_eq!(f.raw.as_ref(), b"E\0\0\0\x0ap\0\0\0\0\x0a");
        assert_eq!(execute_portal(&f).unwrap(), "p");
        let f = frame_of(&close(Target::Statement, "s1"), Side::Frontend);
        assert_eq!(describe_or_close(&f).unwrap(), (Target::Statement, "s1"));
        let f = frame_of(&close(Target::Portal, ""), Side::Frontend);
        assert_eq!(describe_or_close(&f).unwrap(), (Target::Portal, ""));
        let f = frame_of(b"D\0\0\0\x08Sab\0", Side::Frontend);
        assert_eq!(describe_or_close(&f).unwrap(), (Target::Statement, "ab"));
    }

    #[test]
    fn bind_with_parameters_reads_the_names() {
        // pgbench-style Bind: 1 text param "42", 1 result format code.
        let mut body = b"\0stmt\0".to_vec();
        body.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2, b'4', b'2', 0, 1, 0, 0]);
        let f = raw_frame(b'B', &body);
        assert_eq!(
            bind_msg(&f).unwrap(),
            BindMsg {
                portal: "",
                statement: "stmt"
            }
        );
    }

    #[test]
    fn ready_for_query_round_trip() {
        for s in [b'I', b'T', b'E'] {
            let bytes = ready_for_query(s);
            assert_eq!(bytes.as_ref(), [b'Z', 0, 0, 0, 5, s]);
            assert_eq!(ready_status(&frame_of(&bytes, Side::Backend)).unwrap(), s);
        }
        let bad = frame_of(&ready_for_query(b'X'), Side::Backend);
        assert_eq!(
            ready_status(&bad).unwrap_err().to_string(),
            "invalid ReadyForQuery status 'X'"
        );
    }

    #[test]
    fn command_tag_and_backend_key() {
        let f = frame_of(b"C\0\0\0\x0dUPDATE 1\0", Side::Backend);
        assert_eq!(command_tag(&f).unwrap(), "UPDATE 1");
        // Captured: BackendKeyData(pid=26559, secret=-1546182369).
        let mut body = 26559i32.to_be_bytes().to_vec();
        body.extend_from_slice(&(-1546182369i32).to_be_bytes());
        let f = raw_frame(b'K', &body);
        let (pid, secret) = backend_key(&f).unwrap();
        assert_eq!(pid, 26559);
        assert_eq!(secret.as_ref(), (-1546182369i32).to_be_bytes());
        // 3.2: 32-byte key.
        let mut body = 1i32.to_be_bytes().to_vec();
        body.extend_from_slice(&[9; 32]);
        assert_eq!(backend_key(&raw_frame(b'K', &body)).unwrap().1.len(), 32);
        for n in [0usize, 3, 257] {
            let mut body = 1i32.to_be_bytes().to_vec();
            body.extend(std::iter::repeat_n(0, n));
            assert!(backend_key(&raw_frame(b'K', &body)).is_err(), "{n}");
        }
        assert_eq!(
            backend_key(&raw_frame(b'K', b"\0\0"))
                .unwrap_err()
                .to_string(),
            "truncated BackendKeyData"
        );
    }

    #[test]
    fn captured_57p01_fatal_exact_bytes() {
        let msg = "terminating connection due to administrator command";
        let bytes = server_error("FATAL", "57P01", msg, None, None);
        let mut body = Vec::new();
        for (c, v) in [
            (b'S', "FATAL"),
            (b'V', "FATAL"),
            (b'C', "57P01"),
            (b'M', msg),
        ] {
            body.push(c);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        assert_eq!(bytes[0], b'E');
        assert_eq!(&bytes[1..5], &((body.len() + 4) as i32).to_be_bytes());
        assert_eq!(&bytes[5..], body.as_slice());
        let f = frame_of(&bytes, Side::Backend);
        assert_eq!(
            error_fields(&f).unwrap(),
            vec![
                (b'S', "FATAL".to_owned()),
                (b'V', "FATAL".to_owned()),
                (b'C', "57P01".to_owned()),
                (b'M', msg.to_owned()),
            ]
        );
    }

    #[test]
    fn server_error_orders_detail_and_hint_like_pg() {
        let bytes = server_error(
            "ERROR",
            "40P01",
            "deadlock detected",
            Some("Process 1 waits for ShareLock on transaction 2; blocked by process 3."),
            Some("See server log for query details."),
        );
        let f = frame_of(&bytes, Side::Backend);
        let codes: Vec<u8> = error_fields(&f).unwrap().iter().map(|(c, _)| *c).collect();
        assert_eq!(codes, b"SVCMDH");
        let only_hint = server_error("ERROR", "XX000", "m", None, Some("h"));
        let codes: Vec<u8> = error_fields(&frame_of(&only_hint, Side::Backend))
            .unwrap()
            .iter()
            .map(|(c, _)| *c)
            .collect();
        assert_eq!(codes, b"SVCMH");
    }

    #[test]
    fn strip_fields_keeps_order_and_type() {
        // Shaped like the captured 40P01 deadlock error.
        let captured = error_response(&[
            (b'S', "ERROR"),
            (b'V', "ERROR"),
            (b'C', "40P01"),
            (b'M', "deadlock detected"),
            (
                b'D',
                "Process 26565 waits for ShareLock on transaction 264367; blocked by process 26566.\nProcess 26566 waits for ShareLock on transaction 264366; blocked by process 26565.",
            ),
            (b'H', "See server log for query details."),
            (b'W', "while updating tuple (0,2) in relation \"fi_t\""),
            (b'F', "deadlock.c"),
            (b'L', "1147"),
            (b'R', "DeadLockReport"),
        ]);
        let f = frame_of(&captured, Side::Backend);
        let stripped = strip_error_fields(&f, b"WFLR").unwrap();
        let g = frame_of(&stripped, Side::Backend);
        assert_eq!(g.tag, b'E');
        let codes: Vec<u8> = error_fields(&g).unwrap().iter().map(|(c, _)| *c).collect();
        assert_eq!(codes, b"SVCMDH");
        assert_eq!(strip_error_fields(&f, b"").unwrap(), f.raw);
        // Notices keep their type.
        let n = raw_frame(b'N', b"SNOTICE\0Mhi\0Ffile.c\0\0");
        let s = strip_error_fields(&n, b"F").unwrap();
        assert_eq!(s.as_ref(), b"N\0\0\0\x11SNOTICE\0Mhi\0\0");
        assert!(strip_error_fields(&raw_frame(b'Z', b"I"), b"F").is_err());
    }

    #[test]
    fn builders_cut_strings_at_nul() {
        let f = frame_of(&query("SELECT 1\0; DROP TABLE t"), Side::Frontend);
        assert_eq!(query_text(&f).unwrap(), "SELECT 1");
        let e = error_response(&[(b'M', "a\0b"), (0, "ignored"), (b'C', "XX000")]);
        let f = frame_of(&e, Side::Backend);
        assert_eq!(
            error_fields(&f).unwrap(),
            vec![(b'M', "a".to_owned()), (b'C', "XX000".to_owned())]
        );
    }

    // ---- malformed bodies ----

    #[test]
    fn malformed_bodies() {
        let err = |r: Result<(), ProtocolError>| r.unwrap_err().to_string();
        assert_eq!(
            err(query_text(&raw_frame(b'Q', b"SELECT 1")).map(drop)),
            "unterminated string in Query"
        );
        assert_eq!(
            err(query_text(&raw_frame(b'Q', b"SELECT \xff\0")).map(drop)),
            "invalid UTF-8 in Query"
        );
        assert_eq!(
            err(query_text(&raw_frame(b'Q', b"SELECT 1\0x")).map(drop)),
            "trailing bytes after Query"
        );
        assert_eq!(
            err(query_text(&raw_frame(b'P', b"\0SELECT 1\0\0\0")).map(drop)),
            "expected a Query frame, got 'P'"
        );
        assert_eq!(
            err(parse_msg(&raw_frame(b'P', b"s1\0SELECT")).map(drop)),
            "unterminated string in Parse"
        );
        assert_eq!(
            err(bind_msg(&raw_frame(b'B', b"p\0")).map(drop)),
            "unterminated string in Bind"
        );
        assert_eq!(
            err(execute_portal(&raw_frame(b'E', b"p\0\0\0")).map(drop)),
            "truncated Execute"
        );
        assert_eq!(
            err(execute_portal(&raw_frame(b'E', b"p\0\0\0\0\0\0")).map(drop)),
            "trailing bytes after Execute"
        );
        assert_eq!(
            err(describe_or_close(&raw_frame(b'D', b"Xa\0")).map(drop)),
            "invalid Describe/Close target 'X'"
        );
        assert_eq!(
            err(describe_or_close(&raw_frame(b'C', b"")).map(drop)),
            "truncated Close"
        );
        assert_eq!(
            err(describe_or_close(&raw_frame(b'Q', b"")).map(drop)),
            "expected a Describe or Close frame, got 'Q'"
        );
        assert_eq!(
            err(ready_status(&raw_frame(b'Z', b"")).map(drop)),
            "truncated ReadyForQuery"
        );
        assert_eq!(
            err(ready_status(&raw_frame(b'Z', b"II")).map(drop)),
            "trailing bytes after ReadyForQuery"
        );
        assert_eq!(
            err(command_tag(&raw_frame(b'C', b"SELECT 1")).map(drop)),
            "unterminated string in CommandComplete"
        );
        assert_eq!(
            err(error_fields(&raw_frame(b'E', b"SERROR\0")).map(drop)),
            "truncated ErrorResponse"
        );
        assert_eq!(
            err(error_fields(&raw_frame(b'E', b"SERROR")).map(drop)),
            "unterminated string in ErrorResponse"
        );
        assert_eq!(
            err(error_fields(&raw_frame(b'N', b"\0\0")).map(drop)),
            "trailing bytes after NoticeResponse"
        );
        assert_eq!(
            err(error_fields(&raw_frame(b'Z', b"I")).map(drop)),
            "expected a ErrorResponse or NoticeResponse frame, got 'Z'"
        );
        assert_eq!(error_fields(&raw_frame(b'E', b"\0")).unwrap(), vec![]);
    }

    // ---- never panic ----

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
        let frontend = FRONTEND_TAGS;
        let backend = BACKEND_TAGS;
        for round in 0..20_000 {
            let n = rng.random_range(0..40usize);
            let mut bytes: Vec<u8> = (0..n).map(|_| rng.random::<u8>()).collect();
            // Bias towards plausible headers so bodies get exercised too.
            if round % 2 == 0 && n >= 5 {
                let tags = if round % 4 == 0 { frontend } else { backend };
                bytes[0] = tags[rng.random_range(0..tags.len())];
                let len = rng.random_range(0..(n as i32 + 2));
                bytes[1..5].copy_from_slice(&len.to_be_bytes());
            }
            if round % 3 == 0 && n >= 8 {
                let codes = [PROTOCOL_3_0, PROTOCOL_3_2, SSL_REQUEST, CANCEL_REQUEST];
                bytes[0..4].copy_from_slice(&(rng.random_range(0..(n as i32 + 2))).to_be_bytes());
                bytes[4..8].copy_from_slice(&codes[rng.random_range(0..4usize)].to_be_bytes());
            }
            let _ = frame_missing(&bytes);
            let _ = read_startup(&mut BytesMut::from(&bytes[..]));
            for side in [Side::Frontend, Side::Backend] {
                let mut buf = BytesMut::from(&bytes[..]);
                while let Ok(Some(f)) = read_frame(&mut buf, side, 64) {
                    exercise_accessors(&f);
                }
            }
            // Accessors on arbitrary hand-made frames, any tag.
            let tag = bytes.first().copied().unwrap_or(b'E');
            exercise_accessors(&raw_frame(tag, bytes.get(1..).unwrap_or_default()));
            exercise_accessors(&Frame {
                tag,
                raw: Bytes::from(bytes.clone()),
            });
        }
    }

    fn exercise_accessors(f: &Frame) {
        let _ = query_text(f);
        let _ = parse_msg(f);
        let _ = bind_msg(f);
        let _ = execute_portal(f);
        let _ = describe_or_close(f);
        let _ = ready_status(f);
        let _ = command_tag(f);
        let _ = error_fields(f);
        let _ = backend_key(f);
        let _ = strip_error_fields(f, b"FLR");
    }
}
