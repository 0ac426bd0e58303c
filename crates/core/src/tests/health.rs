//! HTTP health checks answered by the surrogate over a real TCP connection, in virtual time.

use super::{handle, segment, spec, tcp_of, to_guest_v4, Recorder};
use crate::respond::Segment;
use crate::*;

const PORT: u16 = 8080;
const CLIENT_PORT: u16 = 41000;
const CLIENT_ISS: u32 = 7000;

fn check() -> HealthCheck {
    HealthCheck {
        port: PORT,
        path: "/healthz".into(),
        status: 200,
        body: "ok".into(),
    }
}

fn health_spec(check: HealthCheck) -> GuestSpec {
    GuestSpec {
        health: vec![check],
        ..spec(0)
    }
}

/// A TCP segment from the surrogate, checksum verified.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Out {
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    fin: bool,
    rst: bool,
    payload: Vec<u8>,
}

fn out(frame: &[u8]) -> Out {
    let (sport, dport, seq, ack, syn, fin, rst, payload) = tcp_of(frame);
    assert_eq!((sport, dport), (PORT, CLIENT_PORT), "the reply's ports");
    Out {
        seq,
        ack,
        syn,
        fin,
        rst,
        payload,
    }
}

/// A client of the surrogate's health check, and the surrogate, in virtual time.
struct Client {
    s: Surrogate,
    id: GuestId,
    r: Recorder,
    /// Virtual time, in milliseconds.
    now: u64,
    port: u16,
    window: u16,
    /// The client's next sequence number.
    seq: u32,
    /// The surrogate's initial sequence number.
    iss: u32,
    /// The next byte expected from the surrogate.
    rcv: u32,
    /// The surrogate's stream, in order.
    received: Vec<u8>,
    /// The surrogate's FIN is in.
    fin: bool,
}

impl Client {
    /// A sleeping guest with `spec`, and a client that has completed the handshake with its
    /// health port.
    fn connect(spec: GuestSpec, mss: u16, window: u16) -> Self {
        let mut s = Surrogate::new(7);
        let id = s.add_guest(spec).expect("fresh surrogate");
        s.stand_in(id, Some(Cut::PortDisabled), Instant::ZERO)
            .expect("awake guest");
        let mut c = Client {
            s,
            id,
            r: Recorder::default(),
            now: 1,
            port: PORT,
            window,
            seq: CLIENT_ISS,
            iss: 0,
            rcv: 0,
            received: Vec::new(),
            fin: false,
        };
        let syn = c.frame(Segment {
            syn: true,
            ack: None,
            mss: Some(mss),
            ..c.base()
        });
        let got = c.deliver(&syn);
        assert_eq!(got.len(), 1, "one SYN/ACK: {got:?}");
        let syn_ack = &got[0];
        assert!(syn_ack.syn && !syn_ack.fin && !syn_ack.rst);
        assert_eq!(syn_ack.ack, Some(CLIENT_ISS + 1));
        c.seq = CLIENT_ISS + 1;
        c.iss = syn_ack.seq;
        c.rcv = syn_ack.seq.wrapping_add(1);
        assert!(c.ack().is_empty(), "the handshake's ACK needs no answer");
        c
    }

