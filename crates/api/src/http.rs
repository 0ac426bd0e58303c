//! The API's HTTP/1.1, kept small: one request per connection (every answer says
//! `Connection: close`), bodies only with `Content-Length` and at most [`MAX_BODY`] bytes,
//! heads of at most [`MAX_HEAD`] bytes and 64 headers. Both ends live here: the daemon
//! reads requests and writes responses, the client (`vmnap`) the other way round.
//!
//! The heads (a request's line and headers, a response's status line and headers) are
//! parsed by the [`httparse`] crate rather than by hand: a request comes from whoever can
//! reach the socket or the TCP port, and httparse is a small, widely used parser of exactly
//! that, strict about what it accepts and fuzzed upstream. What it leaves to us is checked
//! here: the limits, the methods and paths the API takes, percent-decoding, the body.
//!
//! Untrusted bytes never panic: whatever a client sends ends in a response with a 4xx
//! status (505 for an HTTP version other than 1.0 and 1.1) and a JSON `{"error": "..."}`
//! body naming what is wrong, or in the connection being closed.

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde::Serialize;

/// The largest request body accepted, in bytes.
pub const MAX_BODY: usize = 64 * 1024;
/// The largest request line and headers accepted, in bytes, their line ends and the blank
/// line after them included.
pub const MAX_HEAD: usize = 16 * 1024;
/// The most headers a request (or a response) may carry.
const MAX_HEADERS: usize = 64;

/// A TLS session over a TCP connection, the server's end.
pub type TlsStream = rustls::StreamOwned<rustls::ServerConnection, TcpStream>;

/// A connection on either listener.
#[derive(Debug)]
pub enum Conn {
    /// On the unix socket.
    Unix(UnixStream),
    /// On the TCP listener, without TLS.
    Tcp(TcpStream),
    /// On the TCP listener, in TLS. The handshake happens on the first read or write,
    /// under the same timeouts and deadline as the request.
    Tls(Box<TlsStream>),
}

