//! A small TCP responder: the surrogate's end of the connections it accepts in a sleeping
//! guest's name, with an [`Application`] on top (the echo service, HTTP health checks).
//!
//! It accepts a SYN, acknowledges what it reads in order and hands it to the application,
//! sends the application's output in segments of at most the peer's MSS within the peer's
//! window, retransmits what the peer has not acknowledged, and closes with a FIN handshake
//! when either side asks (an RST ends the connection at once). A connection that closed
//! first on the surrogate's side stays a while in TIME-WAIT to acknowledge a retransmitted
//! FIN, so that such a FIN never reaches the guest's wake path. Connections live only while
//! the guest sleeps; when it wakes they are forgotten, and the guest's kernel resets them.
//!
//! What it leaves out: window scaling, SACK, congestion control, out-of-order reassembly (a
//! segment ahead of the expected one is answered with a duplicate ACK and dropped).

use std::collections::VecDeque;

use std::net::IpAddr;
use std::time::Duration;

use crate::classify::TcpSegment;
use crate::hash::{Keyed, Map};
use crate::respond::{Route, Segment};
use crate::time::Instant;

/// The receive window the responder offers; no window scaling.
const WINDOW: u16 = 65_535;
/// The segment size the responder announces and sends at most.
const OUR_MSS: u16 = 1460;
/// First retransmission timeout; doubles each time.
const INITIAL_RTO: Duration = Duration::from_millis(200);
/// Retransmissions before the connection is given up.
const MAX_RETRIES: u8 = 6;
/// A connection idle this long is forgotten.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a connection closed on our side first is kept after the last FIN, to
/// acknowledge the peer's FIN again should our ACK be lost. Much less than Linux's 60 s:
/// it only has to outlast the peer's first few FIN retransmissions.
const TIME_WAIT: Duration = Duration::from_secs(20);
/// Connections per responder at most.
const MAX_CONNECTIONS: usize = 64;
/// Handshakes half done (SYN in, SYN/ACK out) kept at most; past it, a SYN is answered with
/// a SYN cookie and nothing is kept until its ACK comes back (a flood of SYNs from addresses
/// that never answer fills nothing).
const MAX_HALF_OPEN: usize = 16;
/// The peer MSS a SYN cookie can carry, in its two low bits: the announced one rounded down.
const COOKIE_MSS: [u16; 4] = [536, 1220, 1440, 1460];
/// A SYN cookie is good in the 64 s epoch it was made in and the next one.
const COOKIE_EPOCH_MICROS: u64 = 64_000_000;

/// A connection's addresses, from the guest's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    /// The guest's address.
    pub local: IpAddr,
    /// The guest's port.
    pub local_port: u16,
    /// The peer's address.
    pub peer: IpAddr,
    /// The peer's port.
    pub peer_port: u16,
}

/// What runs on a connection: it reads the peer's bytes in order and writes its answer.
pub(crate) trait Application {
    /// How many more bytes it takes now, with `pending` bytes of its output not yet
    /// acknowledged by the peer.
    fn window(&self, pending: usize) -> usize;
    /// Reads `data`, the next bytes of the stream, and appends its answer to `out`. Returns
    /// `true` when it has said all it will: the connection closes once `out` is sent, and
    /// whatever the peer sends after is acknowledged and discarded.
    fn receive(&mut self, data: &[u8], out: &mut VecDeque<u8>) -> bool;
}

/// What the responder did with a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handled {
    /// The segment belonged to the responder.
    Answered,
    /// The segment was refused (table full, or neither a SYN nor the ACK of a valid SYN
    /// cookie for an unknown connection).
    Refused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    SynReceived,
    Established,
    /// The peer's FIN is in; ours waits for the output before it.
    CloseWait,
    /// Our FIN is sent, the peer's is not in.
    FinWait1,
    /// Our FIN is acknowledged; the peer's is awaited.
    FinWait2,
    /// Both FINs are sent (simultaneously); ours is not acknowledged.
    Closing,
    /// The peer's FIN came first; ours is sent, not acknowledged.
    LastAck,
    /// Both FINs are sent and acknowledged; a retransmitted FIN is acknowledged again.
    TimeWait,
}

impl State {
    /// Our FIN has been sent.
    fn fin_sent(self) -> bool {
        matches!(
            self,
            State::FinWait1 | State::FinWait2 | State::Closing | State::LastAck | State::TimeWait
        )
    }

