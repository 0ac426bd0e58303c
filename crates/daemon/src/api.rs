//! The daemon's HTTP API, both ends: the routes it serves (JSON under `/v1`, described in
//! `openapi.json` next to this crate's `Cargo.toml`) and the client `vmnap` uses.
//!
//! The daemon serves it on its unix socket (no token: the socket's mode decides who may
//! connect) and, where configured, on a TCP address, where every request must carry
//! `Authorization: Bearer TOKEN`. Routes ([`ROUTES`]):
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /v1/guests` | every guest's [`GuestStatus`], in config order |
//! | `GET /v1/guests/{name}` | one guest's [`GuestDetail`]: its status and its [`Policy`] |
//! | `POST /v1/guests/{name}/sleep`, `/wake` | [`Message`] once done (`{"wait": false}`: 202 at once) |
//! | `POST /v1/guests/{name}/pin`, `/unpin` | [`Message`] |
//! | `POST /v1/reload` | [`Reloaded`]: reads the config file again (see `reload.rs`) |
//! | `GET /v1/log`, `PUT /v1/log` | the log filter, [`LogFilter`]; `PUT` sets it |
//! | `GET /` | the status page (HTML, see [`crate::page`]) |
//! | `GET /v1/events` | newline-delimited [`Record`]s; `?follow=false` ends after the recent ones, `?guest=NAME` filters |
//!
//! Refusals are a 4xx or 5xx with `{"error": "..."}`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{debug, error};

use crate::bridge::{BridgeHandle, Command};
use crate::events::{EventBus, Record};
use crate::http::{self, Conn};

/// A request, as `vmnap`'s commands make them; [`call`] sends it as the matching HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Put a guest to sleep (`POST /v1/guests/{name}/sleep`).
    Sleep {
        /// The guest's name.
        guest: String,
    },
    /// Wake a guest (`POST /v1/guests/{name}/wake`).
    Wake {
        /// The guest's name.
        guest: String,
    },
    /// Keep a guest awake however idle it is (`POST /v1/guests/{name}/pin`).
    Pin {
        /// The guest's name.
        guest: String,
    },
    /// Let a pinned guest sleep when idle again (`POST /v1/guests/{name}/unpin`).
    Unpin {
        /// The guest's name.
        guest: String,
    },
    /// Every guest's state and counters (`GET /v1/guests`).
    Status,
}

/// The daemon's answer to a [`Request`].
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// Done; what happened, for people.
    Done {
        /// E.g. `web1 is asleep`.
        message: String,
    },
    /// Every guest.
    Status {
        /// One entry per guest, in config order.
        guests: Vec<GuestStatus>,
    },
    /// Refused or failed.
    Error {
        /// Why, naming the guest.
        message: String,
    },
}

/// One guest as `vmnap status` shows it (`GET /v1/guests`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestStatus {
    /// Its name.
    pub name: String,
    /// `awake`, `sleeping`, `waking` or `falling-asleep`.
    pub state: String,
    /// The bridge it is on.
    pub bridge: String,
    /// Its backend.
    pub backend: String,
    /// Completed wakes.
    pub wakes: u64,
    /// Wakes that failed (each is retried).
    pub wake_failures: u64,
    /// Frames the surrogate answered in its name.
    pub answered_frames: u64,
    /// Frames held for it (all time).
    pub queued_frames: u64,
    /// Frames held for it now.
    pub queue_depth: u64,
    /// Frames replayed into it.
    pub replayed_frames: u64,
    /// Frames dropped by a policy.
    pub dropped_frames: u64,
    /// How long the last wake took ([`vmnap_core::WakeReport::took`]: from the frame, or
    /// request, that caused it to the guest's first answer after the replay), in
    /// milliseconds.
    pub last_wake_ms: Option<f64>,
    /// What caused the last wake.
    pub last_wake_cause: Option<String>,
    /// Seconds it has been asleep, if it is.
    pub asleep_for_s: Option<f64>,
    /// Seconds it has been idle, if it is awake and sleeps on its own.
    pub idle_for_s: Option<f64>,
    /// Pinned awake (`vmnap pin`).
    pub pinned: bool,
    /// Host memory its sleep gives back now, in bytes: what a save freed while it sleeps, 0
    /// while it is awake or when its sleep keeps its memory (pause, freeze); `None`: not
    /// known yet (it is read with the guest's CPU time, every `[idle] interval`).
    pub memory_freed_bytes: Option<u64>,
    /// CPU-hours its sleep has saved since the daemon started: time asleep times the CPU it
    /// used while awake just before. An estimate; `None`: its CPU use is not known yet.
    pub cpu_hours_freed: Option<f64>,
}

/// A change of a guest's state: from `at_ms` on, asleep or not.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Asleep from then on (`false`: awake).
    pub asleep: bool,
}

/// One completed wake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WakeRecord {
    /// When it completed, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What caused it (`tcp-syn`, `udp`, `requested`, ...).
    pub cause: String,
    /// The frame that caused it, described, when a frame did.
    pub frame: Option<String>,
    /// From the cause to the guest's first answer after the replay, in milliseconds.
    pub took_ms: f64,
}

/// What a worker remembers of a guest's past: its sleeps and wakes over the last day and
/// its last wakes.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct History {
    pub timeline: Vec<Transition>,
    pub last_wakes: Vec<WakeRecord>,
    /// When the worker took the guest on, in milliseconds since the Unix epoch.
    pub known_since_ms: u64,
}

/// A guest's policy, from its config (`GET /v1/guests/{name}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// `cgroup`, `libvirt` or `qmp`.
    pub backend: String,
    /// `pause` or `save` (libvirt and QMP guests).
    pub mode: Option<String>,
    /// What wakes it, like `tcp/80`.
    pub wake_on: Vec<String>,
    /// What the surrogate answers for it: `arp`, `ndp`, `icmp-echo`, `tcp-echo`, `udp-echo`.
    pub answer: Vec<String>,
    /// Seconds it must stay idle before it is put to sleep; `None`: only when told.
    pub idle_after_s: Option<f64>,
    /// Ports whose open connections keep it awake.
    pub keep_awake_while_connected: Vec<String>,
    /// Its MAC address.
    pub mac: String,
    /// Its IPv4 addresses.
    pub ipv4: Vec<String>,
    /// Its IPv6 addresses.
    pub ipv6: Vec<String>,
    /// Its VLAN (0: untagged).
    pub vlan: u16,
    /// Frames held for it at most while it wakes.
    pub queue_frames: usize,
    /// Bytes held for it at most while it wakes.
    pub queue_bytes: usize,
    /// `queue` or `drop`: broadcast and multicast while it sleeps.
    pub multicast: String,
    /// TCP ports of its health checks.
    pub health_ports: Vec<u16>,
}