impl Conn {
    /// The TCP connection under a TCP or TLS one.
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Conn::Unix(_) => None,
            Conn::Tcp(s) => Some(s),
            Conn::Tls(s) => Some(&s.sock),
        }
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match (self, self.tcp()) {
            (Conn::Unix(s), _) => s.set_read_timeout(t),
            (_, Some(s)) => s.set_read_timeout(t),
            (_, None) => Ok(()),
        }
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match (self, self.tcp()) {
            (Conn::Unix(s), _) => s.set_write_timeout(t),
            (_, Some(s)) => s.set_write_timeout(t),
            (_, None) => Ok(()),
        }
    }

    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match (self, self.tcp()) {
            (Conn::Unix(s), _) => s.set_nonblocking(on),
            (_, Some(s)) => s.set_nonblocking(on),
            (_, None) => Ok(()),
        }
    }

    /// Whether the peer has closed its end (or the connection failed), without consuming
    /// anything it sent.
    pub fn peer_gone(&self) -> bool {
        if self.set_nonblocking(true).is_err() {
            return true;
        }
        let mut byte = [0u8; 1];
        let gone = match self {
            Conn::Unix(s) => {
                // `UnixStream::peek` is unstable; a read of what a streaming client sends
                // (nothing, normally) does as well.
                (&*s).read(&mut byte)
            }
            // A TLS peer's records (a close_notify among them) are bytes too: only the
            // end of the connection under it says it has gone.
            Conn::Tcp(_) | Conn::Tls(_) => match self.tcp() {
                Some(s) => s.peek(&mut byte),
                None => Ok(0),
            },
        };
        let _ = self.set_nonblocking(false);
        match gone {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        }
    }

    pub fn shutdown_write(&mut self) {
        let _ = match self {
            Conn::Unix(s) => s.shutdown(Shutdown::Write),
            Conn::Tcp(s) => s.shutdown(Shutdown::Write),
            Conn::Tls(s) => {
                s.conn.send_close_notify();
                let _ = s.flush();
                s.sock.shutdown(Shutdown::Write)
            }
        };
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.flush(),
            Conn::Tcp(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// A request, read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, percent-decoded, without the query.
    pub path: String,
    /// The query's `key=value` pairs, percent-decoded, in order.
    pub query: Vec<(String, String)>,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body (up to [`MAX_BODY`] bytes).
    pub body: Vec<u8>,
}

impl Request {
    /// The value of header `name` (lower case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A response to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers besides `Content-Length` and `Connection`, which are always written.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// The body of every refusal.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl Response {
    /// `value` as JSON.
    pub fn json(status: u16, value: &impl Serialize) -> Self {
        let mut body = serde_json::to_vec(value).expect("API values always serialize");
        body.push(b'\n');
        Response {
            status,
            headers: vec![("Content-Type", "application/json".into())],
            body,
        }
    }

    /// `{"error": message}`.
    pub fn error(status: u16, message: impl AsRef<str>) -> Self {
        Self::json(
            status,
            &ErrorBody {
                error: message.as_ref(),
            },
        )
    }

    /// An HTML page that may load nothing from anywhere (inline styles only) and is never
    /// cached.
    pub fn html(status: u16, body: Vec<u8>) -> Self {
        Response {
            status,
            headers: vec![
                ("Content-Type", "text/html; charset=utf-8".into()),
                ("Cache-Control", "no-store".into()),
                (
                    "Content-Security-Policy",
                    "default-src 'none'; style-src 'unsafe-inline'".into(),
                ),
            ],
            body,
        }
    }

    /// The same with header `name: value` added.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// The reason phrase of the statuses the API uses.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Writes `response` and closes the sending half. Every response says
/// `X-Content-Type-Options: nosniff`: a browser takes its type as given, and never runs a
/// JSON or text body as something else.
pub fn write_response(conn: &mut Conn, response: &Response) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\nConnection: close\r\n\
         X-Content-Type-Options: nosniff\r\n",
        response.status,
        reason(response.status),
        response.body.len()
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    conn.write_all(&response.body)?;
    conn.flush()?;
    conn.shutdown_write();
    Ok(())
}

/// Writes the head of a streamed response whose body ends when the connection closes.
pub fn write_stream_head(conn: &mut Conn, content_type: &str) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nCache-Control: no-store\r\n\
         X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes())?;
    conn.flush()
}

/// A connection read against a deadline for the whole request: each read waits at most
/// until `until`, and one after it fails with [`io::ErrorKind::TimedOut`] (which
/// [`read_request`] answers with 408). A client that sends a byte a second cannot hold its
/// connection longer than that.
#[derive(Debug)]
pub struct Deadline<'a> {
    conn: &'a mut Conn,
    until: std::time::Instant,
}

impl<'a> Deadline<'a> {
    /// Reads from `conn` until `until` at the latest.
    pub fn new(conn: &'a mut Conn, until: std::time::Instant) -> Self {
        Deadline { conn, until }
    }
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self
            .until
            .saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.conn.set_read_timeout(Some(left))?;
        self.conn.read(buf)
    }
}

/// Reads one request. `Err` is the refusal to send back (`None`: the peer went away before
/// saying anything, so there is nobody to answer).
pub fn read_request(conn: &mut impl Read) -> Result<Request, Option<Response>> {
    read_request_admitted(conn, |_| Ok(()))
}