    fn base(&self) -> Segment<'static> {
        Segment {
            src_port: CLIENT_PORT,
            dst_port: self.port,
            seq: self.seq,
            ack: Some(self.rcv),
            window: self.window,
            ..Segment::default()
        }
    }

    fn frame(&self, seg: Segment<'_>) -> Vec<u8> {
        segment(&to_guest_v4(0), seg)
    }

    /// Hands `frame` to the surrogate one millisecond later; returns what it sent, and takes
    /// in-order data and FIN into the client's stream.
    fn deliver(&mut self, frame: &[u8]) -> Vec<Out> {
        self.now += 1;
        handle(&mut self.s, self.now, frame, &mut self.r);
        self.take_sent()
    }

    fn take_sent(&mut self) -> Vec<Out> {
        let sent: Vec<Out> = self.r.sent.drain(..).map(|f| out(&f)).collect();
        for o in &sent {
            if o.syn || o.rst {
                continue;
            }
            if o.seq == self.rcv && !self.fin {
                self.received.extend(&o.payload);
                self.rcv = self.rcv.wrapping_add(o.payload.len() as u32);
                if o.fin {
                    self.fin = true;
                    self.rcv = self.rcv.wrapping_add(1);
                }
            }
        }
        sent
    }

    /// Sends `data` in one segment.
    fn send(&mut self, data: &[u8]) -> Vec<Out> {
        let frame = self.frame(Segment {
            payload: data,
            ..self.base()
        });
        self.seq = self.seq.wrapping_add(data.len() as u32);
        self.deliver(&frame)
    }

    /// Acknowledges everything received.
    fn ack(&mut self) -> Vec<Out> {
        self.send(b"")
    }

    /// Sends the client's FIN.
    fn close(&mut self) -> Vec<Out> {
        let frame = self.frame(Segment {
            fin: true,
            ..self.base()
        });
        self.seq = self.seq.wrapping_add(1);
        self.deliver(&frame)
    }

    fn assert_asleep_and_all_answered(&self) {
        assert!(self.r.wakes.is_empty(), "woken: {:?}", self.r.wakes);
        assert_eq!(self.s.state(self.id), Some(GuestState::Sleeping));
        assert_eq!(self.s.queue_depth(self.id), Some((0, 0)), "nothing held");
        assert!(
            self.r
                .verdicts
                .iter()
                .all(|v| *v == (Some(self.id), Verdict::Answered(AnswerKind::HealthCheck))),
            "{:?}",
            self.r.verdicts
        );
    }
}

const OK_200: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\
                      Connection: close\r\n\r\nok";

#[test]
fn health_check_get_is_answered_with_the_configured_status_and_body_then_closed() {
    let mut c = Client::connect(health_spec(check()), 1460, 64240);
    let got = c.send(b"GET /healthz HTTP/1.1\r\nHost: web1:8080\r\nUser-Agent: lb\r\n\r\n");
    assert_eq!(got.len(), 1, "the answer fits one segment: {got:?}");
    assert_eq!(got[0].seq, c.iss + 1);
    assert!(got[0].fin, "the FIN rides on the answer");
    assert_eq!(String::from_utf8_lossy(&c.received), OK_200);
    assert!(c.fin);
    // The client acknowledges the answer and the FIN, then closes its side.
    assert!(c.ack().is_empty());
    let got = c.close();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].seq, got[0].ack, got[0].fin, got[0].payload.len()),
        (c.iss + 1 + OK_200.len() as u32 + 1, Some(c.seq), false, 0),
        "a bare ACK of the client's FIN"
    );
    c.assert_asleep_and_all_answered();
    // TIME-WAIT lasts a while, then the connection is forgotten without a word.
    let due = c.s.poll_at().expect("TIME-WAIT");
    assert!(due > Instant::from_millis(c.now));
    c.s.handle_timeout(due, &mut c.r);
    assert!(c.r.sent.is_empty());
    assert_eq!(c.s.poll_at(), None, "the connection is gone");
}

#[test]
fn health_check_answers_the_configured_status_line_and_body_exactly() {
    let check = HealthCheck {
        status: 503,
        body: "draining, come back later\n".into(),
        ..check()
    };
    let mut c = Client::connect(health_spec(check), 1460, 64240);
    c.send(b"GET /healthz?full=1 HTTP/1.0\r\n\r\n");
    assert_eq!(
        String::from_utf8_lossy(&c.received),
        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 26\r\nContent-Type: text/plain\r\n\
         Connection: close\r\n\r\ndraining, come back later\n"
    );
    c.assert_asleep_and_all_answered();
}

#[test]
fn health_check_head_has_the_length_but_no_body() {
    let mut c = Client::connect(health_spec(check()), 1460, 64240);
    c.send(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        String::from_utf8_lossy(&c.received),
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\
         Connection: close\r\n\r\n"
    );
    assert!(c.fin);
    c.assert_asleep_and_all_answered();
}

