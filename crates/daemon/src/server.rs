//! The daemon's end of the HTTP API ([`vmnap_api`] has its types, routes and codec): a
//! [`Server`] shared by the connection threads, which routes each request to the bridges'
//! workers, the registry of guests, the reloader, the log control or the event bus.

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tracing::{debug, error};

use crate::bridge::{Answer, Command, History, Refusal, Reply};
use crate::events::EventBus;
use crate::registry::Registry;
use vmnap_api::http::{self, Conn};
use vmnap_api::{
    ActionBody, GuestDetail, GuestStatus, LogFilter, Message, Record, Route, CLIENT_TIMEOUT, ROUTES,
};

/// A response body this large (a status or the metrics of a thousand guests or more) is
/// followed by [`vmnap_host::memory::release_free_memory`].
const LARGE_RESPONSE: usize = 256 * 1024;

const NO_LOG_CONTROL: &str =
    "this daemon's log filter cannot be changed at run time (it was not started by `vmnap run`)";

/// The body of the other actions (optional): an empty object.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyBody {}

/// Connections served at once on each listener; past it, new ones get 503. The unix
/// socket's are its own: nothing on the TCP listener can take them.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections served at once for one address on the TCP listener.
pub const MAX_PER_PEER: usize = 8;
/// How long a client has to send its whole request, head and body.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    Unix,
    Tcp,
}

/// The connections being served, per listener and per TCP peer.
#[derive(Debug, Default)]
pub(crate) struct Capacity {
    unix: AtomicUsize,
    tcp: AtomicUsize,
    peers: Mutex<HashMap<IpAddr, usize>>,
}

/// A connection's place in [`Capacity`], given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot<'c> {
    capacity: &'c Capacity,
    listener: Listener,
    peer: Option<IpAddr>,
}

impl Capacity {
    fn count(&self, listener: Listener) -> &AtomicUsize {
        match listener {
            Listener::Unix => &self.unix,
            Listener::Tcp => &self.tcp,
        }
    }

    /// A place for a connection on `listener` from `peer` (TCP), or why there is none.
    pub(crate) fn take(
        &self,
        listener: Listener,
        peer: Option<IpAddr>,
    ) -> Result<Slot<'_>, &'static str> {
        let count = self.count(listener);
        if count.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            count.fetch_sub(1, Ordering::AcqRel);
            return Err("too many connections; try again");
        }
        if let Some(ip) = peer {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            let n = peers.entry(ip).or_insert(0);
            if *n >= MAX_PER_PEER {
                drop(peers);
                count.fetch_sub(1, Ordering::AcqRel);
                return Err("too many connections from this address; try again");
            }
            *n += 1;
        }
        Ok(Slot {
            capacity: self,
            listener,
            peer,
        })
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(ip) = self.peer {
            let mut peers = self
                .capacity
                .peers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(n) = peers.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    peers.remove(&ip);
                }
            }
        }
        self.capacity
            .count(self.listener)
            .fetch_sub(1, Ordering::AcqRel);
    }
}

/// The answer to a request over TCP without the token.
fn unauthorized() -> http::Response {
    http::Response::error(
        401,
        "this request needs the token of `[api] token_file`: `Authorization: Bearer TOKEN`, or a browser's login with the token as the password",
    )
    .with_header("WWW-Authenticate", "Bearer realm=\"vmnap\"")
    // A browser asks its user for the token (as the password) on this one.
    .with_header("WWW-Authenticate", "Basic realm=\"vmnap\", charset=\"UTF-8\"")
}

/// The guest's name in `path` if it matches `pattern`; `Some("")` for a pattern without one.
fn matches<'p>(pattern: &str, path: &'p str) -> Option<&'p str> {
    let mut name = "";
    let mut p = pattern.split('/');
    let mut s = path.split('/');
    loop {
        match (p.next(), s.next()) {
            (None, None) => return Some(name),
            (Some("{name}"), Some(seg)) if !seg.is_empty() => name = seg,
            (Some(a), Some(b)) if a == b => {}
            _ => return None,
        }
    }
}