    /// Our FIN has been sent and is not acknowledged.
    fn fin_in_flight(self) -> bool {
        matches!(self, State::FinWait1 | State::Closing | State::LastAck)
    }

    /// The peer's FIN is in.
    fn peer_closed(self) -> bool {
        matches!(
            self,
            State::CloseWait | State::Closing | State::LastAck | State::TimeWait
        )
    }
}

type Tx<'a> = dyn FnMut(&Route, &Segment<'_>) + 'a;

#[derive(Debug)]
struct Conn<A> {
    route: Route,
    local_port: u16,
    peer_port: u16,
    state: State,
    iss: u32,
    snd_una: u32,
    snd_nxt: u32,
    /// The peer's receive window, as it last announced it.
    snd_wnd: u16,
    rcv_nxt: u32,
    /// Output not acknowledged yet, from `snd_una` (after the SYN); the first `sent` bytes
    /// are in flight.
    buf: VecDeque<u8>,
    sent: usize,
    /// The application is done, or the peer closed: FIN once `buf` is all sent.
    closing: bool,
    peer_mss: u16,
    timestamp: Option<u32>,
    rto: Duration,
    retransmit_at: Option<Instant>,
    retries: u8,
    last_seen: Instant,
    app: A,
}

/// The connections of one application for one guest.
#[derive(Debug)]
pub(crate) struct TcpResponder<A> {
    conns: Map<FlowKey, Conn<A>>,
    /// The key of the initial sequence numbers.
    isn: Keyed,
}

impl<A> TcpResponder<A> {
    /// No connections yet; `seed` keys the map and the initial sequence numbers.
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            conns: Keyed::maps(seed).map(),
            isn: Keyed::isn(seed),
        }
    }
}

fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

impl<A> Conn<A> {
    /// A connection in SYN-RECEIVED for the SYN `seg`, answered (to be) with `iss`.
    fn syn_received(
        now: Instant,
        key: FlowKey,
        route: Route,
        seg: &TcpSegment<'_>,
        iss: u32,
        app: A,
    ) -> Self {
        Conn {
            route,
            local_port: key.local_port,
            peer_port: key.peer_port,
            state: State::SynReceived,
            iss,
            snd_una: iss,
            snd_nxt: iss.wrapping_add(1),
            snd_wnd: seg.window,
            rcv_nxt: seg.seq.wrapping_add(1),
            buf: VecDeque::new(),
            sent: 0,
            closing: false,
            peer_mss: seg.mss.unwrap_or(536).clamp(64, OUR_MSS),
            timestamp: seg.timestamp.map(|(tsval, _)| tsval),
            rto: INITIAL_RTO,
            retransmit_at: None,
            retries: 0,
            last_seen: now,
            app,
        }
    }
}

impl<A: Application> TcpResponder<A> {
    /// The connection that the ACK `seg` completes, if it acknowledges a SYN cookie of this
    /// epoch or the one before: established, with the MSS the cookie carries.
    fn completed_by_cookie(
        &self,
        now: Instant,
        key: FlowKey,
        route: Route,
        seg: &TcpSegment<'_>,
        accept: impl FnOnce() -> A,
    ) -> Option<Conn<A>> {
        let iss = self.cookie_acked(now, &key, seg)?;
        let peer_iss = seg.seq.wrapping_sub(1);
        let syn = TcpSegment {
            seq: peer_iss,
            mss: Some(COOKIE_MSS[(iss & 3) as usize]),
            ..*seg
        };
        let mut conn = Conn::syn_received(now, key, route, &syn, iss, accept());
        conn.state = State::Established;
        conn.snd_una = conn.snd_nxt;
        Some(conn)
    }

    /// Whether `seg`, on a connection the responder does not have, acknowledges a SYN
    /// cookie it sent for `key` in this 64 s epoch or the one before.
    pub(crate) fn acks_cookie(&self, now: Instant, key: &FlowKey, seg: &TcpSegment<'_>) -> bool {
        self.cookie_acked(now, key, seg).is_some()
    }

    /// The SYN cookie `seg` acknowledges (see [`Self::acks_cookie`]), if any.
    fn cookie_acked(&self, now: Instant, key: &FlowKey, seg: &TcpSegment<'_>) -> Option<u32> {
        let ack = seg.ack.filter(|_| !seg.syn && !seg.rst)?;
        let iss = ack.wrapping_sub(1);
        let peer_iss = seg.seq.wrapping_sub(1);
        let epoch = now.micros() / COOKIE_EPOCH_MICROS;
        [epoch, epoch.saturating_sub(1)]
            .iter()
            .any(|&e| cookie_with(self.isn, key, peer_iss, e, iss & 3) == iss)
            .then_some(iss)
    }