#[test]
fn health_check_of_another_path_gets_404_and_another_method_405() {
    let mut c = Client::connect(health_spec(check()), 1460, 64240);
    c.send(b"GET /healthz/deep HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        String::from_utf8_lossy(&c.received),
        "HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\nContent-Type: text/plain\r\n\
         Connection: close\r\n\r\nnot found\n"
    );
    assert!(c.fin);
    c.assert_asleep_and_all_answered();

    let mut c = Client::connect(health_spec(check()), 1460, 64240);
    c.send(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        String::from_utf8_lossy(&c.received),
        "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 19\r\nContent-Type: text/plain\r\n\
         Allow: GET, HEAD\r\nConnection: close\r\n\r\nmethod not allowed\n"
    );
    c.assert_asleep_and_all_answered();
}

#[test]
fn health_check_in_absolute_form_is_matched_on_its_path() {
    let mut c = Client::connect(health_spec(check()), 1460, 64240);
    c.send(b"GET http://198.18.0.11:8080/healthz?x HTTP/1.1\r\n\r\n");
    assert_eq!(String::from_utf8_lossy(&c.received), OK_200);
}

#[test]
fn health_check_request_split_across_segments_is_answered_once_complete() {
    let mut c = Client::connect(health_spec(check()), 1460, 64240);
    let parts: [&[u8]; 5] = [
        b"\r\nGE",
        b"T /hea",
        b"lthz HTTP/1.1\r\nHo",
        b"st: x\r\n\r",
        b"\n",
    ];
    for (n, part) in parts.iter().enumerate() {
        let got = c.send(part);
        assert_eq!(got.len(), 1, "part {n}: {got:?}");
        assert_eq!(got[0].ack, Some(c.seq), "part {n} is acknowledged");
        if n + 1 < parts.len() {
            assert!(
                got[0].payload.is_empty() && !got[0].fin,
                "part {n}: no answer yet"
            );
        }
    }
    assert_eq!(String::from_utf8_lossy(&c.received), OK_200);
    assert!(c.fin);
    c.assert_asleep_and_all_answered();
}

#[test]
fn health_check_request_head_over_8_kib_gets_400_and_a_close() {
    let mut c = Client::connect(health_spec(check()), 1460, 64240);
    let mut request = b"GET /healthz HTTP/1.1\r\n".to_vec();
    while request.len() <= 9000 {
        request.extend(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    let mut answered_at = None;
    for (n, chunk) in request.chunks(1000).enumerate() {
        c.send(chunk);
        if c.fin && answered_at.is_none() {
            answered_at = Some(n);
        }
    }
    assert_eq!(
        answered_at,
        Some(8),
        "answered as the head passes 8192 bytes"
    );
    assert_eq!(
        String::from_utf8_lossy(&c.received),
        "HTTP/1.1 400 Bad Request\r\nContent-Length: 12\r\nContent-Type: text/plain\r\n\
         Connection: close\r\n\r\nbad request\n"
    );
    c.assert_asleep_and_all_answered();
}

#[test]
fn health_check_malformed_request_line_gets_400() {
    for line in [
        &b"GET /healthz\r\n"[..],
        b"GET  /healthz HTTP/1.1\r\n",
        b"GET /healthz HTTP/1.1 extra\r\n",
        b"GET healthz HTTP/1.1\r\n",
        b"GET /healthz SPDY/3\r\n",
        b"G(T /healthz HTTP/1.1\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n",
    ] {
        let mut c = Client::connect(health_spec(check()), 1460, 64240);
        c.send(line);
        let text = String::from_utf8_lossy(&c.received);
        assert!(
            text.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{:?} got {text:?}",
            String::from_utf8_lossy(line)
        );
        assert!(c.fin, "closed after the 400");
        c.assert_asleep_and_all_answered();
    }
}

#[test]
fn health_check_answer_is_retransmitted_until_acknowledged() {
    let mut c = Client::connect(health_spec(check()), 1460, 64240);
    let got = c.send(b"GET /healthz HTTP/1.1\r\n\r\n");
    let first = got[0].clone();
    // The client hears nothing of it: the surrogate sends it again, the same, with backoff.
    let mut last = Instant::from_millis(c.now);
    for attempt in 1..=3u32 {
        let due = c.s.poll_at().expect("the answer is in flight");
        assert_eq!(
            due.saturating_since(last),
            std::time::Duration::from_millis(200 << (attempt - 1)),
            "attempt {attempt}"
        );
        c.s.handle_timeout(due, &mut c.r);
        let again: Vec<Out> = c.r.sent.drain(..).map(|f| out(&f)).collect();
        assert_eq!(again, std::slice::from_ref(&first), "attempt {attempt}");
        last = due;
    }
    // Once acknowledged, nothing is due but the end of the connection.
    c.now = last.micros() / 1000 + 1;
    assert!(c.take_sent().is_empty());
    c.fin = true;
    c.rcv = first.seq + first.payload.len() as u32 + 1;
    assert!(c.ack().is_empty());
    let due = c.s.poll_at().expect("waiting for the client's FIN");
    assert!(
        due >= Instant::from_millis(c.now + 100_000),
        "no retransmission due"
    );
    c.assert_asleep_and_all_answered();
}

#[test]
fn health_check_answer_is_cut_to_the_peers_mss_and_window() {
    let check = HealthCheck {
        body: "x".repeat(300),
        ..check()
    };
    let expected = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: 300\r\nContent-Type: text/plain\r\n\
         Connection: close\r\n\r\n{}",
        "x".repeat(300)
    );
    // MSS 100, window 200: two segments at a time.
    let mut c = Client::connect(health_spec(check), 100, 200);
    let got = c.send(b"GET /healthz HTTP/1.1\r\n\r\n");
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().all(|o| o.payload.len() == 100 && !o.fin));
    let mut rounds = 1;
    while !c.fin {
        let got = c.ack();
        assert!(!got.is_empty() && got.len() <= 2, "{got:?}");
        assert!(got.iter().all(|o| o.payload.len() <= 100));
        rounds += 1;
        assert!(rounds < 10);
    }
    assert_eq!(String::from_utf8_lossy(&c.received), expected);
    assert_eq!(rounds, expected.len().div_ceil(200));
    c.assert_asleep_and_all_answered();
}

