//! HTTP health checks, an [`Application`] of the TCP responder: one request read, one
//! answer written, then the connection closes.
//!
//! The request head is read up to its empty line and no further than
//! [`MAX_REQUEST_HEAD`] bytes; only the request line is kept and looked at. `GET` or `HEAD`
//! of the configured path (its query string aside) gets the configured status and body;
//! another path gets `404 Not Found`, another method on the path `405 Method Not Allowed`,
//! and a head too long or a request line that does not parse `400 Bad Request`. Every answer
//! says `Connection: close`; what the peer sends after the head (a body, another request) is
//! read and discarded.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;

use crate::guest::HealthCheck;
use crate::tcp::Application;

/// The longest request head read (request line, header lines and the empty line ending
/// them), in bytes.
pub(crate) const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// One health check connection.
#[derive(Debug)]
pub(crate) struct HttpHealth {
    check: Arc<HealthCheck>,
    /// Bytes of the request head read so far.
    head_len: usize,
    /// The request line, while it is read.
    line: Vec<u8>,
    /// Bytes of the current line so far, and the last of them.
    line_len: usize,
    last: u8,
    /// The request line, read.
    request: Option<Request>,
    answered: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Request {
    head: bool,
    route: Route,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// `GET` or `HEAD` of the configured path.
    Check,
    /// Another path.
    NotFound,
    /// Another method on the configured path.
    MethodNotAllowed,
}

impl HttpHealth {
    pub(crate) fn new(check: Arc<HealthCheck>) -> Self {
        Self {
            check,
            head_len: 0,
            line: Vec::new(),
            line_len: 0,
            last: 0,
            request: None,
            answered: false,
        }
    }

    fn answer(&mut self, out: &mut VecDeque<u8>) -> bool {
        self.answered = true;
        self.line = Vec::new();
        let (status, body, head, allow) = match self.request {
            None => (400, "bad request\n", false, false),
            Some(r) => match r.route {
                Route::Check => (self.check.status, self.check.body.as_str(), r.head, false),
                Route::NotFound => (404, "not found\n", r.head, false),
                Route::MethodNotAllowed => (405, "method not allowed\n", r.head, true),
            },
        };
        out.extend(response(status, body.len(), allow).as_bytes());
        out.extend(if head || !has_body(status) {
            &[][..]
        } else {
            body.as_bytes()
        });
        true
    }
}

impl Application for HttpHealth {
    fn window(&self, _pending: usize) -> usize {
        // Reading is bounded by the head limit, not by the window.
        usize::MAX
    }

    fn receive(&mut self, data: &[u8], out: &mut VecDeque<u8>) -> bool {
        if self.answered {
            return true;
        }
        for &b in data {
            self.head_len += 1;
            if self.head_len > MAX_REQUEST_HEAD {
                self.request = None;
                return self.answer(out);
            }
            if b != b'\n' {
                if self.request.is_none() {
                    self.line.push(b);
                }
                self.line_len += 1;
                self.last = b;
                continue;
            }
            let empty = self.line_len == 0 || (self.line_len == 1 && self.last == b'\r');
            match self.request {
                // RFC 9112 section 2.2: empty lines before the request line are ignored.
                None if empty => {}
                None => match request_line(&self.line, &self.check.path) {
                    Some(r) => self.request = Some(r),
                    None => return self.answer(out),
                },
                Some(_) if empty => return self.answer(out),
                Some(_) => {}
            }
            self.line.clear();
            self.line_len = 0;
            self.last = 0;
        }
        false
    }
}

/// Reads `METHOD SP request-target SP HTTP/d.d` (without its line end, a trailing CR
/// allowed); `None` if it is not one.
fn request_line(line: &[u8], path: &str) -> Option<Request> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || method.is_empty()
        || !method.iter().all(|&b| is_tchar(b))
        || target.is_empty()
        || !target.iter().all(u8::is_ascii_graphic)
        || !is_version(version)
    {
        return None;
    }
    let asked = target_path(target)?;
    let route = if asked != without_query(path.as_bytes()) {
        Route::NotFound
    } else if method == b"GET" || method == b"HEAD" {
        Route::Check
    } else {
        Route::MethodNotAllowed
    };
    Some(Request {
        head: method == b"HEAD",
        route,
    })
}

/// The path of a request target in origin form (`/p?q`), absolute form
/// (`http://host/p?q`) or asterisk form (`*`), without its query; `None` for anything else.
fn target_path(target: &[u8]) -> Option<&[u8]> {
    if target.starts_with(b"/") || target == b"*" {
        return Some(without_query(target));
    }
    let lower = |n: usize| target.get(..n).map(<[u8]>::to_ascii_lowercase);
    let scheme = if lower(7).as_deref() == Some(b"http://") {
        7
    } else if lower(8).as_deref() == Some(b"https://") {
        8
    } else {
        return None;
    };
    let rest = without_query(&target[scheme..]);
    Some(match rest.iter().position(|&b| b == b'/') {
        Some(at) => &rest[at..],
        None => b"/",
    })
}

fn without_query(target: &[u8]) -> &[u8] {
    let end = target
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(target.len());
    &target[..end]
}

/// `HTTP/` and a one-digit major and minor version.
fn is_version(v: &[u8]) -> bool {
    matches!(v, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
        if major.is_ascii_digit() && minor.is_ascii_digit())
}

/// A character of an HTTP token (RFC 9110 section 5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Statuses whose responses never carry a body (RFC 9110 sections 6.4.1 and 15).
fn has_body(status: u16) -> bool {
    !(matches!(status, 100..=199 | 204 | 304))
}

/// The status line and headers of an answer (the body, if any, follows them).
fn response(status: u16, body_len: usize, allow: bool) -> String {
    let mut text = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    // An answer to HEAD gives the length the GET's body has; answers that never have a body
    // have no length (RFC 9110 section 8.6).
    if has_body(status) {
        let _ = write!(text, "Content-Length: {body_len}\r\n");
    }
    text.push_str("Content-Type: text/plain\r\n");
    if allow {
        text.push_str("Allow: GET, HEAD\r\n");
    }
    text.push_str("Connection: close\r\n\r\n");
    text
}

/// The reason phrase of a status code (RFC 9110 section 15); empty, as the grammar allows,
/// for codes it does not name.
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => "",
    }
}
