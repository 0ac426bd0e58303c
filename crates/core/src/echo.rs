//! The TCP echo service (port 7): a small, complete TCP responder.
//!
//! It accepts, echoes every byte it receives in order, answers a FIN with its own, and
//! retransmits what the peer has not acknowledged. Connections live only while the guest
//! sleeps; when it wakes they are forgotten, and the guest's kernel resets them.

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::time::Duration;

use crate::classify::TcpSegment;
use crate::respond::{Route, Segment};
use crate::time::Instant;

/// The receive window the service offers; no window scaling.
const WINDOW: u16 = 65_535;
/// The segment size the service announces and sends at most.
const OUR_MSS: u16 = 1460;
/// First retransmission timeout; doubles each time.
const INITIAL_RTO: Duration = Duration::from_millis(200);
/// Retransmissions before the connection is given up.
const MAX_RETRIES: u8 = 6;
/// A connection idle this long is forgotten.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Connections per guest at most.
pub(crate) const MAX_CONNECTIONS: usize = 64;

/// A connection's addresses, from the guest's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FlowKey {
    pub local: IpAddr,
    pub local_port: u16,
    pub peer: IpAddr,
    pub peer_port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    SynReceived,
    Established,
    /// Our FIN is sent (after the peer's); waiting for its acknowledgement.
    LastAck,
}

#[derive(Debug)]
struct Conn {
    route: Route,
    local_port: u16,
    peer_port: u16,
    state: State,
    iss: u32,
    snd_una: u32,
    snd_nxt: u32,
    rcv_nxt: u32,
    /// Echoed bytes not acknowledged yet, starting at `snd_una` (after the SYN).
    unacked: VecDeque<u8>,
    peer_mss: u16,
    timestamp: Option<u32>,
    rto: Duration,
    retransmit_at: Option<Instant>,
    retries: u8,
    last_seen: Instant,
}

/// What the service did with a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handled {
    /// The segment belonged to the service.
    Answered,
    /// The segment was refused (table full, or not a SYN for an unknown connection).
    Refused,
}

/// The echo connections of one guest.
#[derive(Debug, Default)]
pub(crate) struct EchoService {
    conns: HashMap<FlowKey, Conn>,
}

fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

impl EchoService {
    pub(crate) fn has(&self, key: &FlowKey) -> bool {
        self.conns.contains_key(key)
    }

    pub(crate) fn clear(&mut self) {
        self.conns = HashMap::new();
    }

    /// Handles a segment of a known connection, or a SYN opening a new one.
    pub(crate) fn handle(
        &mut self,
        now: Instant,
        seed: u64,
        key: FlowKey,
        route: Route,
        seg: &TcpSegment<'_>,
        tx: &mut dyn FnMut(&Route, &Segment<'_>),
    ) -> Handled {
        if seg.rst {
            self.conns.remove(&key);
            return Handled::Answered;
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            if !seg.syn || seg.ack.is_some() || self.conns.len() >= MAX_CONNECTIONS {
                return Handled::Refused;
            }
            let iss = initial_sequence(seed, &key, now);
            let mut conn = Conn {
                route,
                local_port: key.local_port,
                peer_port: key.peer_port,
                state: State::SynReceived,
                iss,
                snd_una: iss,
                snd_nxt: iss.wrapping_add(1),
                rcv_nxt: seg.seq.wrapping_add(1),
                unacked: VecDeque::new(),
                peer_mss: seg.mss.unwrap_or(536).clamp(64, OUR_MSS),
                timestamp: seg.timestamp.map(|(tsval, _)| tsval),
                rto: INITIAL_RTO,
                retransmit_at: Some(now + INITIAL_RTO),
                retries: 0,
                last_seen: now,
            };
            conn.send_syn_ack(now, tx);
            self.conns.insert(key, conn);
            return Handled::Answered;
        };
        conn.last_seen = now;
        if let Some((tsval, _)) = seg.timestamp {
            conn.timestamp = Some(tsval);
        }
        if seg.syn {
            // The peer did not get our SYN/ACK.
            if conn.state == State::SynReceived {
                conn.send_syn_ack(now, tx);
            }
            return Handled::Answered;
        }
        if let Some(ack) = seg.ack {
            conn.on_ack(now, ack);
        }
        if conn.state == State::LastAck && conn.snd_una == conn.snd_nxt {
            self.conns.remove(&key);
            return Handled::Answered;
        }
        if conn.state == State::SynReceived {
            return Handled::Answered;
        }
        let mut need_ack = false;
        if !seg.payload.is_empty() || seg.fin {
            if seg.seq != conn.rcv_nxt {
                // Old or out of order: say where we are.
                need_ack = true;
            } else {
                let room = usize::from(WINDOW).saturating_sub(conn.unacked.len());
                let take = seg.payload.len().min(room);
                let data = &seg.payload[..take];
                conn.rcv_nxt = conn.rcv_nxt.wrapping_add(take as u32);
                if !data.is_empty() {
                    conn.send_data(now, data, tx);
                }
                if take < seg.payload.len() {
                    need_ack = true;
                } else if seg.fin && conn.state == State::Established {
                    conn.rcv_nxt = conn.rcv_nxt.wrapping_add(1);
                    conn.state = State::LastAck;
                    conn.send_fin(now, tx);
                } else if data.is_empty() {
                    need_ack = true;
                }
            }
        }
        if need_ack {
            conn.send_ack(tx);
        }
        Handled::Answered
    }

    /// The earliest time [`Self::handle_timeout`] has work.
    pub(crate) fn poll_at(&self) -> Option<Instant> {
        self.conns
            .values()
            .map(|c| c.retransmit_at.unwrap_or(c.last_seen + IDLE_TIMEOUT))
            .min()
    }

    /// Retransmits what is due and forgets idle or failed connections.
    pub(crate) fn handle_timeout(
        &mut self,
        now: Instant,
        tx: &mut dyn FnMut(&Route, &Segment<'_>),
    ) {
        self.conns.retain(|_, conn| {
            if now.saturating_since(conn.last_seen) >= IDLE_TIMEOUT {
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
                    conn.retransmit(now, tx);
                    true
                }
                _ => true,
            }
        });
    }
}

impl Conn {
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