#[test]
fn health_check_retransmitted_fin_in_time_wait_is_acknowledged_and_never_wakes() {
    let mut c = Client::connect(health_spec(check()), 1460, 64240);
    c.send(b"GET /healthz HTTP/1.1\r\n\r\n");
    c.ack();
    let fin = c.frame(Segment {
        fin: true,
        ..c.base()
    });
    for _ in 0..3 {
        let got = c.deliver(&fin);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].ack, Some(c.seq + 1));
        assert!(!got[0].fin && got[0].payload.is_empty());
    }
    c.assert_asleep_and_all_answered();
}

#[test]
fn health_check_client_closing_first_gets_the_answer_then_a_fin() {
    let mut c = Client::connect(health_spec(check()), 1460, 64240);
    let request = b"GET /healthz HTTP/1.1\r\n\r\n";
    let frame = c.frame(Segment {
        payload: request,
        fin: true,
        ..c.base()
    });
    c.seq += request.len() as u32 + 1;
    let got = c.deliver(&frame);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].ack,
        Some(c.seq),
        "the request and the FIN are acknowledged"
    );
    assert!(got[0].fin);
    assert_eq!(String::from_utf8_lossy(&c.received), OK_200);
    // The client's ACK of our FIN ends it at once: nothing is left.
    assert!(c.ack().is_empty());
    assert_eq!(c.s.poll_at(), None);
    c.assert_asleep_and_all_answered();
}

#[test]
fn health_check_reset_by_the_client_is_forgotten() {
    let mut c = Client::connect(health_spec(check()), 1460, 64240);
    c.send(b"GET /healthz HTTP/1.1\r\n\r\n");
    let rst = c.frame(Segment {
        rst: true,
        ack: None,
        ..c.base()
    });
    assert!(c.deliver(&rst).is_empty());
    assert_eq!(c.s.poll_at(), None);
    c.assert_asleep_and_all_answered();
}

#[test]
fn health_port_of_an_awake_guest_is_left_to_the_guest() {
    let mut s = Surrogate::new(7);
    let id = s.add_guest(health_spec(check())).expect("fresh");
    let mut r = Recorder::default();
    handle(&mut s, 1, &super::syn(PORT), &mut r);
    assert!(r.sent.is_empty());
    assert_eq!(
        r.verdicts,
        [(None, Verdict::Ignored(IgnoreReason::NotForSleepingGuest))]
    );
    // Falling asleep, it is held for the guest, not answered.
    s.sleep(id, Instant::ZERO).expect("awake");
    handle(&mut s, 2, &super::syn(PORT), &mut r);
    assert!(r.sent.is_empty());
    assert_eq!(r.verdicts[1], (Some(id), Verdict::Queued));
    assert!(r.wakes.is_empty());
}

