//! A small HTTP/1.1 of our own, enough for the API: one request per connection (every answer
//! says `Connection: close`), bodies only with `Content-Length` and at most [`MAX_BODY`]
//! bytes, heads of at most [`MAX_HEAD`] bytes. Both ends live here: the daemon reads requests
//! and writes responses, the client (`vmnap`) the other way round.
//!
//! Untrusted bytes never panic: whatever a client sends ends in a response with a 4xx
//! status and a JSON `{"error": "..."}` body, or in the connection being closed.

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde::Serialize;

/// The largest request body accepted, in bytes.
pub const MAX_BODY: usize = 64 * 1024;
/// The largest request line and headers accepted, in bytes.
pub const MAX_HEAD: usize = 16 * 1024;
/// The most headers a request may carry.
const MAX_HEADERS: usize = 64;

/// A connection on either listener.
#[derive(Debug)]
pub enum Conn {
    /// On the unix socket.
    Unix(UnixStream),
    /// On the TCP listener.
    Tcp(TcpStream),
}

impl Conn {
    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_read_timeout(t),
            Conn::Tcp(s) => s.set_read_timeout(t),
        }
    }

    pub(crate) fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_write_timeout(t),
            Conn::Tcp(s) => s.set_write_timeout(t),
        }
    }

    pub(crate) fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_nonblocking(on),
            Conn::Tcp(s) => s.set_nonblocking(on),
        }
    }

    /// Whether the peer has closed its end (or the connection failed), without consuming
    /// anything it sent.
    pub(crate) fn peer_gone(&self) -> bool {
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
            Conn::Tcp(s) => s.peek(&mut byte),
        };
        let _ = self.set_nonblocking(false);
        match gone {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        }
    }

    pub(crate) fn shutdown_write(&self) {
        let _ = match self {
            Conn::Unix(s) => s.shutdown(Shutdown::Write),
            Conn::Tcp(s) => s.shutdown(Shutdown::Write),
        };
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.flush(),
            Conn::Tcp(s) => s.flush(),
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
                ("X-Content-Type-Options", "nosniff".into()),
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

/// Writes `response` and closes the sending half.
pub fn write_response(conn: &mut Conn, response: &Response) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\nConnection: close\r\n",
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
pub(crate) fn write_stream_head(conn: &mut Conn, content_type: &str) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nCache-Control: no-store\r\n\
         Connection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes())?;
    conn.flush()
}

/// Reads one request. `Err` is the refusal to send back (`None`: the peer went away before
/// saying anything, so there is nobody to answer).
pub fn read_request(conn: &mut impl Read) -> Result<Request, Option<Response>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            break at;
        }
        // Refuse what is not HTTP as soon as its first line is in, rather than wait for a
        // blank line that may never come (an old `vmnap` sending one JSON line, say).
        if let Some(nl) = find(&buf, b"\n") {
            let first = String::from_utf8_lossy(&buf[..nl]);
            request_line(first.trim_end_matches('\r')).map_err(Some)?;
        }
        if buf.len() > MAX_HEAD {
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
    if head_end > MAX_HEAD {
        return Err(Some(Response::error(
            431,
            format!("the request line and headers exceed {MAX_HEAD} bytes"),
        )));
    }
    let bad = |m: String| Some(Response::error(400, m));
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| bad("the request line and headers are not UTF-8".into()))?;
    let mut lines = head.split("\r\n");
    let (method, target) = request_line(lines.next().unwrap_or_default()).map_err(Some)?;
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
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad(format!(
                "`{}` is not a header (want Name: value)",
                printable(line)
            )));
        };
        if name.is_empty() || name.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(bad(format!("`{}` is not a header name", printable(name))));
        }
        if headers.len() == MAX_HEADERS {
            return Err(Some(Response::error(
                431,
                format!("more than {MAX_HEADERS} headers"),
            )));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut request = Request {
        method: method.to_owned(),
        path,
        query,
        headers,
        body: Vec::new(),
    };
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
        let n: usize = v
            .parse()
            .map_err(|_| bad(format!("`{}` is not a Content-Length", printable(v))))?;
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
    let mut body = buf.split_off(head_end + 4);
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
            Err(_) => {
                return Err(Some(Response::error(
                    408,
                    "the body did not arrive in time",
                )))
            }
        }
    }
    request.body = body;
    Ok(request)
}

/// The method and target of a request line, checked.
fn request_line(line: &str) -> Result<(&str, &str), Response> {
    let bad = |m: String| Response::error(400, m);
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(format!(
            "`{}` is not a request line (want METHOD PATH HTTP/1.1)",
            printable(line)
        )));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(bad(format!("`{}` is not a method", printable(method))));
    }
    if !version.starts_with("HTTP/") {
        return Err(bad(format!(
            "`{}` is not an HTTP version",
            printable(version)
        )));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(Response::error(
            505,
            format!("{} is not served here; use HTTP/1.1", printable(version)),
        ));
    }
    if !target.starts_with('/') {
        return Err(bad(format!(
            "`{}` is not a path (want one starting with /)",
            printable(target)
        )));
    }
    Ok((method, target))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
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
pub(crate) fn write_request(
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

/// Reads a response's status line and headers.
pub(crate) fn read_response_head(r: &mut impl BufRead) -> io::Result<ResponseHead> {
    let invalid = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_owned());
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("not an HTTP/1.x status line"))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(invalid("the headers ended early"));
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let (name, value) = l
            .split_once(':')
            .ok_or_else(|| invalid("a header line without `:`"))?;
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    Ok(ResponseHead { status, headers })
}

/// Reads a response body: `Content-Length` bytes, or to the end of the connection.
pub(crate) fn read_response_body(r: &mut impl BufRead, head: &ResponseHead) -> io::Result<Vec<u8>> {
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

    fn parse(bytes: &[u8]) -> Result<Request, Option<Response>> {
        read_request(&mut &bytes[..])
    }

    fn refused(bytes: &[u8]) -> u16 {
        match parse(bytes) {
            Ok(r) => panic!("accepted {r:?}"),
            Err(Some(r)) => {
                let body: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
                assert!(body["error"].is_string(), "{body}");
                r.status
            }
            Err(None) => 0,
        }
    }

    #[test]
    fn a_request_with_a_body_and_a_query_is_read() {
        let r = parse(
            b"POST /v1/guests/web%31/sleep?wait=false&x HTTP/1.1\r\nHost: a\r\n\
              Content-Length: 2\r\n\r\n{}",
        )
        .expect("valid");
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/v1/guests/web1/sleep");
        assert_eq!(
            r.query,
            vec![("wait".into(), "false".into()), ("x".into(), String::new())]
        );
        assert_eq!(r.header("host"), Some("a"));
        assert_eq!(r.body, b"{}");
    }

    #[test]
    fn malformed_requests_are_refused_with_4xx() {
        assert_eq!(refused(b"garbage\r\n\r\n"), 400);
        assert_eq!(refused(b"\x00\xff\xfe\r\n\r\n"), 400);
        assert_eq!(refused(b"get / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(refused(b"GET nope HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(refused(b"GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(refused(b"GET /%zz HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(refused(b"GET / HTTP/1.1\r\nno colon\r\n\r\n"), 400);
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            400
        );
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
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
    }

    #[test]
    fn a_response_head_is_read_back() {
        let text = b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabcdef";
        let mut r = &text[..];
        let head = read_response_head(&mut r).expect("valid");
        assert_eq!(head.status, 404);
        assert_eq!(head.header("x-a"), Some("b"));
        assert_eq!(read_response_body(&mut r, &head).expect("body"), b"abc");
    }
}