    fn send_syn_ack(&mut self, now: Instant, tx: &mut dyn FnMut(&Route, &Segment<'_>)) {
        let seg = Segment {
            syn: true,
            mss: Some(OUR_MSS),
            ..self.segment(self.iss, &[])
        };
        tx(&self.route, &seg);
        self.arm(now);
    }

    fn send_ack(&self, tx: &mut dyn FnMut(&Route, &Segment<'_>)) {
        tx(&self.route, &self.segment(self.snd_nxt, &[]));
    }

    fn send_rst(&self, tx: &mut dyn FnMut(&Route, &Segment<'_>)) {
        tx(
            &self.route,
            &Segment {
                rst: true,
                ..self.segment(self.snd_nxt, &[])
            },
        );
    }

    fn send_fin(&mut self, now: Instant, tx: &mut dyn FnMut(&Route, &Segment<'_>)) {
        tx(
            &self.route,
            &Segment {
                fin: true,
                ..self.segment(self.snd_nxt, &[])
            },
        );
        self.snd_nxt = self.snd_nxt.wrapping_add(1);
        self.arm(now);
    }

    fn send_data(&mut self, now: Instant, data: &[u8], tx: &mut dyn FnMut(&Route, &Segment<'_>)) {
        for chunk in data.chunks(usize::from(self.peer_mss)) {
            tx(&self.route, &self.segment(self.snd_nxt, chunk));
            self.snd_nxt = self.snd_nxt.wrapping_add(chunk.len() as u32);
        }
        self.unacked.extend(data);
        if self.retransmit_at.is_none() {
            self.arm(now);
        }
    }

    fn on_ack(&mut self, now: Instant, ack: u32) {
        if !seq_after(ack, self.snd_una) || seq_after(ack, self.snd_nxt) {
            return;
        }
        let mut acked = ack.wrapping_sub(self.snd_una) as usize;
        if self.state == State::SynReceived {
            self.state = State::Established;
            acked -= 1;
        }
        let data = acked.min(self.unacked.len());
        self.unacked.drain(..data);
        self.snd_una = ack;
        self.retries = 0;
        self.rto = INITIAL_RTO;
        self.retransmit_at = None;
        if self.snd_una != self.snd_nxt {
            self.arm(now);
        }
    }

    fn retransmit(&mut self, now: Instant, tx: &mut dyn FnMut(&Route, &Segment<'_>)) {
        match self.state {
            State::SynReceived => {
                let seg = Segment {
                    syn: true,
                    mss: Some(OUR_MSS),
                    ..self.segment(self.iss, &[])
                };
                tx(&self.route, &seg);
            }
            State::Established | State::LastAck => {
                let n = self.unacked.len().min(usize::from(self.peer_mss));
                if n > 0 {
                    let chunk: Vec<u8> = self.unacked.iter().take(n).copied().collect();
                    tx(&self.route, &self.segment(self.snd_una, &chunk));
                } else if self.state == State::LastAck {
                    let fin_seq = self.snd_nxt.wrapping_sub(1);
                    tx(
                        &self.route,
                        &Segment {
                            fin: true,
                            ..self.segment(fin_seq, &[])
                        },
                    );
                }
            }
        }
        self.arm(now);
    }
}

/// An initial sequence number that a peer cannot guess without the seed, and that moves
/// with time as RFC 6528 asks.
fn initial_sequence(seed: u64, key: &FlowKey, now: Instant) -> u32 {
    let mut h = DefaultHasher::new();
    seed.hash(&mut h);
    key.hash(&mut h);
    (h.finish() as u32).wrapping_add((now.micros() / 4) as u32)
}