#[test]
fn health_connections_are_forgotten_when_the_guest_wakes() {
    let mut c = Client::connect(health_spec(check()), 1460, 64240);
    c.send(b"GET /hea");
    assert!(c.s.poll_at().is_some());
    c.s.wake(c.id, WakeCause::Requested, Instant::ZERO)
        .expect("sleeping");
    assert_eq!(c.s.poll_at(), None);
    // Now the rest of the request is the guest's, held for it.
    c.send(b"lthz HTTP/1.1\r\n\r\n");
    assert!(c.received.is_empty());
    assert_eq!(c.r.verdicts.last().map(|v| v.1), Some(Verdict::Queued));
}

#[test]
fn non_health_ports_keep_their_behaviour() {
    let (mut s, id) = {
        let mut s = Surrogate::new(7);
        let id = s.add_guest(health_spec(check())).expect("fresh");
        s.stand_in(id, Some(Cut::PortDisabled), Instant::ZERO)
            .expect("awake");
        (s, id)
    };
    let mut r = Recorder::default();
    handle(&mut s, 1, &super::syn(5432), &mut r);
    assert_eq!(
        r.verdicts,
        [(Some(id), Verdict::Answered(AnswerKind::TcpReset))]
    );
    handle(&mut s, 2, &super::syn(80), &mut r);
    assert_eq!(r.wakes, [(id, WakeCause::TcpSyn { port: 80 })]);
}

/// A SYN to the health port from `port`, as a flood sends it (from addresses that never
/// answer), at `ms`.
fn flood_syn(s: &mut Surrogate, r: &mut Recorder, ms: u64, port: u16) {
    let syn = segment(
        &to_guest_v4(0),
        Segment {
            src_port: port,
            dst_port: PORT,
            seq: u32::from(port) * 7919,
            syn: true,
            mss: Some(1460),
            window: 1000,
            ..Segment::default()
        },
    );
    handle(s, ms, &syn, r);
}

#[test]
fn health_check_is_answered_under_a_syn_flood_through_syn_cookies() {
    let mut c = Client::connect(health_spec(check()), 1460, 65535);
    // 5,000 SYNs from ports that never complete a handshake: each gets a SYN/ACK, none keeps
    // the real client out.
    let mut flood = Recorder::default();
    for port in 0..5_000u16 {
        flood_syn(&mut c.s, &mut flood, c.now, 20_000 + port);
    }
    assert_eq!(flood.sent.len(), 5_000, "every SYN answered");
    assert!(flood.wakes.is_empty());
    // The client connected before the flood is served, and closes.
    c.send(b"GET /healthz HTTP/1.1\r\nHost: g\r\n\r\n");
    assert_eq!(String::from_utf8_lossy(&c.received), OK_200);
    c.ack();
    c.close();
    // A new client during the flood gets a SYN cookie, and its ACK (with its request)
    // makes the connection: answered.
    let mut d = Client {
        port: PORT,
        seq: CLIENT_ISS + 500,
        received: Vec::new(),
        fin: false,
        ..c
    };
    let syn = segment(
        &to_guest_v4(0),
        Segment {
            src_port: CLIENT_PORT,
            dst_port: PORT,
            seq: d.seq,
            syn: true,
            mss: Some(1400),
            window: 65535,
            ..Segment::default()
        },
    );
    d.now += 1;
    handle(&mut d.s, d.now, &syn, &mut d.r);
    let got: Vec<Out> = d.r.sent.drain(..).map(|f| out(&f)).collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].syn && got[0].ack == Some(d.seq + 1));
    d.seq += 1;
    d.iss = got[0].seq;
    d.rcv = got[0].seq.wrapping_add(1);
    d.send(b"GET /healthz HTTP/1.1\r\nHost: g\r\n\r\n");
    assert_eq!(String::from_utf8_lossy(&d.received), OK_200);
    assert!(d.r.wakes.is_empty(), "woken: {:?}", d.r.wakes);
}

