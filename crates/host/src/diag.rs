//! What a network namespace's TCP sockets still have to do: `NETLINK_SOCK_DIAG` dumps of its
//! IPv4 and IPv6 TCP sockets with their `tcp_info`.
//!
//! A guest that is a network namespace keeps its kernel running while its processes are
//! frozen: a request its kernel took in just before the freeze, or an answer it was still
//! sending, waits in a socket with nothing to wake the guest for it. [`tcp_work`] finds such
//! sockets; [`tcp_work_in`] does so in another namespace.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
/// `struct inet_diag_req_v2`: family, protocol, extensions, pad, states, then the socket id.
const REQ_LEN: usize = 56;
/// `struct inet_diag_msg`: family, state, timer, retrans, the socket id (48 bytes), expires,
/// rqueue, wqueue, uid, inode.
const MSG_LEN: usize = 72;
const INET_DIAG_INFO: u16 = 2;
/// Offsets in `struct tcp_info` of `tcpi_last_data_sent` and `tcpi_last_data_recv` (ms ago).
const LAST_DATA_SENT: usize = 44;
const LAST_DATA_RECV: usize = 52;

/// TCP states, as `inet_diag_msg.idiag_state` gives them.
const TCP_LISTEN: u8 = 10;
const TCP_TIME_WAIT: u8 = 6;
const TCP_CLOSE: u8 = 7;

/// What a namespace's TCP sockets still have to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpWork {
    /// Connections with data received that the application has not read.
    pub unread: u32,
    /// Connections with data sent that the peer has not acknowledged (or not sent yet).
    pub unacked: u32,
    /// Connections waiting in a listener's queue to be accepted.
    pub unaccepted: u32,
    /// Connections to a listening port whose peer sent data last, recently, and has had no
    /// answer since: a request read but not answered yet.
    pub unanswered: u32,
}

impl TcpWork {
    /// Nothing to do.
    pub fn is_idle(&self) -> bool {
        *self == TcpWork::default()
    }
}

impl std::fmt::Display for TcpWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} connection(s) with unread data, {} with unacknowledged data, {} not accepted, {} unanswered",
            self.unread, self.unacked, self.unaccepted, self.unanswered
        )
    }
}