/// Reads one request like [`read_request`], but asks `admit` about it as soon as its head
/// is in, before its body is read: a refusal from `admit` is sent back at once, so that a
/// client that may not ask (no token, say) cannot make the daemon wait for, or hold, a
/// body.
pub fn read_request_admitted(
    conn: &mut impl Read,
    admit: impl FnOnce(&Request) -> Result<(), Response>,
) -> Result<Request, Option<Response>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let (head_len, mut request) = loop {
        // The whole head is parsed again after every read: httparse keeps no state between
        // calls, and a head is at most `MAX_HEAD` bytes. What is not HTTP is refused as soon
        // as its first wrong byte is in, rather than after a blank line that may never come
        // (an old `vmnap` sending one JSON line, say).
        if let Some(done) = parse_head(&buf[..buf.len().min(MAX_HEAD)]).map_err(Some)? {
            break done;
        }
        if buf.len() >= MAX_HEAD {
            return Err(Some(Response::error(
                431,
                format!("the request line and headers exceed {MAX_HEAD} bytes"),
            )));
        }
        match conn.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Err(None),
            Ok(0) => {
                return Err(Some(Response::error(
                    400,
                    "the request ended before its headers did (want a blank line after them)",
                )))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Some(Response::error(
                    408,
                    "the request did not arrive in time",
                )))
            }
            Err(_) => return Err(None),
        }
    };
    admit(&request).map_err(Some)?;
    let bad = |m: String| Some(Response::error(400, m));
    if request.header("transfer-encoding").is_some() {
        return Err(Some(Response::error(
            411,
            "send the body with Content-Length; chunked bodies are not accepted",
        )));
    }
    let mut length: Option<usize> = None;
    for (_, v) in request
        .headers
        .iter()
        .filter(|(n, _)| n == "content-length")
    {
        // Digits only (RFC 9110, 8.6): Rust's parse would also take a leading `+`.
        let n: usize = v
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| v.parse().ok())
            .flatten()
            .ok_or_else(|| bad(format!("`{}` is not a Content-Length", printable(v))))?;
        if length.is_some_and(|l| l != n) {
            return Err(bad("conflicting Content-Length headers".into()));
        }
        length = Some(n);
    }
    let length = length.unwrap_or(0);
    if length > MAX_BODY {
        return Err(Some(Response::error(
            413,
            format!("the body has {length} bytes; at most {MAX_BODY} are accepted"),
        )));
    }
    let mut body = buf.split_off(head_len);
    if body.len() > length {
        body.truncate(length);
    }
    while body.len() < length {
        let want = (length - body.len()).min(chunk.len());
        match conn.read(&mut chunk[..want]) {
            Ok(0) => {
                return Err(bad(format!(
                    "the body ended after {} of its {length} bytes",
                    body.len()
                )))
            }
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Some(Response::error(
                    408,
                    "the body did not arrive in time",
                )))
            }
            Err(_) => return Err(None),
        }
    }
    request.body = body;
    Ok(request)
}