#[test]
fn an_ack_with_a_forged_or_stale_cookie_is_refused() {
    let mut s = Surrogate::new(7);
    let id = s.add_guest(health_spec(check())).expect("fresh");
    s.stand_in(id, Some(Cut::PortDisabled), Instant::ZERO)
        .expect("awake");
    let mut r = Recorder::default();
    // Enough half-open handshakes that the next SYN gets a cookie.
    for port in 0..16u16 {
        flood_syn(&mut s, &mut r, 1, 30_000 + port);
    }
    r.sent.clear();
    let syn = segment(
        &to_guest_v4(0),
        Segment {
            src_port: CLIENT_PORT,
            dst_port: PORT,
            seq: CLIENT_ISS,
            syn: true,
            mss: Some(1460),
            window: 65535,
            ..Segment::default()
        },
    );
    handle(&mut s, 2, &syn, &mut r);
    let cookie = out(&r.sent.pop().expect("a SYN/ACK")).seq;
    let ack = |ms: u64, s: &mut Surrogate, r: &mut Recorder, acked: u32| {
        let frame = segment(
            &to_guest_v4(0),
            Segment {
                src_port: CLIENT_PORT,
                dst_port: PORT,
                seq: CLIENT_ISS + 1,
                ack: Some(acked),
                window: 65535,
                payload: b"GET /healthz HTTP/1.1\r\n\r\n",
                ..Segment::default()
            },
        );
        handle(s, ms, &frame, r);
    };
    // A guess, off in the hash's bits, and the right one three minutes later (two 64 s
    // epochs on): no connection of the surrogate's, so nothing is answered (the segment
    // is the guest's, as any on a connection the surrogate does not know).
    let answered = (Some(id), Verdict::Answered(AnswerKind::HealthCheck));
    ack(3, &mut s, &mut r, cookie.wrapping_add(1 + 4));
    assert_ne!(r.verdicts.last(), Some(&answered));
    ack(180_000, &mut s, &mut r, cookie.wrapping_add(1));
    assert_ne!(r.verdicts.last(), Some(&answered));
    assert!(r.sent.is_empty(), "answered a bad cookie: {:?}", r.sent);
    // And in time: the connection, and the answer.
    let mut fresh = Surrogate::new(7);
    let id2 = fresh.add_guest(health_spec(check())).expect("fresh");
    fresh
        .stand_in(id2, Some(Cut::PortDisabled), Instant::ZERO)
        .expect("awake");
    let mut r2 = Recorder::default();
    for port in 0..16u16 {
        flood_syn(&mut fresh, &mut r2, 1, 30_000 + port);
    }
    handle(&mut fresh, 2, &syn, &mut r2);
    r2.sent.clear();
    ack(70_000, &mut fresh, &mut r2, cookie.wrapping_add(1));
    let answer: Vec<u8> = r2.sent.iter().flat_map(|f| out(f).payload).collect();
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200 OK"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(r2.wakes.is_empty());
}

#[test]
fn health_check_label_is_health_check() {
    assert_eq!(AnswerKind::HealthCheck.as_str(), "health-check");
    assert_eq!(DropReason::HealthRefused.as_str(), "health-refused");
}

proptest::proptest! {
    #[test]
    fn arbitrary_request_bytes_on_the_health_port_never_panic_nor_wake(
        bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..12_000),
        cuts in proptest::collection::vec(1usize..2000, 1..20),
        mss in 64u16..1500,
    ) {
        let mut c = Client::connect(health_spec(check()), mss, 65535);
        let mut rest = bytes.as_slice();
        let mut cuts = cuts.iter().cycle();
        while !rest.is_empty() {
            let n = (*cuts.next().expect("cycle")).min(rest.len());
            let (part, tail) = rest.split_at(n);
            c.send(part);
            rest = tail;
        }
        c.ack();
        c.close();
        let text = String::from_utf8_lossy(&c.received);
        proptest::prop_assert!(c.received.is_empty() || text.starts_with("HTTP/1.1 "), "{text:?}");
        proptest::prop_assert!(c.received.is_empty() || c.fin);
        proptest::prop_assert!(c.r.wakes.is_empty());
        proptest::prop_assert_eq!(c.s.state(c.id), Some(GuestState::Sleeping));
    }
}
