//! `vmnap status --serve ADDR`: the daemon's status page on a TCP address, read from its
//! unix socket.
//!
//! A relay, not a second API: it answers `GET /` with what the daemon answers to `GET /` on
//! its socket, at the moment of each request, and nothing else (404 elsewhere, 405 for other
//! methods). It reads no token and holds no state, so whoever can reach the address sees the
//! page and only the page. One thread per connection, at most [`MAX_CONNECTIONS`] at once.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;

/// Connections served at once; past it, new ones get 503.
const MAX_CONNECTIONS: usize = 16;
/// How long the accept loop waits between looks at `stop` when nobody connects.
const STOP_POLL: Duration = Duration::from_millis(50);
/// How long a client has to send its request, and to take the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The most bytes of request line and headers read.
const MAX_HEAD: usize = 8 * 1024;

/// Serves the status page of the daemon on `socket` at `addr` until `stop` is set.
pub fn serve(socket: &Path, addr: SocketAddr, stop: &AtomicBool) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .with_context(|| format!("cannot serve the status page on {addr}"))?;
    listener
        .set_nonblocking(true)
        .with_context(|| format!("cannot serve the status page on {addr}"))?;
    // The address actually bound, should `addr` have asked for any port.
    let addr = listener.local_addr().unwrap_or(addr);
    eprintln!("vmnap: serving the status page on http://{addr}/ (Ctrl-C to stop)");
    let active = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        while !stop.load(Ordering::Relaxed) {
            let mut stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(STOP_POLL);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors, say: it may pass; the page is not worth dying for.
                    eprintln!("vmnap: cannot accept a connection on {addr}: {e}");
                    std::thread::sleep(STOP_POLL);
                    continue;
                }
            };
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
            let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
            let Some(slot) = Slot::take(&active) else {
                let busy = Reply::text(503, "too many connections to the status page; try again");
                let _ = write_reply(&mut stream, &busy);
                continue;
            };
            let spawned = std::thread::Builder::new()
                .name("vmnap-page".into())
                .spawn_scoped(scope, move || {
                    let _slot = slot;
                    handle(socket, stream);
                });
            if let Err(e) = spawned {
                // The closure, its stream and its slot are gone with the error.
                eprintln!("vmnap: cannot start a thread for a connection: {e}");
            }
        }
    });
    Ok(())
}

/// One of the [`MAX_CONNECTIONS`] places, given back when dropped.
struct Slot<'a>(&'a AtomicUsize);

impl<'a> Slot<'a> {
    fn take(active: &'a AtomicUsize) -> Option<Self> {
        active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_CONNECTIONS).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(active))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reads one request from `stream` and answers it.
fn handle(socket: &Path, mut stream: TcpStream) {
    let reply = match read_request_line(&mut stream) {
        Ok(Some((method, path))) => answer(socket, &method, &path),
        // The client left without asking anything: nobody to answer.
        Ok(None) => return,
        Err(refusal) => refusal,
    };
    let _ = write_reply(&mut stream, &reply);
}

/// The answer to `method path`.
fn answer(socket: &Path, method: &str, path: &str) -> Reply {
    if path != "/" {
        return Reply::text(404, format!("nothing at {path}; the status page is at /"));
    }
    if method != "GET" {
        let mut reply = Reply::text(405, format!("{method} is not served here; use GET"));
        reply.allow = true;
        return reply;
    }
    match vmnap_daemon::api::request(socket, "GET", "/", None) {
        Ok((status, body)) => Reply {
            status,
            // The daemon's refusals are `{"error": "..."}`, whatever was asked.
            content_type: if (200..300).contains(&status) {
                "text/html; charset=utf-8"
            } else {
                "application/json"
            },
            body,
            allow: false,
        },
        Err(e) => Reply {
            status: 502,
            content_type: "text/html; charset=utf-8",
            body: not_answering(socket, &e).into_bytes(),
            allow: false,
        },
    }
}

/// The page that says the daemon cannot be reached, and tries again every ten seconds.
fn not_answering(socket: &Path, error: &dyn std::error::Error) -> String {
    let mut why = String::new();
    let mut cause = error.source();
    while let Some(e) = cause {
        if !why.is_empty() {
            why.push_str(": ");
        }
        why.push_str(&e.to_string());
        cause = e.source();
    }
    let socket = escape(&socket.display().to_string());
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"10\"><title>vmnap: daemon not answering</title>\
         </head>\n<body style=\"font-family: Arial, 'Liberation Sans', 'DejaVu Sans', sans-serif; \
         margin: 40px; color: #1b2230; background: #f3f5f8\">\n\
         <h1 style=\"font-size: 24px\">The vmnap daemon is not answering</h1>\n\
         <p>The vmnap daemon at <code>{socket}</code> is not answering ({why}). \
         Is <code>vmnap run</code> running?</p>\n\
         <p style=\"color: #5b6577\">This page tries again every 10 seconds.</p>\n</body></html>\n",
        why = escape(if why.is_empty() {
            "no reason given"
        } else {
            &why
        }),
    )
}