/// What the server knows and shares between its connections.
pub(crate) struct Server<'a> {
    /// The guests managed now.
    pub registry: Registry,
    /// Reloads the config (`None`: refused).
    pub reloader: Option<&'a crate::reload::Reloader<'a>>,
    /// Sets the log filter (`None`: refused).
    pub log: Option<&'a crate::LogControl>,
    pub bus: EventBus,
    /// The token requests over TCP must carry.
    pub token: Option<String>,
    pub stop: &'a AtomicBool,
    /// The cap on resumes, for the metrics (`None`: not shown).
    pub resume_gate: Option<std::sync::Arc<crate::gate::ResumeGate>>,
    /// The budget of held frames, for the metrics (`None`: not shown).
    pub hold_budget: Option<std::sync::Arc<vmnap_core::HoldBudget>>,
}

impl std::fmt::Debug for Server<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("reloader", &self.reloader)
            .finish_non_exhaustive()
    }
}

/// What a request asks for, once routed.
enum Outcome {
    Reply(http::Response),
    Events { guest: Option<String>, follow: bool },
}

impl<'a> Server<'a> {
    pub(crate) fn new(
        registry: Registry,
        bus: EventBus,
        token: Option<String>,
        stop: &'a AtomicBool,
    ) -> Self {
        Server {
            registry,
            reloader: None,
            log: None,
            bus,
            token,
            stop,
            resume_gate: None,
            hold_budget: None,
        }
    }

    fn has_guest(&self, name: &str) -> bool {
        self.registry.has_guest(name)
    }

    /// Whether guest `name` of the config waits for its libvirt domain to run.
    fn is_waiting(&self, name: &str) -> bool {
        self.reloader.is_some_and(|r| r.is_waiting(name))
    }

    /// Reloads the config; logs and returns the outcome.
    pub(crate) fn reload(&self) -> http::Response {
        let Some(reloader) = self.reloader else {
            return http::Response::error(
                409,
                "this daemon was not started from a config file, so there is nothing to reload",
            );
        };
        let outcome = reloader.reload(&self.registry, &self.bus);
        // Reading a config of thousands of guests peaks at megabytes, all freed once the
        // reload has returned.
        vmnap_host::memory::release_free_memory();
        match outcome {
            Ok(done) => http::Response::json(200, &done),
            Err(e) => {
                tracing::error!(error = %e, "reload refused");
                http::Response::error(e.status(), e.to_string())
            }
        }
    }

    /// Answers the one request on `conn` (`tcp`: it came over TCP, so it needs the token,
    /// which is checked as soon as the request's head is in, before any body is read). The
    /// whole request must be in within [`REQUEST_DEADLINE`].
    pub(crate) fn serve(&self, mut conn: Conn, tcp: bool) {
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
        let admit = |request: &http::Request| {
            if tcp && !self.authorized(request) {
                Err(unauthorized())
            } else {
                Ok(())
            }
        };
        let until = Instant::now() + REQUEST_DEADLINE;
        let read = http::read_request_admitted(&mut http::Deadline::new(&mut conn, until), admit);
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let request = match read {
            Ok(r) => r,
            Err(Some(refusal)) => {
                debug!(status = refusal.status, "refused an API request");
                let _ = http::write_response(&mut conn, &refusal);
                return;
            }
            Err(None) => return,
        };
        let outcome = self.route(&request);
        match outcome {
            Outcome::Reply(response) => {
                // The path as Debug: a decoded `%0a` in it stays `\n`, not a new log line.
                debug!(method = %request.method, path = ?request.path, status = response.status, "API request");
                let _ = http::write_response(&mut conn, &response);
                if response.body.len() >= LARGE_RESPONSE {
                    // Its making (a status or the metrics of thousands of guests) left the
                    // heap in pieces, freed by now: hand the whole pages back.
                    drop(response);
                    vmnap_host::memory::release_free_memory();
                }
            }
            Outcome::Events { guest, follow } => self.stream(conn, guest.as_deref(), follow),
        }
    }