    pub(crate) fn has(&self, key: &FlowKey) -> bool {
        self.conns.contains_key(key)
    }

    pub(crate) fn clear(&mut self) {
        // A new map rather than `clear`, which would keep the old one's memory.
        self.conns = self.conns.hasher().map();
    }

    /// Handles a segment of a known connection, or a SYN opening a new one; `accept` makes
    /// the new connection's application.
    pub(crate) fn handle(
        &mut self,
        now: Instant,
        key: FlowKey,
        route: Route,
        seg: &TcpSegment<'_>,
        accept: impl FnOnce() -> A,
        tx: &mut Tx<'_>,
    ) -> Handled {
        if seg.rst {
            self.conns.remove(&key);
            return Handled::Answered;
        }
        let opens = seg.syn && seg.ack.is_none();
        if opens
            && self
                .conns
                .get(&key)
                .is_some_and(|c| c.state == State::TimeWait)
        {
            // The peer reuses its port: a new connection.
            self.conns.remove(&key);
        }
        if !self.conns.contains_key(&key) {
            if !opens {
                // The ACK of a SYN cookie makes the connection that the SYN did not.
                match self.completed_by_cookie(now, key, route, seg, accept) {
                    Some(conn) if self.make_room() => {
                        self.conns.insert(key, conn);
                    }
                    _ => return Handled::Refused,
                }
            } else {
                let half_open = self
                    .conns
                    .values()
                    .filter(|c| c.state == State::SynReceived)
                    .count();
                // Past the half-open limit, or without room, nothing is kept: the SYN/ACK
                // carries a cookie that its ACK brings back.
                let stateless = half_open >= MAX_HALF_OPEN || !self.make_room();
                let iss = if stateless {
                    syn_cookie(self.isn, &key, seg, now.micros() / COOKIE_EPOCH_MICROS)
                } else {
                    initial_sequence(self.isn, &key, now)
                };
                let mut conn = Conn::syn_received(now, key, route, seg, iss, accept());
                conn.send_syn_ack(tx);
                if !stateless {
                    conn.arm(now);
                    self.conns.insert(key, conn);
                }
                return Handled::Answered;
            }
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            return Handled::Refused;
        };
        conn.last_seen = now;
        if let Some((tsval, _)) = seg.timestamp {
            conn.timestamp = Some(tsval);
        }
        if seg.syn {
            // The peer did not get our SYN/ACK.
            if conn.state == State::SynReceived {
                conn.send_syn_ack(tx);
            }
            return Handled::Answered;
        }
        if let Some(ack) = seg.ack {
            if conn.on_ack(now, ack, seg.window) {
                self.conns.remove(&key);
                return Handled::Answered;
            }
        }
        if conn.state == State::SynReceived {
            return Handled::Answered;
        }
        let need_ack = conn.on_data(seg);
        let sent = conn.push(now, tx);
        if need_ack && !sent {
            conn.send_ack(tx);
        }
        Handled::Answered
    }

    /// Whether a new connection fits, after forgetting the oldest in TIME-WAIT if need be,
    /// else the oldest half-open one (its peer may never answer).
    fn make_room(&mut self) -> bool {
        if self.conns.len() < MAX_CONNECTIONS {
            return true;
        }
        let oldest = |state: State| {
            self.conns
                .iter()
                .filter(|(_, c)| c.state == state)
                .min_by_key(|(_, c)| c.last_seen)
                .map(|(k, _)| *k)
        };
        let victim = oldest(State::TimeWait).or_else(|| oldest(State::SynReceived));
        victim.is_some_and(|k| self.conns.remove(&k).is_some())
    }

    /// The earliest time [`Self::handle_timeout`] has work.
    pub(crate) fn poll_at(&self) -> Option<Instant> {
        self.conns.values().map(Conn::deadline).min()
    }