/// A response to write.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    /// Whether to say `Allow: GET` (a 405).
    allow: bool,
}

impl Reply {
    /// `message` as plain text.
    fn text(status: u16, message: impl Into<String>) -> Self {
        let mut body = message.into().into_bytes();
        body.push(b'\n');
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body,
            allow: false,
        }
    }
}

/// Writes `reply` and closes the sending half.
fn write_reply(w: &mut TcpStream, reply: &Reply) -> io::Result<()> {
    w.write_all(&reply_bytes(reply))?;
    w.flush()?;
    w.shutdown(Shutdown::Write)
}

/// The bytes of `reply`: head and body.
fn reply_bytes(reply: &Reply) -> Vec<u8> {
    let phrase = match reply.status {
        502 => "Bad Gateway",
        s => vmnap_daemon::http::reason(s),
    };
    let mut head = format!(
        "HTTP/1.1 {} {phrase}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
         Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'\r\n\
         Connection: close\r\n",
        reply.status,
        reply.content_type,
        reply.body.len(),
    );
    if reply.allow {
        head.push_str("Allow: GET\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&reply.body);
    bytes
}

/// Reads a request's head and returns its method and path (without the query). `Err` is
/// the refusal to send back; `Ok(None)`: the client closed without sending anything.
fn read_request_line(r: &mut impl Read) -> Result<Option<(String, String)>, Reply> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if buf.len() > MAX_HEAD {
            return Err(Reply::text(
                431,
                format!("the request line and headers exceed {MAX_HEAD} bytes"),
            ));
        }
        match r.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Ok(None),
            Ok(0) => return Err(Reply::text(400, "the request ended before its headers did")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Reply::text(408, "the request did not arrive in time"))
            }
            Err(_) => return Ok(None),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let line = head.split("\r\n").next().unwrap_or_default();
    let bad = || Reply::text(400, "not an HTTP request (want GET / HTTP/1.1)");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
        || !version.starts_with("HTTP/1.")
    {
        return Err(bad());
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    Ok(Some((method.to_owned(), path.to_owned())))
}

/// `s` as HTML text.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(bytes: &[u8]) -> Result<Option<(String, String)>, u16> {
        read_request_line(&mut &bytes[..]).map_err(|r| r.status)
    }

    #[test]
    fn a_browser_request_is_read() {
        assert_eq!(
            line(b"GET /?x=1 HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\n\r\n"),
            Ok(Some(("GET".into(), "/".into())))
        );
        assert_eq!(line(b""), Ok(None));
    }

    #[test]
    fn what_is_not_http_is_refused() {
        assert_eq!(line(b"garbage\r\n\r\n"), Err(400));
        assert_eq!(line(b"get / HTTP/1.1\r\n\r\n"), Err(400));
        assert_eq!(line(b"GET nope HTTP/1.1\r\n\r\n"), Err(400));
        assert_eq!(line(b"GET / SPDY/3\r\n\r\n"), Err(400));
        assert_eq!(line(b"GET / HTTP/1.1\r\n"), Err(400));
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        assert_eq!(line(&big), Err(431));
    }

    #[test]
    fn connections_past_the_cap_get_no_slot_until_one_ends() {
        let active = AtomicUsize::new(0);
        let mut slots: Vec<Slot> = (0..MAX_CONNECTIONS)
            .map(|_| Slot::take(&active).expect("below the cap"))
            .collect();
        assert!(Slot::take(&active).is_none());
        slots.pop();
        assert!(Slot::take(&active).is_some());
        drop(slots);
        assert_eq!(active.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn other_paths_and_methods_are_refused_without_asking_the_daemon() {
        let socket = Path::new("/nonexistent/vmnap.sock");
        assert_eq!(answer(socket, "GET", "/favicon.ico").status, 404);
        let post = answer(socket, "POST", "/");
        assert_eq!(post.status, 405);
        assert!(String::from_utf8_lossy(&reply_bytes(&post)).contains("\r\nAllow: GET\r\n"));
    }

    #[test]
    fn a_daemon_that_is_not_there_is_a_502_naming_its_socket() {
        let socket = Path::new("/nonexistent/<vmnap>.sock");
        let reply = answer(socket, "GET", "/");
        assert_eq!(reply.status, 502);
        let text = String::from_utf8_lossy(&reply.body);
        assert!(
            text.contains(
                "The vmnap daemon at <code>/nonexistent/&lt;vmnap&gt;.sock</code> is not answering"
            ),
            "{text}"
        );
        assert!(String::from_utf8_lossy(&reply_bytes(&reply))
            .starts_with("HTTP/1.1 502 Bad Gateway\r\n"));
    }
}