    /// Whether `request` carries the token: `Authorization: Bearer TOKEN`, or, for a `GET`
    /// (a browser, which asks for it when told `WWW-Authenticate: Basic`), HTTP basic
    /// authentication with any user name and the token as the password. Only for `GET`: a
    /// browser sends cached basic credentials along with any page's cross-site `POST`.
    fn authorized(&self, request: &http::Request) -> bool {
        use base64::Engine as _;
        let Some(token) = self.token.as_deref() else {
            return false;
        };
        let header = request.header("authorization").unwrap_or_default();
        let basic = header
            .strip_prefix("Basic ")
            .filter(|_| request.method == "GET")
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|b| String::from_utf8(b).ok());
        let given = match &basic {
            Some(pair) => pair.split_once(':').map_or("", |(_, password)| password),
            None => header
                .strip_prefix("Bearer ")
                .map(str::trim)
                .unwrap_or_default(),
        };
        // Compare in time that does not depend on where they differ.
        given.len() == token.len()
            && given
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    fn route(&self, request: &http::Request) -> Outcome {
        let found: Vec<(&Route, &str)> = ROUTES
            .iter()
            .filter_map(|r| matches(r.path, &request.path).map(|name| (r, name)))
            .collect();
        if found.is_empty() {
            return Outcome::Reply(http::Response::error(
                404,
                format!("no such path: {}", request.path),
            ));
        }
        let Some(&(route, name)) = found.iter().find(|(r, _)| r.method == request.method) else {
            let allow: Vec<&str> = found.iter().map(|(r, _)| r.method).collect();
            return Outcome::Reply(
                http::Response::error(
                    405,
                    format!(
                        "{} does not take {}; it takes {}",
                        request.path,
                        request.method,
                        allow.join(", ")
                    ),
                )
                .with_header("Allow", allow.join(", ")),
            );
        };
        let allowed: &[&str] = if route.path == "/v1/events" {
            &["follow", "guest"]
        } else {
            &[]
        };
        if let Some((k, _)) = request
            .query
            .iter()
            .find(|(k, _)| !allowed.contains(&k.as_str()))
        {
            return Outcome::Reply(http::Response::error(
                400,
                format!("{} takes no query parameter `{k}`", route.path),
            ));
        }
        if route.path.contains("{name}") && !self.has_guest(name) {
            return Outcome::Reply(http::Response::error(404, format!("no guest named {name}")));
        }
        let reply = match (route.method, route.path) {
            ("GET", "/v1/guests") => http::Response::json(200, &self.statuses()),
            ("GET", "/metrics") => self.metrics(),
            ("GET", "/") => self.page(),
            ("GET", "/v1/guests/{name}") => self.detail(name),
            ("POST", "/v1/guests/{name}/sleep") | ("POST", "/v1/guests/{name}/wake") => {
                match body::<ActionBody>(&request.body) {
                    Err(r) => r,
                    Ok(b) => {
                        let sleep = route.path.ends_with("/sleep");
                        self.action(name, b.wait.unwrap_or(true), move |guest, reply| {
                            if sleep {
                                Command::Sleep { guest, reply }
                            } else {
                                Command::Wake { guest, reply }
                            }
                        })
                    }
                }
            }
            ("POST", "/v1/guests/{name}/pin") | ("POST", "/v1/guests/{name}/unpin") => {
                match body::<EmptyBody>(&request.body) {
                    Err(r) => r,
                    Ok(_) => {
                        let pinned = route.path.ends_with("/pin");
                        self.action(name, true, move |guest, reply| Command::Pin {
                            guest,
                            pinned,
                            reply,
                        })
                    }
                }
            }
            ("POST", "/v1/reload") => match body::<EmptyBody>(&request.body) {
                Err(r) => r,
                Ok(_) => self.reload(),
            },
            ("GET", "/v1/log") => match self.log {
                Some(log) => http::Response::json(200, &LogFilter { filter: log.get() }),
                None => http::Response::error(409, NO_LOG_CONTROL),
            },
            ("PUT", "/v1/log") => match (body::<Option<LogFilter>>(&request.body), self.log) {
                (Err(r), _) => r,
                (Ok(None), _) => http::Response::error(
                    400,
                    "the body must be an object like {\"filter\": \"debug\"}",
                ),
                (Ok(Some(_)), None) => http::Response::error(409, NO_LOG_CONTROL),
                (Ok(Some(f)), Some(log)) => match log.set(&f.filter) {
                    Ok(()) => {
                        tracing::info!(filter = ?f.filter, "log filter changed");
                        http::Response::json(200, &LogFilter { filter: log.get() })
                    }
                    Err(e) => http::Response::error(400, e),
                },
            },
            ("GET", "/v1/events") => return self.events_request(request),
            _ => http::Response::error(500, "a route without a handler"),
        };
        Outcome::Reply(reply)
    }