/// Parses the head at the start of `buf` with httparse: `Ok(None)` if it is not all in yet,
/// else its length and the request it describes (without its body). `Err` is the refusal,
/// which comes as soon as `buf` holds a byte that no request could have there.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, Request)>, Response> {
    let bad = |m: String| Response::error(400, m);
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    let parsed = head.parse(buf);
    // httparse accepts any token as a method and any target; the API wants less. These are
    // checked as soon as httparse has them, complete head or not.
    if let Some(method) = head.method {
        if !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(bad(format!(
                "`{}` is not a method (want one in capitals, such as GET)",
                printable(method)
            )));
        }
    }
    if let Some(target) = head.path {
        if !target.starts_with('/') {
            return Err(bad(format!(
                "`{}` is not a path (want one starting with /)",
                printable(target)
            )));
        }
    }
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(refusal(buf, e)),
    };
    // Complete: httparse has set the method and the path (checked above) and the version,
    // which it only accepts as HTTP/1.0 or HTTP/1.1.
    let (Some(method), Some(target)) = (head.method, head.path) else {
        return Err(bad("the request line is incomplete".into()));
    };
    let (raw_path, raw_query) = target.split_once('?').unwrap_or((target, ""));
    let path = percent_decode(raw_path)
        .ok_or_else(|| bad(format!("`{}` is not a valid path", printable(raw_path))))?;
    let mut query = Vec::new();
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match (percent_decode(k), percent_decode(v)) {
            (Some(k), Some(v)) => query.push((k, v)),
            _ => {
                return Err(bad(format!(
                    "`{}` is not a valid query",
                    printable(raw_query)
                )))
            }
        }
    }
    let mut fields = Vec::with_capacity(head.headers.len());
    for header in head.headers.iter() {
        let value = std::str::from_utf8(header.value).map_err(|_| {
            bad(format!(
                "the value of header `{}` is not UTF-8",
                printable(header.name)
            ))
        })?;
        fields.push((header.name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let request = Request {
        method: method.to_owned(),
        path,
        query,
        headers: fields,
        body: Vec::new(),
    };
    Ok(Some((len, request)))
}

/// The refusal of a head that httparse found wrong with `error`, naming what is wrong and
/// quoting the line it is on.
fn refusal(buf: &[u8], error: httparse::Error) -> Response {
    use httparse::Error as E;
    if error == E::TooManyHeaders {
        return Response::error(431, format!("more than {MAX_HEADERS} headers"));
    }
    let bad = |m: String| Response::error(400, m);
    // httparse does not say where it stopped: the shortest prefix of `buf` that it refuses
    // ends with the wrong byte. Found by bisection, only on this path.
    let (mut fine, mut wrong) = (0, buf.len());
    while wrong - fine > 1 {
        let mid = fine + (wrong - fine) / 2;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        if httparse::Request::new(&mut headers)
            .parse(&buf[..mid])
            .is_err()
        {
            wrong = mid;
        } else {
            fine = mid;
        }
    }
    // The line holding that byte (the byte itself may be the line's `\n`), as far as it is
    // in, to quote back.
    let start = buf[..fine]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let end = buf[start..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(buf.len(), |i| start + i);
    let text = String::from_utf8_lossy(&buf[start..end]);
    let line = text.strip_suffix('\r').unwrap_or(&text);
    // Only blank lines (which httparse skips) before it: it is the request line.
    if buf[..start].iter().all(|b| matches!(b, b'\r' | b'\n')) {
        // The status is decided on the line up to the wrong byte, so that it does not depend
        // on how much of the rest had arrived.
        let seen = String::from_utf8_lossy(&buf[start..wrong]);
        let seen: Vec<&str> = seen.split(' ').collect();
        let version = line.split(' ').nth(2).unwrap_or_default();
        let is_http = |v: &str| v.starts_with("HTTP/") && !v.contains('\r');
        return match (error, seen.as_slice()) {
            // A version other than HTTP/1.0 and 1.1: httparse refuses it at its first wrong
            // byte, or, as with HTTP/1.10, at the end of the line.
            (E::Version | E::NewLine, [_, _, v]) if is_http(v) => Response::error(
                505,
                format!("{} is not served here; use HTTP/1.1", printable(version)),
            ),
            (E::Version, [_, _, _]) => bad(format!(
                "`{}` is not an HTTP version (want HTTP/1.1)",
                printable(version)
            )),
            _ => bad(format!(
                "`{}` is not a request line (want METHOD /PATH HTTP/1.1)",
                printable(line)
            )),
        };
    }
    match (error, line.split_once(':')) {
        (E::HeaderName, Some((name, _))) if !name.is_empty() => bad(format!(
            "`{}` is not a header name (want letters, digits and -, as in Content-Type)",
            printable(name)
        )),
        (E::HeaderValue, Some((name, value))) => bad(format!(
            "the value of header `{}` has a control character: `{}`",
            printable(name),
            printable(value.trim())
        )),
        (E::NewLine, _) => bad(format!(
            "`{}` has a carriage return not followed by a line feed",
            printable(line)
        )),
        _ => bad(format!(
            "`{}` is not a header (want Name: value)",
            printable(line)
        )),
    }
}

/// `s` shortened and with control characters escaped, to quote back in an error.
fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(char::escape_default).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

/// Decodes `%XX` escapes (and `+` as it is, since these are paths and simple queries); `None`
/// for a broken escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Writes a request with `body` (JSON) to a daemon.
pub fn write_request(
    w: &mut impl Write,
    method: &str,
    target: &str,
    extra: &[(&str, &str)],
    body: Option<&[u8]>,
) -> io::Result<()> {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: vmnap\r\nConnection: close\r\n");
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    if let Some(body) = body {
        w.write_all(body)?;
    }
    w.flush()
}

/// The status and headers (names in lower case) of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// The value of header `name` (lower case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a response's status line and headers, with httparse, leaving the body in `r`.
pub fn read_response_head(r: &mut impl BufRead) -> io::Result<ResponseHead> {
    let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let mut buf = Vec::with_capacity(256);
    loop {
        // A line at a time, so that nothing past the head's blank line is taken from `r`;
        // at most `MAX_HEAD` bytes in all.
        let room = (MAX_HEAD + 1).saturating_sub(buf.len()) as u64;
        if (&mut *r).take(room).read_until(b'\n', &mut buf)? == 0 {
            return Err(invalid("the response ended before its headers did".into()));
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut head = httparse::Response::new(&mut headers);
        match head.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let status = head
                    .code
                    .ok_or_else(|| invalid("a response without a status".into()))?;
                let mut fields = Vec::with_capacity(head.headers.len());
                for header in head.headers.iter() {
                    let value = std::str::from_utf8(header.value).map_err(|_| {
                        invalid(format!("the value of header {} is not UTF-8", header.name))
                    })?;
                    fields.push((header.name.to_ascii_lowercase(), value.trim().to_owned()));
                }
                return Ok(ResponseHead {
                    status,
                    headers: fields,
                });
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(invalid(format!(
                    "the response's status line and headers exceed {MAX_HEAD} bytes"
                )))
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(invalid(format!("not an HTTP/1.x response head: {e}"))),
        }
    }
}

/// Reads a response body: `Content-Length` bytes, or to the end of the connection.
pub fn read_response_body(r: &mut impl BufRead, head: &ResponseHead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    match head
        .header("content-length")
        .and_then(|l| l.parse::<u64>().ok())
    {
        Some(n) => {
            r.take(n).read_to_end(&mut body)?;
        }
        None => {
            r.read_to_end(&mut body)?;
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A peer that sends `data` `step` bytes at a time, then either closes (`then_block`
    /// false) or goes quiet, as a socket with a read timeout does (`WouldBlock`). It counts
    /// the reads it was asked for once `data` was all out.
    struct Peer<'a> {
        data: &'a [u8],
        step: usize,
        then_block: bool,
        reads_after: usize,
    }

    impl<'a> Peer<'a> {
        fn new(data: &'a [u8], step: usize, then_block: bool) -> Self {
            Peer {
                data,
                step,
                then_block,
                reads_after: 0,
            }
        }
    }

    impl Read for Peer<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.data.is_empty() {
                self.reads_after += 1;
                if self.then_block {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                return Ok(0);
            }
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn parse(bytes: &[u8]) -> Result<Request, Option<Response>> {
        read_request(&mut &bytes[..])
    }

    /// The refusal's status and message.
    #[test]
    fn a_head_refused_by_admit_is_answered_without_reading_the_body() {
        let head = b"POST /v1/guests/web1/sleep HTTP/1.1\r\nContent-Length: 100\r\n\r\n";
        // Had the body been read, its end after 0 of 100 bytes would be a 400.
        let refused = read_request_admitted(&mut &head[..], |r| {
            assert_eq!(
                (r.method.as_str(), r.path.as_str()),
                ("POST", "/v1/guests/web1/sleep")
            );
            Err(Response::error(401, "no token"))
        });
        assert_eq!(refusal_of(refused), (401, "no token".to_owned()));
        let admitted = read_request_admitted(&mut &b"GET / HTTP/1.1\r\n\r\n"[..], |_| Ok(()));
        assert_eq!(admitted.expect("admitted").path, "/");
    }

    #[test]
    fn a_deadline_ends_a_request_that_trickles_in() {
        let (a, mut b) = UnixStream::pair().expect("a socket pair");
        let mut conn = Conn::Unix(a);
        let writer = std::thread::spawn(move || {
            // A byte every 50 ms, for longer than the deadline.
            for byte in b"GET /v1/guests HTTP/1.1\r\nHost: x\r\n"
                .iter()
                .cycle()
                .take(40)
            {
                if b.write_all(&[*byte]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let started = std::time::Instant::now();
        let until = started + Duration::from_millis(300);
        let result = read_request(&mut Deadline::new(&mut conn, until));
        assert_eq!(refusal_of(result).0, 408);
        assert!(started.elapsed() >= Duration::from_millis(300));
        drop(conn);
        writer.join().expect("writer");
    }

    fn refusal_of(result: Result<Request, Option<Response>>) -> (u16, String) {
        match result {
            Ok(r) => panic!("accepted {r:?}"),
            Err(Some(r)) => {
                let body: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
                let message = body["error"].as_str().expect("an error message");
                assert!(!message.is_empty());
                (r.status, message.to_owned())
            }
            Err(None) => (0, String::new()),
        }
    }

    fn refused(bytes: &[u8]) -> u16 {
        refusal_of(parse(bytes)).0
    }

    /// The refusal of `bytes` sent by a peer that then goes quiet, and that it came without
    /// another read.
    #[track_caller]
    fn refused_at_once(bytes: &[u8], step: usize) -> (u16, String) {
        let mut peer = Peer::new(bytes, step, true);
        let answer = refusal_of(read_request(&mut peer));
        assert_eq!(peer.reads_after, 0, "waited for more than {bytes:?}");
        answer
    }

    const GOOD: &[u8] = b"POST /v1/guests/web%31/sleep?wait=false&x&n%20a=b%2Fc HTTP/1.1\r\n\
        Host: a\r\nX-Spaced:   padded value \t\r\nContent-Length: 2\r\n\r\n{}";

    #[track_caller]
    fn check_good(r: Request) {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/v1/guests/web1/sleep");
        assert_eq!(
            r.query,
            vec![
                ("wait".into(), "false".into()),
                ("x".into(), String::new()),
                ("n a".into(), "b/c".into())
            ]
        );
        assert_eq!(r.header("host"), Some("a"));
        assert_eq!(r.header("x-spaced"), Some("padded value"));
        assert_eq!(r.header("content-length"), Some("2"));
        assert_eq!(r.body, b"{}");
    }

    #[test]
    fn a_request_with_a_body_and_a_query_is_read() {
        check_good(parse(GOOD).expect("valid"));
        // What follows the body is not read as part of it.
        let mut more = GOOD.to_vec();
        more.extend_from_slice(b"trailing");
        check_good(parse(&more).expect("valid"));
        let r = parse(b"GET / HTTP/1.0\r\n\r\n").expect("HTTP/1.0");
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/"));
        assert!(r.headers.is_empty() && r.body.is_empty());
    }

    #[test]
    fn a_request_is_read_one_byte_at_a_time() {
        let mut peer = Peer::new(GOOD, 1, true);
        check_good(read_request(&mut peer).expect("valid"));
        assert_eq!(peer.reads_after, 0);
        for step in [2, 3, 7, 64] {
            check_good(read_request(&mut Peer::new(GOOD, step, false)).expect("valid"));
        }
    }

    #[test]
    fn what_is_not_http_is_refused_on_its_first_line() {
        // The line, the status, and what the message says when the line came in one read
        // and when it came a byte at a time (refused at its first wrong byte, it is quoted
        // only as far as that).
        let cases: [(&[u8], u16, &str, &str); 9] = [
            (
                b"{\"cmd\":\"status\"}\n",
                400,
                "`{\\\"cmd\\\":\\\"status\\\"}` is not a request line",
                "`{` is not a request line",
            ),
            (
                b"hello there\r\n",
                400,
                "`hello` is not a method",
                "`hello` is not a method",
            ),
            (
                b"HELLO THERE\r\n",
                400,
                "`HELLO THERE` is not a request line",
                "`HELLO THERE` is not a request line",
            ),
            (
                b"get / HTTP/1.1\r\n",
                400,
                "`get` is not a method",
                "`get` is not a method",
            ),
            (
                b"GET nope HTTP/1.1\r\n",
                400,
                "`nope` is not a path",
                "`nope` is not a path",
            ),
            (
                b"GET / HTTP/2.0\r\n",
                505,
                "HTTP/2.0 is not served here",
                "HTTP/2 is not served here",
            ),
            (
                b"GET / HTTP/1.10\r\n",
                505,
                "HTTP/1.10 is not served here",
                "HTTP/1.10 is not served here",
            ),
            (
                b"GET / FTP/1.1\r\n",
                400,
                "`FTP/1.1` is not an HTTP version",
                "`F` is not an HTTP version",
            ),
            (
                b"GET / HTTP/1.1 extra\r\n",
                400,
                "`GET / HTTP/1.1 extra` is not a request line",
                "`GET / HTTP/1.1 ` is not a request line",
            ),
        ];
        for (line, want, whole, by_byte) in cases {
            for (step, quoted) in [(4096, whole), (1, by_byte)] {
                let (status, message) = refused_at_once(line, step);
                assert_eq!(status, want, "{line:?}: {message}");
                assert!(message.contains(quoted), "{line:?} by {step}: {message}");
            }
        }
        // A request line that is fine so far waits for the rest, and gives up in time.
        let mut peer = Peer::new(b"GET /v1/gue", 4096, true);
        assert_eq!(refusal_of(read_request(&mut peer)).0, 408);
        assert_eq!(peer.reads_after, 1);
    }

    #[test]
    fn malformed_requests_are_refused_with_4xx() {
        assert_eq!(refused(b"garbage\r\n\r\n"), 400);
        assert_eq!(refused(b"\x00\xff\xfe\r\n\r\n"), 400);
        assert_eq!(refused(b"get / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(refused(b"GET nope HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(refused(b"GET http://a/ HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(refused(b"GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(refused(b"GET /%zz HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(refused(b"GET /?a=%ff HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(refused(b"GET / HTTP/1.1\r\nno colon\r\n\r\n"), 400);
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            400
        );
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        // Digits only: a sign is not a length (found by the api_request fuzz target).
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nContent-Length: +2\r\n\r\n{}"),
            400
        );
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n{}"),
            400
        );
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            411
        );
        assert_eq!(refused(b"GET / HTTP/1.1\r\n"), 400);
        assert_eq!(refused(b"{\"cmd\":\"status\"}\n"), 400);
        assert_eq!(refused(b""), 0);
        // Same Content-Length twice is fine.
        let r = parse(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nab")
            .expect("valid");
        assert_eq!(r.body, b"a");
    }

    #[test]
    fn bad_headers_are_named() {
        let (status, message) = refusal_of(parse(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"));
        assert_eq!(status, 400);
        assert!(
            message.contains("`Bad Name` is not a header name"),
            "{message}"
        );
        let (status, message) = refusal_of(parse(b"GET / HTTP/1.1\r\nX-A : x\r\n\r\n"));
        assert_eq!(status, 400);
        assert!(message.contains("`X-A ` is not a header name"), "{message}");
        let (status, message) = refusal_of(parse(b"GET / HTTP/1.1\r\nno colon\r\n\r\n"));
        assert_eq!(status, 400);
        assert!(message.contains("`no colon` is not a header"), "{message}");
        let (status, message) = refusal_of(parse(b"GET / HTTP/1.1\r\n: x\r\n\r\n"));
        assert_eq!(status, 400);
        assert!(message.contains("`: x` is not a header"), "{message}");
        // A folded (continued) header line is not accepted either.
        let (status, _) = refusal_of(parse(b"GET / HTTP/1.1\r\nX-A: x\r\n y\r\n\r\n"));
        assert_eq!(status, 400);
        let (status, message) = refusal_of(parse(b"GET / HTTP/1.1\r\nX-A: a\x01b\r\n\r\n"));
        assert_eq!(status, 400);
        assert!(
            message.contains("header `X-A` has a control character: `a\\u{1}b`"),
            "{message}"
        );
        let (status, message) = refusal_of(parse(b"GET / HTTP/1.1\r\nX-A: \xff\r\n\r\n"));
        assert_eq!(status, 400);
        assert!(message.contains("`X-A` is not UTF-8"), "{message}");
        // Refused once the bad line is in, before the end of the head.
        let (status, _) = refused_at_once(b"GET / HTTP/1.1\r\nBad Name: x\r\n", 1);
        assert_eq!(status, 400);
    }

    #[test]
    fn too_many_headers_are_refused() {
        let head = |n: usize| {
            let mut text = String::from("GET / HTTP/1.1\r\n");
            for i in 0..n {
                text.push_str(&format!("X-{i}: {i}\r\n"));
            }
            text + "\r\n"
        };
        let r = parse(head(MAX_HEADERS).as_bytes()).expect("at the limit");
        assert_eq!(r.headers.len(), MAX_HEADERS);
        assert_eq!(r.header("x-63"), Some("63"));
        let (status, message) = refusal_of(parse(head(MAX_HEADERS + 1).as_bytes()));
        assert_eq!(status, 431);
        assert_eq!(message, format!("more than {MAX_HEADERS} headers"));
        // Without waiting for the end of the head.
        let mut many = head(MAX_HEADERS + 1);
        many.truncate(many.len() - 2);
        assert_eq!(refused_at_once(many.as_bytes(), 4096).0, 431);
    }

    #[test]
    fn oversized_heads_and_bodies_are_refused() {
        let big = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(refused(big.as_bytes()), 413);
        let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(refused(&head), 431);
        // Refused once MAX_HEAD bytes are in, from a peer that would send more forever.
        let (status, message) = refused_at_once(&head[..MAX_HEAD], 1000);
        assert_eq!(status, 431);
        assert!(message.contains(&MAX_HEAD.to_string()), "{message}");
        // A head of exactly MAX_HEAD bytes is read, and the body after it.
        let mut exact = b"POST / HTTP/1.1\r\nContent-Length: 2\r\nX: ".to_vec();
        exact.extend(std::iter::repeat_n(b'a', MAX_HEAD - exact.len() - 4));
        exact.extend_from_slice(b"\r\n\r\n{}");
        let r = parse(&exact).expect("at the limit");
        assert_eq!(r.body, b"{}");
    }

    #[test]
    fn a_response_head_is_read_back() {
        let text = b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nX-A:  b \r\n\r\nabcdef";
        let mut r = &text[..];
        let head = read_response_head(&mut r).expect("valid");
        assert_eq!(head.status, 404);
        assert_eq!(head.header("x-a"), Some("b"));
        assert_eq!(read_response_body(&mut r, &head).expect("body"), b"abc");
        // One written here is read back here.
        let response = Response::error(409, "no").with_header("X-B", "c");
        let (status, reason) = (response.status, reason(response.status));
        let text = format!("HTTP/1.1 {status} {reason}\r\nX-B: c\r\n\r\n");
        let head = read_response_head(&mut text.as_bytes()).expect("valid");
        assert_eq!((head.status, head.header("x-b")), (409, Some("c")));
        for bad in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"",
        ] {
            let e = read_response_head(&mut &bad[..]).expect_err("invalid");
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{bad:?}");
        }
        let mut long = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        assert!(read_response_head(&mut &long[..]).is_err());
    }

    /// Bytes that look a little like a request: pieces of one, and junk.
    fn requestish() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"GET ".to_vec()),
            Just(b"POST /v1/guests?x=%41 ".to_vec()),
            Just(b"HTTP/1.1".to_vec()),
            Just(b"HTTP/1.0".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"Content-Length: 3".to_vec()),
            Just(b"Transfer-Encoding: chunked".to_vec()),
            Just(b"X-A: b".to_vec()),
            Just(b":".to_vec()),
            Just(b"%".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..8),
        ];
        proptest::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
    }

    #[track_caller]
    fn status(result: &Result<Request, Option<Response>>) -> Option<u16> {
        match result {
            Ok(_) => None,
            Err(None) => Some(0),
            Err(Some(r)) => {
                let body: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
                assert!(body["error"].as_str().is_some_and(|m| !m.is_empty()));
                assert!(matches!(r.status, 400..=499 | 505), "{}", r.status);
                Some(r.status)
            }
        }
    }

    proptest! {
        /// Whatever arrives, and however it is split, ends in a request or a refusal with a
        /// message, never a panic; and the same one whether it came at once or byte by byte.
        #[test]
        fn garbage_never_panics(
            bytes in prop_oneof![proptest::collection::vec(any::<u8>(), 0..512), requestish()],
            step in 1usize..8,
        ) {
            let whole = parse(&bytes);
            let split = read_request(&mut Peer::new(&bytes, step, false));
            prop_assert_eq!(status(&whole), status(&split));
            if let (Ok(a), Ok(b)) = (&whole, &split) {
                prop_assert_eq!(a, b);
            }
            let blocking = read_request(&mut Peer::new(&bytes, step, true));
            let _ = status(&blocking);
            let _ = read_response_head(&mut &bytes[..]);
        }
    }
}