/// Errors of [`tcp_work`] and [`tcp_work_in`].
#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    /// The socket could not be opened.
    #[error("Could not open a NETLINK_SOCK_DIAG socket")]
    Open(#[source] io::Error),
    /// The dump could not be asked for or read.
    #[error("Could not dump the TCP sockets")]
    Dump(#[source] io::Error),
    /// The kernel refused the dump.
    #[error("The kernel refused the TCP socket dump")]
    Refused(#[source] io::Error),
    /// The namespace could not be entered.
    #[error("Could not enter the network namespace")]
    Enter(#[source] io::Error),
}

/// The work of the TCP sockets in the calling thread's network namespace. A connection
/// counts as unanswered if its peer's last data is younger than both `recent` and the
/// connection's own last data sent.
pub fn tcp_work(recent: Duration) -> Result<TcpWork, DiagError> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if raw < 0 {
        return Err(DiagError::Open(io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let recent_ms = u32::try_from(recent.as_millis()).unwrap_or(u32::MAX);
    let mut work = Tally::default();
    let mut buf = vec![0u8; 32 * 1024];
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        send_dump(&fd, family)?;
        loop {
            // SAFETY: `buf` is writable for its whole length.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(DiagError::Dump(e));
            }
            match parse(&buf[..n as usize], recent_ms, &mut work) {
                Parsed::More => {}
                Parsed::Done => break,
                Parsed::Error(errno) => {
                    return Err(DiagError::Refused(io::Error::from_raw_os_error(errno)))
                }
            }
        }
    }
    Ok(work.finish())
}

/// [`tcp_work`] in the network namespace `netns` (an open `/proc/PID/ns/net`), on a thread
/// of its own that enters it.
pub fn tcp_work_in(netns: File, recent: Duration) -> Result<TcpWork, DiagError> {
    std::thread::spawn(move || {
        // SAFETY: setns on this thread with a valid namespace descriptor, open for the call.
        if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(DiagError::Enter(io::Error::last_os_error()));
        }
        tcp_work(recent)
    })
    .join()
    .unwrap_or_else(|_| {
        Err(DiagError::Dump(io::Error::other(
            "the thread reading the namespace's sockets panicked",
        )))
    })
}

fn send_dump(fd: &OwnedFd, family: u8) -> Result<(), DiagError> {
    let mut msg = Vec::with_capacity(NLMSG_HDRLEN + REQ_LEN);
    msg.extend_from_slice(&((NLMSG_HDRLEN + REQ_LEN) as u32).to_ne_bytes());
    msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.push(family);
    msg.push(libc::IPPROTO_TCP as u8);
    msg.push(1 << (INET_DIAG_INFO - 1));
    msg.push(0);
    // Every state; the closed ones are skipped when read.
    msg.extend_from_slice(&u32::MAX.to_ne_bytes());
    msg.resize(NLMSG_HDRLEN + REQ_LEN, 0);
    // SAFETY: `kernel` is a valid sockaddr_nl (pid 0: the kernel); `msg` outlives the call.
    let sent = unsafe {
        let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(DiagError::Dump(io::Error::last_os_error()));
    }
    Ok(())
}

/// What a dump has shown so far.
#[derive(Debug, Default)]
struct Tally {
    work: TcpWork,
    /// The ports sockets listen on.
    listening: Vec<u16>,
    /// The local ports of connections whose peer spoke last, recently.
    owing: Vec<u16>,
}

impl Tally {
    /// The work, counting as unanswered only the connections to a listening port (where
    /// this end is the server: a client that has read its answer owes nothing).
    fn finish(mut self) -> TcpWork {
        self.work.unanswered = self
            .owing
            .iter()
            .filter(|p| self.listening.contains(p))
            .count() as u32;
        self.work
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    More,
    Done,
    Error(i32),
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_ne_bytes(s.try_into().expect("4 bytes")))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2)
        .map(|s| u16::from_ne_bytes(s.try_into().expect("2 bytes")))
}

/// Adds what the sockets of one datagram of the dump have to do to `work`.
fn parse(mut data: &[u8], recent_ms: u32, work: &mut Tally) -> Parsed {
    while data.len() >= NLMSG_HDRLEN {
        let len = u32_at(data, 0).unwrap_or(0) as usize;
        let ty = u16_at(data, 4).unwrap_or(0);
        if len < NLMSG_HDRLEN || len > data.len() {
            return Parsed::Error(libc::EPROTO);
        }
        let body = &data[NLMSG_HDRLEN..len];
        match ty {
            NLMSG_DONE => return Parsed::Done,
            NLMSG_ERROR => {
                let errno = u32_at(body, 0).map_or(libc::EPROTO, |e| -(e as i32));
                return if errno == 0 {
                    Parsed::Done
                } else {
                    Parsed::Error(errno)
                };
            }
            SOCK_DIAG_BY_FAMILY => count(body, recent_ms, work),
            _ => {}
        }
        data = &data[((len + 3) & !3).min(data.len())..];
    }
    Parsed::More
}

/// Adds one socket's work (an `inet_diag_msg` and its attributes) to `tally`.
fn count(msg: &[u8], recent_ms: u32, tally: &mut Tally) {
    if msg.len() < MSG_LEN {
        return;
    }
    let state = msg[1];
    let port = u16::from_be_bytes([msg[4], msg[5]]);
    let work = &mut tally.work;
    let (rqueue, wqueue) = (u32_at(msg, 56).unwrap_or(0), u32_at(msg, 60).unwrap_or(0));
    match state {
        TCP_TIME_WAIT | TCP_CLOSE => return,
        // A listener's receive queue is its accept queue.
        TCP_LISTEN => {
            work.unaccepted += rqueue;
            tally.listening.push(port);
            return;
        }
        _ => {}
    }
    if rqueue > 0 {
        work.unread += 1;
    }
    if wqueue > 0 {
        work.unacked += 1;
    }
    let mut attrs = &msg[MSG_LEN..];
    while attrs.len() >= 4 {
        let len = u16_at(attrs, 0).unwrap_or(0) as usize;
        let ty = u16_at(attrs, 2).unwrap_or(0);
        if len < 4 || len > attrs.len() {
            return;
        }
        if ty == INET_DIAG_INFO {
            let info = &attrs[4..len];
            if let (Some(sent), Some(recv)) =
                (u32_at(info, LAST_DATA_SENT), u32_at(info, LAST_DATA_RECV))
            {
                // The peer spoke last (its data is younger than ours), recently, and
                // everything it sent has been read: an answer is owed.
                if rqueue == 0 && wqueue == 0 && recv < sent && recv <= recent_ms {
                    tally.owing.push(port);
                }
            }
        }
        attrs = &attrs[((len + 3) & !3).min(attrs.len())..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diag_msg(state: u8, rqueue: u32, wqueue: u32, info: Option<(u32, u32)>) -> Vec<u8> {
        let mut m = vec![0u8; MSG_LEN];
        m[0] = libc::AF_INET as u8;
        m[1] = state;
        m[4..6].copy_from_slice(&80u16.to_be_bytes());
        m[56..60].copy_from_slice(&rqueue.to_ne_bytes());
        m[60..64].copy_from_slice(&wqueue.to_ne_bytes());
        if let Some((sent, recv)) = info {
            let mut tcp_info = vec![0u8; 104];
            tcp_info[LAST_DATA_SENT..LAST_DATA_SENT + 4].copy_from_slice(&sent.to_ne_bytes());
            tcp_info[LAST_DATA_RECV..LAST_DATA_RECV + 4].copy_from_slice(&recv.to_ne_bytes());
            m.extend_from_slice(&((4 + tcp_info.len()) as u16).to_ne_bytes());
            m.extend_from_slice(&INET_DIAG_INFO.to_ne_bytes());
            m.extend_from_slice(&tcp_info);
        }
        m
    }

    fn nlmsg(ty: u16, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(body);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    #[test]
    fn each_kind_of_work_is_counted_and_closed_sockets_are_not() {
        let mut data = Vec::new();
        // Established: unread data; unacknowledged data; a request read, not answered (the
        // peer's data 5 ms ago, ours 900 ms ago); an answered one (ours after theirs); one
        // whose peer spoke last too long ago.
        data.extend(nlmsg(SOCK_DIAG_BY_FAMILY, &diag_msg(1, 10, 0, None)));
        data.extend(nlmsg(SOCK_DIAG_BY_FAMILY, &diag_msg(1, 0, 300, None)));
        data.extend(nlmsg(
            SOCK_DIAG_BY_FAMILY,
            &diag_msg(1, 0, 0, Some((900, 5))),
        ));
        data.extend(nlmsg(
            SOCK_DIAG_BY_FAMILY,
            &diag_msg(1, 0, 0, Some((5, 900))),
        ));
        data.extend(nlmsg(
            SOCK_DIAG_BY_FAMILY,
            &diag_msg(1, 0, 0, Some((90_000, 60_000))),
        ));
        // A listener with two connections to accept; TIME_WAIT and CLOSE with queues.
        data.extend(nlmsg(
            SOCK_DIAG_BY_FAMILY,
            &diag_msg(TCP_LISTEN, 2, 128, None),
        ));
        data.extend(nlmsg(
            SOCK_DIAG_BY_FAMILY,
            &diag_msg(TCP_TIME_WAIT, 7, 7, None),
        ));
        data.extend(nlmsg(SOCK_DIAG_BY_FAMILY, &diag_msg(TCP_CLOSE, 7, 7, None)));
        let mut tally = Tally::default();
        assert_eq!(parse(&data, 10_000, &mut tally), Parsed::More);
        assert_eq!(
            parse(&nlmsg(NLMSG_DONE, &[0; 4]), 10_000, &mut tally),
            Parsed::Done
        );
        let work = tally.finish();
        assert_eq!(
            work,
            TcpWork {
                unread: 1,
                unacked: 1,
                unaccepted: 2,
                unanswered: 1
            }
        );
        assert!(!work.is_idle());
    }

    #[test]
    fn a_peer_that_spoke_last_owes_an_answer_only_to_a_server() {
        let mut tally = Tally::default();
        let owing = diag_msg(1, 0, 0, Some((900, 5)));
        assert_eq!(
            parse(&nlmsg(SOCK_DIAG_BY_FAMILY, &owing), 10_000, &mut tally),
            Parsed::More
        );
        assert!(
            tally.finish().is_idle(),
            "no listener on its port: a client"
        );
    }

    #[test]
    fn a_refusal_and_a_truncated_message_are_errors_not_panics() {
        let mut work = Tally::default();
        let refused = nlmsg(NLMSG_ERROR, &(-libc::EPERM).to_ne_bytes());
        assert_eq!(parse(&refused, 0, &mut work), Parsed::Error(libc::EPERM));
        let mut cut = nlmsg(SOCK_DIAG_BY_FAMILY, &diag_msg(1, 1, 0, None));
        cut[0] = 200;
        assert_eq!(parse(&cut, 0, &mut work), Parsed::Error(libc::EPROTO));
        // A short body and a bad attribute length are skipped.
        let short = nlmsg(SOCK_DIAG_BY_FAMILY, &[1, 1, 0, 0]);
        assert_eq!(parse(&short, 0, &mut work), Parsed::More);
        let mut bad_attr = diag_msg(1, 0, 0, Some((9, 1)));
        bad_attr[MSG_LEN] = 0xff;
        assert_eq!(
            parse(&nlmsg(SOCK_DIAG_BY_FAMILY, &bad_attr), 0, &mut work),
            Parsed::More
        );
        assert!(work.finish().is_idle());
    }
}