/// One guest in detail: its status and its policy (`GET /v1/guests/{name}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestDetail {
    /// As in the list.
    #[serde(flatten)]
    pub status: GuestStatus,
    /// From its config.
    pub policy: Policy,
    /// Its changes of state over the last day, oldest first (the first may be older: the
    /// state the day began in).
    pub timeline: Vec<Transition>,
    /// Its last wakes, oldest first (at most [`LAST_WAKES`]).
    pub last_wakes: Vec<WakeRecord>,
}

/// How many wakes a guest's detail lists.
pub const LAST_WAKES: usize = 10;

/// The answer to `POST /v1/reload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    /// What happened, for people.
    pub message: String,
    /// Guests added.
    pub added: Vec<String>,
    /// Guests no longer managed (woken first if they were asleep).
    pub removed: Vec<String>,
    /// Guests whose entry changed: given the new policy in place (asleep or awake) when only
    /// their policy changed, else woken if asleep and added again.
    pub changed: Vec<String>,
    /// How many guests were left as they were.
    pub unchanged: usize,
    /// Changed settings that only a restart applies, like `api.listen`.
    pub restart_needed: Vec<String>,
}

/// The daemon's log filter (`GET` and `PUT /v1/log`), in `tracing`'s `EnvFilter` syntax:
/// `debug`, or `info,vmnap_daemon=trace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFilter {
    /// The filter.
    pub filter: String,
}