    fn events_request(&self, request: &http::Request) -> Outcome {
        let mut follow = true;
        let mut guest = None;
        for (k, v) in &request.query {
            match (k.as_str(), v.as_str()) {
                ("follow", "true" | "1" | "") => follow = true,
                ("follow", "false" | "0") => follow = false,
                ("follow", other) => {
                    return Outcome::Reply(http::Response::error(
                        400,
                        format!("follow must be true or false, not `{other}`"),
                    ))
                }
                // A guest let go (its domain stopped outside vmnap) has events too.
                ("guest", name) if self.has_guest(name) || self.is_waiting(name) => {
                    guest = Some(name.to_owned())
                }
                ("guest", name) => {
                    return Outcome::Reply(http::Response::error(
                        404,
                        format!("no guest named {name}"),
                    ))
                }
                _ => {}
            }
        }
        Outcome::Events { guest, follow }
    }

    /// Streams events as newline-delimited JSON: the recent ones, then (with `follow`) each
    /// as it is published, until the client goes, the daemon stops, or the bus drops it.
    fn stream(&self, mut conn: Conn, guest: Option<&str>, follow: bool) {
        let (recent, sub) = self.bus.subscribe();
        if http::write_stream_head(&mut conn, "application/x-ndjson").is_err() {
            return;
        }
        for r in &recent {
            if !send_record(&mut conn, guest, r) {
                return;
            }
        }
        while follow && !self.stop.load(Ordering::Relaxed) {
            match sub.events.recv_timeout(Duration::from_millis(500)) {
                Ok(r) => {
                    if !send_record(&mut conn, guest, &r) {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if conn.peer_gone() {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        conn.shutdown_write();
    }

    fn detail(&self, name: &str) -> http::Response {
        let found = self.histories().into_iter().find(|(s, _)| s.name == name);
        let policy = self.reloader.and_then(|r| r.policy(name));
        match (found, policy) {
            (Some((status, history)), Some(policy)) => http::Response::json(
                200,
                &GuestDetail {
                    status,
                    policy,
                    timeline: history.timeline,
                    last_wakes: history.last_wakes,
                },
            ),
            _ => http::Response::error(503, format!("the worker of guest {name} did not answer")),
        }
    }

    /// Every worker's metrics, encoded for Prometheus.
    fn metrics(&self) -> http::Response {
        let mut guests = Vec::new();
        let mut bridges = Vec::new();
        for h in self.registry.workers().iter() {
            let (tx, rx) = mpsc::channel();
            if h.send(Command::Metrics { reply: tx }) {
                match rx.recv_timeout(Duration::from_secs(10)) {
                    Ok((g, b)) => {
                        guests.extend(g);
                        bridges.push((h.bridge.clone(), b));
                    }
                    Err(_) => error!(bridge = %h.bridge, "the bridge's worker did not answer"),
                }
            }
        }
        guests.sort_by_key(|(order, _, _)| *order);
        let guests: Vec<(&str, &crate::metrics::GuestMetrics)> =
            guests.iter().map(|(_, n, m)| (n.as_str(), m)).collect();
        let bridges: Vec<(&str, &crate::metrics::BridgeMetrics)> =
            bridges.iter().map(|(n, m)| (n.as_str(), m)).collect();
        let mut daemon = crate::metrics::DaemonMetrics::default();
        if let Some(g) = &self.resume_gate {
            daemon.resumes_in_flight = g.in_flight() as u64;
            daemon.resumes_in_flight_max = g.most() as u64;
            daemon.resume_cap = g.max() as u64;
        }
        if let Some(b) = &self.hold_budget {
            daemon.held_bytes = b.held() as u64;
            daemon.held_bytes_limit = b.limit() as u64;
        }
        let mut text = String::new();
        crate::metrics::encode(&daemon, &guests, &bridges, &mut text);
        http::Response {
            status: 200,
            headers: vec![("Content-Type", crate::metrics::CONTENT_TYPE.to_owned())],
            body: text.into_bytes(),
        }
    }

    /// The status page.
    fn page(&self) -> http::Response {
        let mut modes = self.reloader.map(|r| r.modes()).unwrap_or_default();
        let guests: Vec<crate::page::PageGuest> = self
            .histories()
            .into_iter()
            .map(|(s, h)| crate::page::PageGuest {
                mode: modes.remove(&s.name).flatten(),
                name: s.name,
                state: s.state,
                bridge: s.bridge,
                backend: s.backend,
                timeline: h
                    .timeline
                    .iter()
                    .map(|t| (t.at_ms as f64 / 1000.0, t.asleep))
                    .collect(),
                known_since: Some(h.known_since_ms as f64 / 1000.0),
                wakes: s.wakes,
                last_wake_cause: s.last_wake_cause,
                last_wake_ms: s.last_wake_ms,
                memory_freed_bytes: s.memory_freed_bytes,
                memory_back_bytes: s.memory_back_bytes,
                page_out: s.page_out,
                cpu_hours_freed: s.cpu_hours_freed,
            })
            .collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let html = crate::page::render(&hostname(), now, &guests);
        http::Response::html(200, html.into_bytes())
    }

    /// Every guest's status, in config order.
    pub(crate) fn statuses(&self) -> Vec<GuestStatus> {
        self.histories().into_iter().map(|(s, _)| s).collect()
    }

    /// Every guest's status and history, in config order.
    fn histories(&self) -> Vec<(GuestStatus, History)> {
        let mut all: Vec<(usize, GuestStatus, History)> = Vec::new();
        for h in self.registry.workers().iter() {
            let (tx, rx) = mpsc::channel();
            if h.send(Command::Status { reply: tx }) {
                match rx.recv_timeout(Duration::from_secs(10)) {
                    Ok(list) => all.extend(list),
                    Err(_) => error!(bridge = %h.bridge, "the bridge's worker did not answer"),
                }
            }
        }
        all.sort_by_key(|(order, _, _)| *order);
        all.into_iter().map(|(_, s, h)| (s, h)).collect()
    }

    /// Sends one guest's worker a command and answers with what it replies.
    fn action(
        &self,
        guest: &str,
        wait: bool,
        make: impl FnOnce(String, Reply) -> Command,
    ) -> http::Response {
        let (tx, rx) = mpsc::channel();
        let command = make(guest.to_owned(), tx);
        let waking = matches!(command, Command::Wake { .. });
        let bridge = {
            let handles = self.registry.workers();
            let Some(h) = handles.iter().find(|h| h.guests.iter().any(|g| g == guest)) else {
                return refusal(guest, &Refusal::NoSuchGuest);
            };
            if !h.send(command) {
                return http::Response::error(
                    503,
                    format!("the worker of bridge {} has stopped", h.bridge),
                );
            }
            h.bridge.clone()
        };
        if !wait {
            let message = if waking {
                format!("{guest} is being woken")
            } else {
                format!("{guest} is being put to sleep")
            };
            return http::Response::json(202, &Message { message });
        }
        match rx.recv_timeout(CLIENT_TIMEOUT) {
            Ok(Ok(answer)) => http::Response::json(
                200,
                &Message {
                    message: done(guest, &answer),
                },
            ),
            Ok(Err(why)) => refusal(guest, &why),
            Err(_) => {
                http::Response::error(503, format!("the worker of bridge {bridge} did not answer"))
            }
        }
    }
}

/// What a worker's answer says, for people.
fn done(guest: &str, answer: &Answer) -> String {
    match answer {
        Answer::Asleep => format!("{guest} is asleep"),
        Answer::Awake => format!("{guest} is awake"),
        Answer::AlreadyAwake => format!("{guest} is already awake"),
        Answer::Already(state) => format!("{guest} is {state}"),
        Answer::Pinned => format!("{guest} is pinned awake"),
        Answer::Unpinned => format!("{guest} may sleep when idle again"),
    }
}

/// A worker's refusal as a response: 404 for a guest it does not have, 409 for a pin that
/// means nothing, 500 for a sleep or wake that did not happen.
fn refusal(guest: &str, why: &Refusal) -> http::Response {
    let (status, message) = match why {
        Refusal::NoSuchGuest => (404, format!("no guest named {guest}")),
        Refusal::NothingToPin => (
            409,
            format!(
                "{guest} never sleeps on its own (its idle_after is off); there is nothing to pin"
            ),
        ),
        Refusal::BeingRemoved => (500, format!("{guest} is being removed from the config")),
        Refusal::Removed => (500, format!("{guest} was removed from the config")),
        Refusal::WorkInFlight(work) => (
            500,
            format!(
                "{guest} still had work when it was stopped ({work}); it was woken again at once"
            ),
        ),
        Refusal::DidNotSleep(e) => (500, format!("{guest} did not fall asleep: {e}")),
        Refusal::WokenFirst => (500, format!("{guest} was woken before it fell asleep")),
        Refusal::KeptRunning => (500, format!("{guest} is awake")),
        Refusal::DidNotWake(e) => (
            500,
            format!("{guest} did not wake: {e}; vmnap keeps trying (see its log)"),
        ),
        Refusal::Vetoed(e) => (
            409,
            format!("{guest} stays awake: its sleep was vetoed by {e}"),
        ),
    };
    http::Response::error(status, message)
}

/// This host's name, for the status page's title.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this host".to_owned())
}

/// Writes `r` as one line if it is about `guest` (or any guest); `false` if the client is gone.
fn send_record(conn: &mut Conn, guest: Option<&str>, r: &Record) -> bool {
    if guest.is_some_and(|g| g != r.event.guest()) {
        return true;
    }
    let mut line = serde_json::to_vec(r).expect("events always serialize");
    line.push(b'\n');
    conn.write_all(&line).and_then(|()| conn.flush()).is_ok()
}

/// The optional JSON body of a POST: empty, or an object `T` reads.
fn body<T: Default + for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, http::Response> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        http::Response::error(400, format!("the body is not what this route takes: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_their_paths_only() {
        assert_eq!(matches("/v1/guests", "/v1/guests"), Some(""));
        assert_eq!(
            matches("/v1/guests/{name}", "/v1/guests/web1"),
            Some("web1")
        );
        assert_eq!(
            matches("/v1/guests/{name}/sleep", "/v1/guests/web1/sleep"),
            Some("web1")
        );
        assert_eq!(matches("/v1/guests/{name}", "/v1/guests/"), None);
        assert_eq!(matches("/v1/guests/{name}", "/v1/guests/a/b"), None);
        assert_eq!(matches("/v1/guests", "/v1/guests/"), None);
    }
}