    /// Retransmits what is due and forgets idle, closed or failed connections.
    pub(crate) fn handle_timeout(&mut self, now: Instant, tx: &mut Tx<'_>) {
        self.conns.retain(|_, conn| {
            let idle = now.saturating_since(conn.last_seen);
            if conn.state == State::TimeWait {
                return idle < TIME_WAIT;
            }
            if idle >= IDLE_TIMEOUT {
                return false;
            }
            match conn.retransmit_at {
                Some(at) if at <= now => {
                    if conn.retries >= MAX_RETRIES {
                        conn.send_rst(tx);
                        return false;
                    }
                    conn.retries += 1;
                    conn.rto *= 2;
                    conn.retransmit(tx);
                    conn.arm(now);
                    true
                }
                _ => true,
            }
        });
    }
}

impl<A: Application> Conn<A> {
    fn deadline(&self) -> Instant {
        match (self.state, self.retransmit_at) {
            (State::TimeWait, _) => self.last_seen + TIME_WAIT,
            (_, Some(at)) => at,
            (_, None) => self.last_seen + IDLE_TIMEOUT,
        }
    }

    fn segment<'a>(&self, seq: u32, payload: &'a [u8]) -> Segment<'a> {
        Segment {
            src_port: self.local_port,
            dst_port: self.peer_port,
            seq,
            ack: Some(self.rcv_nxt),
            window: WINDOW,
            // Our clock is the peer's: monotonic, so the peer's PAWS check passes.
            timestamp: self.timestamp.map(|peer| (peer, peer)),
            payload,
            ..Segment::default()
        }
    }

    fn arm(&mut self, now: Instant) {
        self.retransmit_at = Some(now + self.rto);
    }

    fn send_syn_ack(&self, tx: &mut Tx<'_>) {
        let seg = Segment {
            syn: true,
            mss: Some(OUR_MSS),
            ..self.segment(self.iss, &[])
        };
        tx(&self.route, &seg);
    }

    fn send_ack(&self, tx: &mut Tx<'_>) {
        tx(&self.route, &self.segment(self.snd_nxt, &[]));
    }

    fn send_rst(&self, tx: &mut Tx<'_>) {
        tx(
            &self.route,
            &Segment {
                rst: true,
                ..self.segment(self.snd_nxt, &[])
            },
        );
    }

    /// Takes in an acknowledgement and the window that comes with it. Returns `true` when
    /// it ends the connection (our FIN acknowledged after the peer's).
    fn on_ack(&mut self, now: Instant, ack: u32, window: u16) -> bool {
        if self.state == State::SynReceived {
            if ack == self.iss.wrapping_add(1) {
                self.state = State::Established;
                self.snd_una = ack;
                self.snd_wnd = window;
                self.acknowledged();
            }
            return false;
        }
        if seq_after(ack, self.snd_nxt) {
            return false;
        }
        if !seq_after(ack, self.snd_una) {
            if ack == self.snd_una {
                self.snd_wnd = window;
            }
            return false;
        }
        let acked = ack.wrapping_sub(self.snd_una) as usize;
        let data = acked.min(self.sent);
        self.buf.drain(..data);
        self.sent -= data;
        self.snd_una = ack;
        self.snd_wnd = window;
        self.acknowledged();
        if acked > data && self.state.fin_in_flight() {
            match self.state {
                State::FinWait1 => self.state = State::FinWait2,
                State::Closing => self.state = State::TimeWait,
                _ => return true,
            }
        }
        if self.snd_una != self.snd_nxt {
            self.arm(now);
        }
        false
    }

    /// Something new was acknowledged: the retransmission timer starts over.
    fn acknowledged(&mut self) {
        self.retries = 0;
        self.rto = INITIAL_RTO;
        self.retransmit_at = None;
    }

    /// Takes in the segment's data and FIN, if they are the next in the stream. Returns
    /// whether the peer is owed an acknowledgement.
    fn on_data(&mut self, seg: &TcpSegment<'_>) -> bool {
        let mut payload = seg.payload;
        if payload.is_empty() && !seg.fin {
            return false;
        }
        let mut seq = seg.seq;
        if seq_after(self.rcv_nxt, seq) {
            // A retransmission: skip what was already read.
            let old = self.rcv_nxt.wrapping_sub(seq) as usize;
            if old >= payload.len() + usize::from(seg.fin) {
                return true;
            }
            payload = payload.get(old..).unwrap_or_default();
            seq = self.rcv_nxt;
        }
        if seq != self.rcv_nxt || self.state.peer_closed() {
            // Out of order, or past the peer's own FIN: say where we are.
            return true;
        }
        let room = if self.closing {
            // The application is done: read and discard.
            usize::MAX
        } else {
            self.app.window(self.buf.len())
        };
        let take = payload.len().min(room);
        self.rcv_nxt = self.rcv_nxt.wrapping_add(take as u32);
        if take > 0 && !self.closing && self.app.receive(&payload[..take], &mut self.buf) {
            self.closing = true;
        }
        if take == payload.len() && seg.fin {
            self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
            self.closing = true;
            self.state = match self.state {
                State::Established => State::CloseWait,
                State::FinWait1 => State::Closing,
                State::FinWait2 => State::TimeWait,
                other => other,
            };
        }
        true
    }

    /// Sends what the window allows of the output, then the FIN when it is due. Returns
    /// whether a segment went out.
    fn push(&mut self, now: Instant, tx: &mut Tx<'_>) -> bool {
        let mss = usize::from(self.peer_mss);
        // At least one segment is always allowed in flight: against a zero window it is the
        // probe, repeated on the retransmission timer.
        let window = usize::from(self.snd_wnd).max(mss);
        let mut any = false;
        self.buf.make_contiguous();
        while self.sent < self.buf.len() {
            let room = window.saturating_sub(self.sent);
            if room == 0 {
                break;
            }
            let n = (self.buf.len() - self.sent).min(mss).min(room);
            let seq = self.snd_una.wrapping_add(self.sent as u32);
            let fin = self.closing && self.sent + n == self.buf.len();
            let chunk = &self.buf.as_slices().0[self.sent..self.sent + n];
            tx(
                &self.route,
                &Segment {
                    fin,
                    ..self.segment(seq, chunk)
                },
            );
            self.sent += n;
            self.snd_nxt = seq.wrapping_add(n as u32);
            if fin {
                self.fin_out();
            }
            any = true;
        }
        if self.closing && !self.state.fin_sent() && self.sent == self.buf.len() {
            tx(
                &self.route,
                &Segment {
                    fin: true,
                    ..self.segment(self.snd_nxt, &[])
                },
            );
            self.fin_out();
            any = true;
        }
        if any && self.retransmit_at.is_none() {
            self.arm(now);
        }
        any
    }

    /// Our FIN has just gone out, after all the output.
    fn fin_out(&mut self) {
        self.snd_nxt = self.snd_nxt.wrapping_add(1);
        self.state = match self.state {
            State::CloseWait => State::LastAck,
            _ => State::FinWait1,
        };
    }

    fn retransmit(&self, tx: &mut Tx<'_>) {
        if self.state == State::SynReceived {
            return self.send_syn_ack(tx);
        }
        let n = self.sent.min(usize::from(self.peer_mss));
        let (front, back) = self.buf.as_slices();
        let chunk: Vec<u8> = if n <= front.len() {
            front[..n].to_vec()
        } else {
            front.iter().chain(back).take(n).copied().collect()
        };
        let fin = self.state.fin_in_flight() && n == self.buf.len();
        if n > 0 || fin {
            tx(
                &self.route,
                &Segment {
                    fin,
                    ..self.segment(self.snd_una, &chunk)
                },
            );
        }
    }
}

/// The SYN cookie for a SYN (`seg`) on `flow` in cookie epoch `epoch`: a keyed hash of the
/// connection's addresses, the peer's initial sequence number and the epoch, whose two low
/// bits say the peer's MSS (rounded down to one of [`COOKIE_MSS`]).
fn syn_cookie(key: Keyed, flow: &FlowKey, seg: &TcpSegment<'_>, epoch: u64) -> u32 {
    let mss = seg.mss.unwrap_or(536);
    let index = COOKIE_MSS.iter().rposition(|&m| m <= mss).unwrap_or(0) as u32;
    cookie_with(key, flow, seg.seq, epoch, index)
}

fn cookie_with(key: Keyed, flow: &FlowKey, peer_iss: u32, epoch: u64, index: u32) -> u32 {
    (key.hash_strong(&(flow, peer_iss, epoch)) as u32 & !3) | index
}

/// An initial sequence number as RFC 6528 makes one: a keyed hash of the connection's
/// addresses, which a peer cannot guess without the key, plus a clock of 4 µs ticks.
fn initial_sequence(key: Keyed, flow: &FlowKey, now: Instant) -> u32 {
    (key.hash_strong(flow) as u32).wrapping_add((now.micros() / 4) as u32)
}