const NO_LOG_CONTROL: &str =
    "this daemon's log filter cannot be changed at run time (it was not started by `vmnap run`)";

/// The answer to an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// What happened, for people, like `web1 is asleep`.
    pub message: String,
}

/// The body of every refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Why, for people.
    pub error: String,
}

/// The body of `POST /v1/guests/{name}/sleep` and `/wake` (optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    /// Answer when the sleep or wake is over (the default), or at once with 202.
    #[serde(default)]
    wait: Option<bool>,
}

/// The body of the other actions (optional): an empty object.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyBody {}

/// A route the server has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The path, with `{name}` for a guest's name, as in the OpenAPI document.
    pub path: &'static str,
}

/// Every route the server has; requests are matched against these and nothing else.
pub const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/v1/guests",
    },
    Route {
        method: "GET",
        path: "/v1/guests/{name}",
    },
    Route {
        method: "POST",
        path: "/v1/guests/{name}/sleep",
    },
    Route {
        method: "POST",
        path: "/v1/guests/{name}/wake",
    },
    Route {
        method: "POST",
        path: "/v1/guests/{name}/pin",
    },
    Route {
        method: "POST",
        path: "/v1/guests/{name}/unpin",
    },
    Route {
        method: "POST",
        path: "/v1/reload",
    },
    Route {
        method: "GET",
        path: "/v1/log",
    },
    Route {
        method: "PUT",
        path: "/v1/log",
    },
    Route {
        method: "GET",
        path: "/v1/events",
    },
    Route {
        method: "GET",
        path: "/metrics",
    },
    Route {
        method: "GET",
        path: "/",
    },
];

