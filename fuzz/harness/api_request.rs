// The harness of the `api_request` fuzz target, shared with `crates/api/tests/fuzz_seeds.rs`
// (both `include!` this file).
//
// Input: one byte saying how the peer sends, then what it sends. The byte's low six bits are
// the most one read hands over (0: as much as the reader asks for); bit 6: once everything
// is out the peer goes quiet, as a socket whose read timeout expired does (`WouldBlock`),
// instead of closing; bit 7: every piece is preceded by a read interrupted by a signal.
//
// The bytes are read three times: by `read_request` from a `Cursor` (all at once, then the
// end), by `read_request` from that peer, and by `read_request_admitted` from that peer with
// a token check like the daemon's on its TCP listener.
//
// Invariants checked besides "does not panic":
// - a request read has a method in capitals and a path starting with `/`, at most 64
//   headers with names in lower case and trimmed values, no `Transfer-Encoding`, and a body
//   of exactly its `Content-Length` (0 without one), at most `MAX_BODY` bytes;
// - a refusal has a 4xx or 5xx status and a JSON body `{"error": "..."}` saying something;
// - how the bytes were split does not matter: a peer that closes gets what the `Cursor`
//   got (the same request, or a refusal with the same status); a peer that goes quiet gets
//   the same, or a 408 where the other saw the end;
// - the token check sees only a head that was read whole, refuses with its own 401 and
//   changes nothing else: a request with the token is read as without the check.

use std::io::{self, Cursor, Read};

use vmnap_api::http::{read_request, read_request_admitted, Request, Response, MAX_BODY};

/// The token the admitted reader wants: `Authorization: Bearer fuzz-token-0123`.
pub const TOKEN: &str = "fuzz-token-0123";

/// What a request reader returns.
type Outcome = Result<Request, Option<Response>>;

/// A connection that hands `data` over in pieces.
struct Peer<'a> {
    data: &'a [u8],
    piece: usize,
    quiet: bool,
    interrupt: bool,
    interrupted: bool,
}

impl<'a> Peer<'a> {
    fn new(how: u8, data: &'a [u8]) -> Self {
        Peer {
            data,
            piece: usize::from(how & 0x3f),
            quiet: how & 0x40 != 0,
            interrupt: how & 0x80 != 0,
            interrupted: false,
        }
    }
}

impl Read for Peer<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.interrupt && !self.interrupted {
            self.interrupted = true;
            return Err(io::ErrorKind::Interrupted.into());
        }
        self.interrupted = false;
        if self.data.is_empty() {
            return if self.quiet {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(0)
            };
        }
        let mut n = buf.len().min(self.data.len());
        if self.piece > 0 {
            n = n.min(self.piece);
        }
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Whether `request` carries `Authorization: Bearer TOKEN`.
pub fn authorized(request: &Request) -> bool {
    request
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        == Some(TOKEN)
}

/// Runs one input; panics if an invariant breaks.
pub fn run(data: &[u8]) {
    let Some((&how, bytes)) = data.split_first() else {
        return;
    };
    let whole = read_request(&mut Cursor::new(bytes));
    check(&whole);
    let split = read_request(&mut Peer::new(how, bytes));
    check(&split);
    if how & 0x40 == 0 {
        assert_eq!(
            status(&split),
            status(&whole),
            "split differently, read differently"
        );
    } else {
        assert!(
            status(&split) == status(&whole) || status(&split) == Err(408),
            "a quiet peer got {:?} where a closing one got {:?}",
            status(&split),
            status(&whole)
        );
        assert_ne!(status(&split), Err(0), "a quiet peer got no answer");
    }

    let mut asked = false;
    let admitted = read_request_admitted(&mut Peer::new(how, bytes), |head| {
        asked = true;
        check_head(head);
        assert!(head.body.is_empty(), "admit saw a body");
        if authorized(head) {
            Ok(())
        } else {
            Err(Response::error(401, "no token"))
        }
    });
    check(&admitted);
    match (&split, &admitted) {
        (Ok(r), _) if authorized(r) => assert_eq!(status(&admitted), Ok(r)),
        (Ok(_), _) => assert_eq!(status(&admitted), Err(401)),
        (Err(_), Ok(r)) => panic!("admitted {r:?}, which is refused without the check"),
        (Err(_), Err(_)) => assert!(
            status(&admitted) == status(&split) || (asked && status(&admitted) == Err(401)),
            "the token check turned {:?} into {:?}",
            status(&split),
            status(&admitted)
        ),
    }
    if status(&admitted) == Err(401) {
        assert!(asked, "a 401 without the check");
    }
}

/// The request read, or the refusal's status (0: none).
fn status(outcome: &Outcome) -> Result<&Request, u16> {
    match outcome {
        Ok(r) => Ok(r),
        Err(Some(response)) => Err(response.status),
        Err(None) => Err(0),
    }
}

/// The promises of a request's head.
fn check_head(r: &Request) {
    assert!(
        !r.method.is_empty() && r.method.bytes().all(|b| b.is_ascii_uppercase()),
        "method {:?}",
        r.method
    );
    assert!(r.path.starts_with('/'), "path {:?}", r.path);
    assert!(r.headers.len() <= 64, "{} headers", r.headers.len());
    for (name, value) in &r.headers {
        assert!(
            !name.is_empty() && !name.bytes().any(|b| b.is_ascii_uppercase()),
            "header name {name:?}"
        );
        assert_eq!(value.trim(), value, "header {name} not trimmed");
    }
}

/// The promises of one outcome.
fn check(outcome: &Outcome) {
    match outcome {
        Ok(r) => {
            check_head(r);
            assert!(r.header("transfer-encoding").is_none());
            let length = r.header("content-length").map_or(0, |v| {
                v.parse::<usize>()
                    .unwrap_or_else(|_| panic!("read with Content-Length {v:?}"))
            });
            assert_eq!(
                r.body.len(),
                length,
                "a body that is not its Content-Length"
            );
            assert!(r.body.len() <= MAX_BODY);
        }
        Err(Some(response)) => {
            assert!(
                (400..=599).contains(&response.status),
                "refused with status {}",
                response.status
            );
            let body: serde_json::Value =
                serde_json::from_slice(&response.body).expect("a refusal's body is JSON");
            assert!(
                body["error"].as_str().is_some_and(|m| !m.is_empty()),
                "a refusal without an error: {body}"
            );
        }
        Err(None) => {}
    }
}
