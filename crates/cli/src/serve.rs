//! `vmnap status --serve ADDR`: the daemon's status page on a TCP address, read from its
//! unix socket.
//!
//! A relay, not a second API: it answers `GET /` with what the daemon answers to `GET /` on
//! its socket, at the moment of each request, and nothing else (404 elsewhere, 405 for other
//! methods). It reads no token and holds no state, so whoever can reach the address sees the
//! page and only the page. One thread per connection, at most [`MAX_CONNECTIONS`] at once.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use vmnap_api::http::{self, Conn, Response};
use vmnap_daemon::page::escape;

/// Connections served at once; past it, new ones get 503.
const MAX_CONNECTIONS: usize = 16;
/// How long the accept loop waits between looks at `stop` when nobody connects.
const STOP_POLL: Duration = Duration::from_millis(50);
/// How long a client has to send its request, and to take the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

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
            let stream = match listener.accept() {
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
                let busy =
                    Response::error(503, "too many connections to the status page; try again");
                let _ = http::write_response(&mut Conn::Tcp(stream), &busy);
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
fn handle(socket: &Path, stream: TcpStream) {
    let mut conn = Conn::Tcp(stream);
    let response = match http::read_request(&mut conn) {
        Ok(request) if !by_address(request.header("host")) => Response::error(
            403,
            "open the status page by its address (http://IP:PORT/), not by a name",
        ),
        Ok(request) => answer(socket, &request.method, &request.path),
        Err(Some(refusal)) => refusal,
        // The client left without asking anything: nobody to answer.
        Err(None) => return,
    };
    let _ = http::write_response(&mut conn, &response);
}

/// Whether the `Host` a request names is an IP address or `localhost`: a page elsewhere
/// whose name was made to resolve to this address (DNS rebinding) cannot read this one.
fn by_address(host: Option<&str>) -> bool {
    let Some(host) = host else {
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// The answer to `method path`.
fn answer(socket: &Path, method: &str, path: &str) -> Response {
    if path != "/" {
        return Response::error(404, format!("nothing at {path}; the status page is at /"));
    }
    if method != "GET" {
        return Response::error(405, format!("{method} is not served here; use GET"))
            .with_header("Allow", "GET");
    }
    match vmnap_api::request(socket, "GET", "/", None) {
        // The daemon's refusals are `{"error": "..."}`, whatever was asked.
        Ok((status, body)) if !(200..300).contains(&status) => Response {
            status,
            headers: vec![("Content-Type", "application/json".into())],
            body,
        },
        Ok((status, body)) => Response::html(status, body),
        Err(e) => Response::html(502, not_answering(socket, &e).into_bytes()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_by_address_are_served() {
        for ok in [
            None,
            Some("127.0.0.1:8080"),
            Some("198.18.0.1"),
            Some("[2001:db8::1]:8080"),
            Some("localhost:8080"),
        ] {
            assert!(by_address(ok), "{ok:?}");
        }
        for bad in [Some("evil.example:8080"), Some("example.org")] {
            assert!(!by_address(bad), "{bad:?}");
        }
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
        assert!(post.headers.contains(&("Allow", "GET".into())));
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
        assert_eq!(http::reason(reply.status), "Bad Gateway");
    }
}