/// Connections served at once; past it, new ones get 503.
pub const MAX_CONNECTIONS: usize = 64;

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
    /// The bridges' workers; a reload adds and removes some.
    pub handles: RwLock<Vec<BridgeHandle>>,
    /// Each guest's policy, by name.
    pub policies: RwLock<BTreeMap<String, Policy>>,
    /// Reloads the config (`None`: refused).
    pub reloader: Option<&'a crate::reload::Reloader<'a>>,
    /// Sets the log filter (`None`: refused).
    pub log: Option<&'a crate::LogControl>,
    pub bus: EventBus,
    /// The token requests over TCP must carry.
    pub token: Option<String>,
    pub stop: &'a AtomicBool,
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
        handles: Vec<BridgeHandle>,
        policies: BTreeMap<String, Policy>,
        bus: EventBus,
        token: Option<String>,
        stop: &'a AtomicBool,
    ) -> Self {
        Server {
            handles: RwLock::new(handles),
            policies: RwLock::new(policies),
            reloader: None,
            log: None,
            bus,
            token,
            stop,
        }
    }

    /// The workers, for shutdown.
    pub(crate) fn into_handles(self) -> Vec<BridgeHandle> {
        self.handles.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    fn has_guest(&self, name: &str) -> bool {
        self.policy(name).is_some()
    }

    /// Guest `name`'s policy, if it is configured.
    fn policy(&self, name: &str) -> Option<Policy> {
        // A reload that panicked left the map whole: it is replaced in one assignment.
        let policies = self.policies.read().unwrap_or_else(|e| e.into_inner());
        policies.get(name).cloned()
    }

    /// The bridges' workers, as the last reload left them.
    fn workers(&self) -> std::sync::RwLockReadGuard<'_, Vec<BridgeHandle>> {
        self.handles.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Reloads the config; logs and returns the outcome.
    pub(crate) fn reload(&self) -> http::Response {
        let Some(reloader) = self.reloader else {
            return http::Response::error(
                409,
                "this daemon was not started from a config file, so there is nothing to reload",
            );
        };
        match reloader.reload(self) {
            Ok(done) => http::Response::json(200, &done),
            Err(e) => {
                tracing::error!(error = %e, "reload refused");
                http::Response::error(e.status(), e.to_string())
            }
        }
    }

    /// Answers the one request on `conn` (`tcp`: it came over TCP, so it needs the token).
    pub(crate) fn serve(&self, mut conn: Conn, tcp: bool) {
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
        let request = match http::read_request(&mut conn) {
            Ok(r) => r,
            Err(Some(refusal)) => {
                debug!(status = refusal.status, "refused a malformed API request");
                let _ = http::write_response(&mut conn, &refusal);
                return;
            }
            Err(None) => return,
        };
        let outcome = if tcp && !self.authorized(&request) {
            Outcome::Reply(
                http::Response::error(
                    401,
                    "this request needs the token of `[api] token_file`: `Authorization: Bearer TOKEN`, or a browser's login with the token as the password",
                )
                .with_header("WWW-Authenticate", "Bearer realm=\"vmnap\"")
                // A browser asks its user for the token (as the password) on this one.
                .with_header("WWW-Authenticate", "Basic realm=\"vmnap\", charset=\"UTF-8\""),
            )
        } else {
            self.route(&request)
        };
        match outcome {
            Outcome::Reply(response) => {
                debug!(method = %request.method, path = %request.path, status = response.status, "API request");
                let _ = http::write_response(&mut conn, &response);
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
                        tracing::info!(filter = %f.filter, "log filter changed");
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
                ("guest", name) if self.has_guest(name) => guest = Some(name.to_owned()),
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
        let policy = self.policy(name);
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
        for h in self.workers().iter() {
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
        let mut text = String::new();
        crate::metrics::encode(&guests, &bridges, &mut text);
        http::Response {
            status: 200,
            headers: vec![("Content-Type", crate::metrics::CONTENT_TYPE.to_owned())],
            body: text.into_bytes(),
        }
    }

    /// The status page.
    fn page(&self) -> http::Response {
        let guests: Vec<crate::page::PageGuest> = self
            .histories()
            .into_iter()
            .map(|(s, h)| crate::page::PageGuest {
                mode: self.policy(&s.name).and_then(|p| p.mode),
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
        for h in self.workers().iter() {
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
        make: impl FnOnce(String, mpsc::Sender<Result<String, String>>) -> Command,
    ) -> http::Response {
        let (tx, rx) = mpsc::channel();
        let command = make(guest.to_owned(), tx);
        let kind = match &command {
            Command::Sleep { .. } => "sleep",
            Command::Wake { .. } => "wake",
            _ => "pin",
        };
        let bridge = {
            let handles = self.workers();
            let Some(h) = handles.iter().find(|h| h.guests.iter().any(|g| g == guest)) else {
                return http::Response::error(404, format!("no guest named {guest}"));
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
            let message = match kind {
                "sleep" => format!("{guest} is being put to sleep"),
                _ => format!("{guest} is being woken"),
            };
            return http::Response::json(202, &Message { message });
        }
        let response = match rx.recv_timeout(CLIENT_TIMEOUT) {
            Ok(Ok(message)) => http::Response::json(200, &Message { message }),
            Ok(Err(message)) if kind == "pin" => http::Response::error(409, message),
            Ok(Err(message)) => http::Response::error(500, message),
            Err(_) => {
                return http::Response::error(
                    503,
                    format!("the worker of bridge {bridge} did not answer"),
                )
            }
        };
        response
    }
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

/// Failure to talk to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket is not there or nobody listens.
    #[error("cannot connect to the vmnap daemon at {path} (is `vmnap run` running?)")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The exchange failed half-way.
    #[error("lost the connection to the vmnap daemon at {path}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The daemon's answer did not parse.
    #[error("the vmnap daemon at {path} answered something this vmnap does not understand")]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The daemon refused or failed the request.
    #[error("{message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// Its `error`.
        message: String,
    },
}

/// How long a client waits for an answer; a wake under TCG can take seconds.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `vmnap reload` waits: a reload may wait minutes for guests it removes to wake.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// One HTTP exchange with the daemon on `socket`: the status and the body.
pub fn request(
    socket: &Path,
    method: &str,
    target: &str,
    body: Option<&[u8]>,
) -> Result<(u16, Vec<u8>), ClientError> {
    request_waiting(socket, method, target, body, CLIENT_TIMEOUT)
}

/// [`request`], waiting up to `timeout` for the answer.
pub fn request_waiting(
    socket: &Path,
    method: &str,
    target: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), ClientError> {
    let (mut reader, head) = open(socket, method, target, body, timeout)?;
    let body = http::read_response_body(&mut reader, &head).map_err(|source| ClientError::Io {
        path: socket.to_path_buf(),
        source,
    })?;
    Ok((head.status, body))
}

/// Sends a request and reads the response's head; the body is left in the reader.
fn open(
    socket: &Path,
    method: &str,
    target: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<(BufReader<UnixStream>, http::ResponseHead), ClientError> {
    let path = socket.to_path_buf();
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: path.clone(),
        source,
    })?;
    let io = |source| ClientError::Io {
        path: path.clone(),
        source,
    };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    http::write_request(&mut stream, method, target, &[], body).map_err(io)?;
    let mut reader = BufReader::new(stream);
    let head = http::read_response_head(&mut reader).map_err(io)?;
    Ok((reader, head))
}

/// `body` as a `T` if `status` is a success, else the daemon's refusal.
fn decode<T: for<'de> Deserialize<'de>>(
    socket: &Path,
    status: u16,
    body: &[u8],
) -> Result<T, ClientError> {
    let protocol = |source| ClientError::Protocol {
        path: socket.to_path_buf(),
        source,
    };
    if (200..300).contains(&status) {
        serde_json::from_slice(body).map_err(protocol)
    } else {
        let e: ApiError = serde_json::from_slice(body).map_err(protocol)?;
        Err(ClientError::Refused {
            status,
            message: e.error,
        })
    }
}

/// Sends one request to the daemon listening on `socket` and returns its answer; refusals
/// are [`Response::Error`].
pub fn call(socket: &Path, request: &Request) -> Result<Response, ClientError> {
    let action = |guest: &str, verb: &str| {
        let target = format!("/v1/guests/{guest}/{verb}");
        let (status, body) = self::request(socket, "POST", &target, None)?;
        decode::<Message>(socket, status, &body).map(|m| Response::Done { message: m.message })
    };
    let answer = match request {
        Request::Sleep { guest } => action(guest, "sleep"),
        Request::Wake { guest } => action(guest, "wake"),
        Request::Pin { guest } => action(guest, "pin"),
        Request::Unpin { guest } => action(guest, "unpin"),
        Request::Status => {
            let (status, body) = self::request(socket, "GET", "/v1/guests", None)?;
            decode(socket, status, &body).map(|guests| Response::Status { guests })
        }
    };
    match answer {
        Err(ClientError::Refused { message, .. }) => Ok(Response::Error { message }),
        other => other,
    }
}

/// One guest's detail.
pub fn guest(socket: &Path, name: &str) -> Result<GuestDetail, ClientError> {
    let (status, body) = request(socket, "GET", &format!("/v1/guests/{name}"), None)?;
    decode(socket, status, &body)
}

/// Reads the daemon's events (of guest `guest` only, if given): the recent ones, then, with
/// `follow`, each as it happens; calls `each` on every one until it returns `false` or the
/// stream ends.
pub fn events(
    socket: &Path,
    follow: bool,
    guest: Option<&str>,
    mut each: impl FnMut(Record) -> bool,
) -> Result<(), ClientError> {
    let mut target = format!("/v1/events?follow={follow}");
    if let Some(g) = guest {
        target.push_str(&format!("&guest={g}"));
    }
    let (mut reader, head) = open(socket, "GET", &target, None, CLIENT_TIMEOUT)?;
    let io = |source| ClientError::Io {
        path: socket.to_path_buf(),
        source,
    };
    if head.status != 200 {
        let body = http::read_response_body(&mut reader, &head).map_err(io)?;
        return decode::<Record>(socket, head.status, &body).map(|_| ());
    }
    // A followed stream may be quiet for a long time.
    reader.get_ref().set_read_timeout(None).map_err(io)?;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(io)? == 0 {
            return Ok(());
        }
        if line.trim().is_empty() {
            continue;
        }
        let record: Record =
            serde_json::from_str(&line).map_err(|source| ClientError::Protocol {
                path: socket.to_path_buf(),
                source,
            })?;
        if !each(record) {
            return Ok(());
        }
    }
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
