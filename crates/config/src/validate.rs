//! Turns [`RawConfig`] into [`Config`], refusing the first value that does not make sense.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use vmnap_core::schedule::{AwakeWindows, Weekdays, Window, DAY, DAY_NAMES};
use vmnap_wire::Mac;

use crate::error::ConfigError;
use crate::locate;
use crate::raw::{
    RawApi, RawConfig, RawDefaults, RawDiscover, RawGuest, RawHealth, RawIdle, RawLibvirt,
    RawPolicy, RawState, RawSurrogate, RawWake,
};
use crate::{
    parse_duration, Answers, ApiConfig, BackendConfig, Builtin, Config, Discover, GuestConfig,
    GuestDefaults, GuestHooks, HealthCheck, IdleConfig, LibvirtConfig, MulticastPolicy, PortRule,
    SleepMode, SleepSchedule, Transport, WakeConfig, DEFAULT_CPU_PERCENT, DEFAULT_HEALTH_BODY,
    DEFAULT_HEALTH_STATUS, DEFAULT_HOOK_TIMEOUT, DEFAULT_IDLE_AFTER, DEFAULT_IDLE_INTERVAL,
    DEFAULT_LIBVIRT_URI, DEFAULT_MAX_RESUMING, DEFAULT_MULTICAST_FRAMES, DEFAULT_QUEUE_BYTES,
    DEFAULT_QUEUE_FRAMES, DEFAULT_RESUME_MEMORY_RESERVE, DEFAULT_SOCKET, MAX_HEALTH_BODY_LEN,
    MAX_IFNAME_LEN, MAX_MAX_RESUMING, MAX_NAME_LEN, MAX_VLAN, MIN_IDLE_INTERVAL, MIN_QUEUE_BYTES,
};
use crate::{
    OnRestart, OnStop, StateConfig, SurrogateConfig, TlsFiles, DEFAULT_SOCKET_MODE,
    DEFAULT_STATE_DIR,
};

/// The longest path `bind(2)` accepts for a unix socket (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH_LEN: usize = 107;

/// The echo port that `tcp-echo` and `udp-echo` answer on.
const ECHO_PORT: u16 = 7;

/// The keys that belong to some backends, with those backends.
const BACKEND_KEYS: [(&str, &[&str]); 7] = [
    ("agent", &["qmp"]),
    ("cgroup", &["cgroup"]),
    ("domain", &["libvirt"]),
    ("mode", &["libvirt", "qmp"]),
    ("qmp", &["qmp"]),
    ("qemu_command", &["qmp"]),
    ("state_file", &["qmp"]),
];

/// The longest health check path, in bytes.
const MAX_HEALTH_PATH_LEN: usize = 1024;

pub(crate) fn parse(text: &str, file: &Path, builtin: Builtin) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| toml_error(&e, text, file))?;
    let cx = Cx {
        text,
        file,
        builtin,
    };
    let api = match &raw.api {
        Some(api) => cx.api(api.get_ref())?,
        None => ApiConfig::default(),
    };
    let libvirt = match &raw.libvirt {
        Some(libvirt) => cx.libvirt(libvirt.get_ref())?,
        None => LibvirtConfig::default(),
    };
    let idle = match &raw.idle {
        Some(idle) => cx.idle(idle.get_ref())?,
        None => IdleConfig::default(),
    };
    let state = match &raw.state {
        Some(state) => cx.state(state.get_ref())?,
        None => StateConfig::default(),
    };
    let surrogate = match &raw.surrogate {
        Some(s) => cx.surrogate(s.get_ref())?,
        None => SurrogateConfig::default(),
    };
    let wake = match &raw.wake {
        Some(w) => cx.wake(w.get_ref())?,
        None => WakeConfig::default(),
    };
    let mut seen = Seen::default();
    let mut guests = Vec::with_capacity(raw.guest.len());
    for (i, g) in raw.guest.iter().enumerate() {
        let guest = cx.guest(i, g)?;
        cx.unique(i, g, &guest, &mut seen)?;
        guests.push(guest);
    }
    Ok(Config {
        api,
        libvirt,
        idle,
        state,
        surrogate,
        wake,
        guests,
    })
}

/// A `toml` error (syntax, unknown key, missing key, wrong type) with the key named.
fn toml_error(e: &toml::de::Error, text: &str, file: &Path) -> ConfigError {
    // Syntax errors come on several lines ("invalid string\nexpected `"`, `'`"); serde's names
    // for our integer and float types and for arrays are not TOML's.
    let message = e
        .message()
        .trim()
        .lines()
        .collect::<Vec<_>>()
        .join("; ")
        .replace("expected i64", "expected an integer")
        .replace("expected f64", "expected a number")
        .replace("expected a sequence", "expected an array");
    let message = message.as_str();
    let Some(span) = e.span() else {
        return ConfigError {
            file: file.to_path_buf(),
            line: None,
            column: None,
            key: None,
            message: message.to_string(),
        };
    };
    let mut key = locate::key_at(text, span.start);
    let message = if let Some(rest) = message.strip_prefix("unknown field ") {
        // The span is the unknown key itself: name the table it is in.
        key = key.as_deref().and_then(locate::parent);
        format!(
            "unknown key {}",
            rest.replacen(", expected", "; expected", 1)
        )
    } else if let Some(rest) = message.strip_prefix("missing field ") {
        format!("missing key {rest}")
    } else {
        message.to_string()
    };
    ConfigError::at(file, text, span, key, message)
}

/// Values already taken by earlier guests, with the guest or key that took them.
#[derive(Default)]
struct Seen {
    names: HashMap<String, usize>,
    interfaces: HashMap<String, usize>,
    macs: HashMap<(String, u16, [u8; 6]), usize>,
    addresses: HashMap<(String, u16, IpAddr), String>,
    /// Cgroup directories, libvirt domains, QMP sockets and state files, keyed by what they
    /// are (`"cgroup"`, `"domain"`, ...).
    targets: HashMap<(&'static str, String), usize>,
}

/// The policy keys of a guest or of `[libvirt.defaults]`, checked.
struct Policy {
    wake_on: Vec<PortRule>,
    answer: Answers,
    queue_frames: usize,
    queue_bytes: usize,
    multicast: MulticastPolicy,
    multicast_frames: usize,
    idle_after: Option<Option<Duration>>,
    schedule: Option<Box<SleepSchedule>>,
    hooks: Option<Box<GuestHooks>>,
    keep_awake_while_connected: Vec<PortRule>,
    health: Vec<HealthCheck>,
}

struct Cx<'a> {
    text: &'a str,
    file: &'a Path,
    builtin: Builtin,
}

/// Why a build without the `libvirt` feature refuses what needs it.
const NO_LIBVIRT: &str = "this vmnap was built without libvirt (cargo feature `libvirt`, on by \
                          default; e.g. `cargo build --release -p vmnap-cli`)";

impl Cx<'_> {
    fn err(&self, span: Range<usize>, key: String, message: impl Into<String>) -> ConfigError {
        ConfigError::at(self.file, self.text, span, Some(key), message)
    }

    /// Runs `check` on a spanned value, turning its message into an error at `key`.
    fn check<T, U>(
        &self,
        value: &Spanned<T>,
        key: impl FnOnce() -> String,
        check: impl FnOnce(&T) -> Result<U, String>,
    ) -> Result<U, ConfigError> {
        check(value.get_ref()).map_err(|m| self.err(value.span(), key(), m))
    }

    fn api(&self, api: &RawApi) -> Result<ApiConfig, ConfigError> {
        let socket = match &api.socket {
            Some(s) => self.check(s, || "api.socket".into(), |s| socket_path(s))?,
            None => PathBuf::from(DEFAULT_SOCKET),
        };
        let socket_mode = match &api.socket_mode {
            Some(m) => self.check(m, || "api.socket_mode".into(), |s| socket_mode(s))?,
            None => DEFAULT_SOCKET_MODE,
        };
        let listen = match &api.listen {
            Some(l) => Some(self.check(l, || "api.listen".into(), |s| listen_address(s))?),
            None => None,
        };
        let token_file = match &api.token_file {
            Some(t) => Some(self.check(t, || "api.token_file".into(), |s| absolute_path(s))?),
            None => None,
        };
        match (&api.listen, &api.token_file) {
            (Some(l), None) => {
                return Err(self.err(
                    l.span(),
                    "api.listen".into(),
                    "`listen` needs `token_file`, the absolute path of a file holding the bearer \
                     token that requests over TCP must carry",
                ))
            }
            (None, Some(t)) => {
                return Err(self.err(
                    t.span(),
                    "api.token_file".into(),
                    "`token_file` is used only with `listen` (the unix socket needs no token)",
                ))
            }
            _ => {}
        }
        let insecure = api
            .insecure_listen_without_tls
            .as_ref()
            .is_some_and(|i| *i.get_ref());
        let path = |v: &Spanned<String>, key: &str| {
            self.check(v, || format!("api.{key}"), |s| absolute_path(s))
        };
        let tls = match (&api.tls_cert, &api.tls_key) {
            (Some(c), Some(k)) => Some(TlsFiles {
                cert: path(c, "tls_cert")?,
                key: path(k, "tls_key")?,
            }),
            (None, None) => None,
            (Some(v), None) | (None, Some(v)) => {
                let (key, other) = if api.tls_cert.is_some() {
                    ("tls_cert", "tls_key")
                } else {
                    ("tls_key", "tls_cert")
                };
                return Err(self.err(
                    v.span(),
                    format!("api.{key}"),
                    format!("`{key}` needs `{other}`: TLS takes a certificate and its key"),
                ));
            }
        };
        if let (Some(c), None) = (&api.tls_cert, &api.listen) {
            return Err(self.err(
                c.span(),
                "api.tls_cert".into(),
                "TLS is for the TCP listener: `tls_cert` and `tls_key` are used only with `listen`",
            ));
        }
        if let (Some(addr), Some(l)) = (listen, &api.listen) {
            if !addr.ip().is_loopback() && !insecure && tls.is_none() {
                return Err(self.err(
                    l.span(),
                    "api.listen".into(),
                    format!(
                        "{addr} is not a loopback address: set tls_cert and tls_key, or its \
                         token and answers would cross the network in clear (listen on \
                         127.0.0.1 behind a TLS proxy, or set insecure_listen_without_tls = \
                         true to allow that)"
                    ),
                ));
            }
        }
        Ok(ApiConfig {
            socket,
            socket_mode,
            listen,
            token_file,
            insecure_listen_without_tls: insecure,
            tls,
        })
    }

    fn state(&self, state: &RawState) -> Result<StateConfig, ConfigError> {
        let dir = match &state.dir {
            Some(d) => self.check(d, || "state.dir".into(), |s| absolute_path(s))?,
            None => PathBuf::from(DEFAULT_STATE_DIR),
        };
        let on_restart = match &state.on_restart {
            Some(r) => self.check(
                r,
                || "state.on_restart".into(),
                |s| match s.as_str() {
                    "stand-in" => Ok(OnRestart::StandIn),
                    "wake" => Ok(OnRestart::Wake),
                    other => Err(format!(
                        "unknown action `{other}`; expected `stand-in` or `wake`"
                    )),
                },
            )?,
            None => OnRestart::default(),
        };
        let on_stop = match &state.on_stop {
            Some(r) => self.check(
                r,
                || "state.on_stop".into(),
                |s| match s.as_str() {
                    "wake" => Ok(OnStop::Wake),
                    "keep-asleep" => Ok(OnStop::KeepAsleep),
                    other => Err(format!(
                        "unknown action `{other}`; expected `wake` or `keep-asleep`"
                    )),
                },
            )?,
            None => OnStop::default(),
        };
        Ok(StateConfig {
            dir,
            on_restart,
            on_stop,
        })
    }

    fn libvirt(&self, libvirt: &RawLibvirt) -> Result<LibvirtConfig, ConfigError> {
        let uri = match &libvirt.uri {
            Some(u) => self.check(u, || "libvirt.uri".into(), |s| libvirt_uri(s))?,
            None => DEFAULT_LIBVIRT_URI.to_string(),
        };
        let discover = match &libvirt.discover {
            Some(d) if !self.builtin.libvirt => {
                return Err(self.err(
                    d.span(),
                    "libvirt.discover".into(),
                    format!("cannot discover libvirt domains: {NO_LIBVIRT}"),
                ))
            }
            Some(d) => Some(self.discover(d)?),
            None => None,
        };
        let defaults =
            match (&libvirt.defaults, &discover) {
                (None, _) => GuestDefaults::default(),
                (Some(d), None) => return Err(self.err(
                    d.span(),
                    "libvirt.defaults".into(),
                    "`[libvirt.defaults]` applies only to discovered guests; set `discover` in \
                     `[libvirt]` (\"all\", or { metadata = \"URI\" })",
                )),
                (Some(d), Some(_)) => self.defaults(d.get_ref())?,
            };
        Ok(LibvirtConfig {
            uri,
            discover,
            defaults,
        })
    }

    /// `discover = "all"` or `discover = { metadata = "URI" }`.
    fn discover(&self, d: &Spanned<RawDiscover>) -> Result<Discover, ConfigError> {
        let want =
            "want \"all\", or { metadata = \"URI\" } for the domains whose <metadata> holds \
                    an element in that XML namespace";
        let err = |key: &str, message: String| self.err(d.span(), key.into(), message);
        match d.get_ref() {
            RawDiscover::Name(s) if s == "all" => Ok(Discover::All),
            RawDiscover::Name(s) => Err(err(
                "libvirt.discover",
                format!("unknown selector `{s}`; {want}"),
            )),
            RawDiscover::Table(t) => {
                if let Some((k, _)) = t.iter().find(|(k, _)| k != "metadata") {
                    return Err(err(
                        "libvirt.discover",
                        format!("unknown key `{k}`; expected `metadata`"),
                    ));
                }
                match t.first().map(|(_, v)| v) {
                    Some(toml::Value::String(uri)) => metadata_uri(uri)
                        .map(Discover::Metadata)
                        .map_err(|m| err("libvirt.discover.metadata", m)),
                    Some(other) => Err(err(
                        "libvirt.discover.metadata",
                        format!(
                            "invalid type: {}, expected a string (an XML namespace URI)",
                            other.type_str()
                        ),
                    )),
                    None => Err(err(
                        "libvirt.discover",
                        format!("missing key `metadata`; {want}"),
                    )),
                }
            }
        }
    }

    fn defaults(&self, d: &RawDefaults) -> Result<GuestDefaults, ConfigError> {
        let mode = match &d.mode {
            Some(m) => self.check(m, || "libvirt.defaults.mode".into(), |s| sleep_mode(s))?,
            None => SleepMode::Pause,
        };
        let Policy {
            wake_on,
            answer,
            queue_frames,
            queue_bytes,
            multicast,
            multicast_frames,
            idle_after,
            schedule,
            hooks,
            keep_awake_while_connected,
            health,
        } = self.policy("libvirt.defaults", &d.policy())?;
        Ok(GuestDefaults {
            mode,
            wake_on,
            answer,
            queue_frames,
            queue_bytes,
            multicast,
            multicast_frames,
            idle_after,
            schedule,
            hooks,
            keep_awake_while_connected,
            health,
        })
    }

    fn wake(&self, raw: &RawWake) -> Result<WakeConfig, ConfigError> {
        let max_resuming = match &raw.max_resuming {
            Some(v) => self.check(
                v,
                || "wake.max_resuming".into(),
                |&n| {
                    usize::try_from(n)
                        .ok()
                        .filter(|n| (1..=MAX_MAX_RESUMING).contains(n))
                        .ok_or_else(|| format!("{n} is out of range; want 1 to {MAX_MAX_RESUMING}"))
                },
            )?,
            None => DEFAULT_MAX_RESUMING,
        };
        let resume_memory_reserve = match &raw.resume_memory_reserve {
            Some(v) => self.check(
                v,
                || "wake.resume_memory_reserve".into(),
                |&n| {
                    u64::try_from(n).map_err(|_| format!("{n} is negative; want a number of bytes"))
                },
            )?,
            None => DEFAULT_RESUME_MEMORY_RESERVE,
        };
        Ok(WakeConfig {
            max_resuming,
            resume_memory_reserve,
        })
    }

    fn surrogate(&self, raw: &RawSurrogate) -> Result<SurrogateConfig, ConfigError> {
        let default = SurrogateConfig::default();
        let in_kernel = raw
            .in_kernel
            .as_ref()
            .map_or(default.in_kernel, |v| *v.get_ref());
        let in_kernel_at_every_port = match &raw.in_kernel_at_every_port {
            Some(v) if *v.get_ref() && !in_kernel => {
                return Err(self.err(
                    v.span(),
                    "surrogate.in_kernel_at_every_port".into(),
                    "answering in the kernel at every port needs `in_kernel = true`",
                ))
            }
            Some(v) => *v.get_ref(),
            None => default.in_kernel_at_every_port,
        };
        Ok(SurrogateConfig {
            in_kernel,
            in_kernel_at_every_port,
            learn_connections_for: match &raw.learn_connections_for {
                Some(v) => self.check(
                    v,
                    || "surrogate.learn_connections_for".into(),
                    |s| parse_duration(s),
                )?,
                None => default.learn_connections_for,
            },
            max_held_bytes: match &raw.max_held_bytes {
                Some(v) => self.check(
                    v,
                    || "surrogate.max_held_bytes".into(),
                    |&n| {
                        usize::try_from(n)
                            .ok()
                            .filter(|n| *n >= MIN_QUEUE_BYTES)
                            .ok_or_else(|| {
                                format!("{n} is too small; want at least {MIN_QUEUE_BYTES} bytes")
                            })
                    },
                )?,
                None => default.max_held_bytes,
            },
        })
    }

    fn idle(&self, idle: &RawIdle) -> Result<IdleConfig, ConfigError> {
        let interval = match &idle.interval {
            Some(v) => self.check(
                v,
                || "idle.interval".into(),
                |s| {
                    let d = parse_duration(s)?;
                    if d < MIN_IDLE_INTERVAL {
                        return Err(format!(
                            "`{s}` is too short; the sampling interval is at least {}ms",
                            MIN_IDLE_INTERVAL.as_millis()
                        ));
                    }
                    Ok(d)
                },
            )?,
            None => DEFAULT_IDLE_INTERVAL,
        };
        let cpu_percent = match &idle.cpu_percent {
            Some(v) => self.check(
                v,
                || "idle.cpu_percent".into(),
                |&v| {
                    if v.is_finite() && v > 0.0 {
                        Ok(v)
                    } else {
                        Err(format!(
                            "{v} is not a usable CPU threshold; want a number above 0 (percent \
                             of one core, like 2.0)"
                        ))
                    }
                },
            )?,
            None => DEFAULT_CPU_PERCENT,
        };
        let idle_after = match &idle.idle_after {
            Some(v) => self.check(v, || "idle.idle_after".into(), |s| idle_after(s))?,
            None => Some(DEFAULT_IDLE_AFTER),
        };
        let min_awake = match &idle.min_awake {
            Some(v) => self.check(v, || "idle.min_awake".into(), |s| min_awake(s))?,
            None => Duration::ZERO,
        };
        let max_sleep = match &idle.max_sleep {
            Some(v) => self.check(v, || "idle.max_sleep".into(), |s| max_sleep(s))?,
            None => None,
        };
        let awake_during = self.windows("idle", &idle.awake_during)?;
        let timezone = match &idle.timezone {
            Some(v) => Some(self.check(v, || "idle.timezone".into(), |s| timezone(s))?),
            None => None,
        };
        Ok(IdleConfig {
            interval,
            cpu_percent,
            idle_after,
            min_awake,
            max_sleep,
            awake_during,
            timezone,
        })
    }

    fn guest(&self, i: usize, spanned: &Spanned<RawGuest>) -> Result<GuestConfig, ConfigError> {
        let g = spanned.get_ref();
        let key = |field: &str| format!("guest[{i}].{field}");
        let name = self.check(&g.name, || key("name"), |s| guest_name(s))?;
        let bridge = match &g.bridge {
            Some(b) => Some(self.check(b, || key("bridge"), |s| interface_name(s))?),
            None => None,
        };
        let interface = match &g.interface {
            Some(v) => Some(self.check(
                v,
                || key("interface"),
                |s| {
                    let s = interface_name(s)?;
                    if bridge.as_ref() == Some(&s) {
                        return Err(format!("`{s}` is the bridge itself, not a port on it"));
                    }
                    Ok(s)
                },
            )?),
            None => None,
        };
        let mac = match &g.mac {
            Some(m) => Some(self.check(m, || key("mac"), |s| mac_address(s))?),
            None => None,
        };

        let mut ipv4 = Vec::with_capacity(g.ipv4.len());
        for (j, a) in g.ipv4.iter().enumerate() {
            ipv4.push(self.check(a, || format!("guest[{i}].ipv4[{j}]"), |s| ipv4_address(s))?);
        }
        let mut ipv6 = Vec::with_capacity(g.ipv6.len());
        for (j, a) in g.ipv6.iter().enumerate() {
            ipv6.push(self.check(a, || format!("guest[{i}].ipv6[{j}]"), |s| ipv6_address(s))?);
        }
        if ipv4.is_empty() && ipv6.is_empty() {
            return Err(self.err(
                spanned.span(),
                format!("guest[{i}]"),
                format!("guest `{name}` has no address; give at least one in `ipv4` or `ipv6`"),
            ));
        }

        let vlan = match &g.vlan {
            Some(v) => self.check(v, || key("vlan"), |&v| vlan_id(v))?,
            None => 0,
        };
        let backend = self.backend(i, spanned, &name)?;

        let Policy {
            wake_on,
            answer,
            queue_frames,
            queue_bytes,
            multicast,
            multicast_frames,
            idle_after,
            schedule,
            hooks,
            keep_awake_while_connected,
            health,
        } = self.policy(&format!("guest[{i}]"), &g.policy())?;

        Ok(GuestConfig {
            name,
            bridge,
            interface,
            mac,
            ipv4,
            ipv6,
            vlan,
            backend,
            wake_on,
            answer,
            queue_frames,
            queue_bytes,
            multicast,
            multicast_frames,
            idle_after,
            schedule,
            hooks,
            keep_awake_while_connected,
            health,
        })
    }

    /// The policy keys of a `[[guest]]` or of `[libvirt.defaults]`; `at` is the table's key
    /// (`guest[2]`, `libvirt.defaults`).
    fn policy(&self, at: &str, p: &RawPolicy<'_>) -> Result<Policy, ConfigError> {
        let key = |field: &str| format!("{at}.{field}");
        let wake_on = self.port_rules(at, "wake_on", p.wake_on, false)?;
        let answer = match p.answer {
            None => Answers::DEFAULT,
            Some(list) => self.answers(at, list, &wake_on)?,
        };

        let queue_frames = match p.queue_frames {
            Some(v) => self.check(v, || key("queue_frames"), |&v| at_least(v, 1, ""))?,
            None => DEFAULT_QUEUE_FRAMES,
        };
        let queue_bytes = match p.queue_bytes {
            Some(v) => self.check(
                v,
                || key("queue_bytes"),
                |&v| at_least(v, MIN_QUEUE_BYTES, " so that one 64 KiB GSO frame fits"),
            )?,
            None => DEFAULT_QUEUE_BYTES,
        };
        let multicast = match p.multicast {
            Some(v) => self.check(
                v,
                || key("multicast"),
                |s| match s.as_str() {
                    "queue" => Ok(MulticastPolicy::Queue),
                    "drop" => Ok(MulticastPolicy::Drop),
                    other => Err(format!(
                        "unknown multicast policy `{other}`; expected `queue` or `drop`"
                    )),
                },
            )?,
            None => MulticastPolicy::Queue,
        };
        let multicast_frames = match p.multicast_frames {
            Some(v) => self.check(
                v,
                || key("multicast_frames"),
                |&v| {
                    let n = at_least(v, 0, "")?;
                    if n > queue_frames {
                        return Err(format!(
                            "{n} is more than queue_frames ({queue_frames}); multicast frames are \
                         held in the same queue"
                        ));
                    }
                    Ok(n)
                },
            )?,
            None => DEFAULT_MULTICAST_FRAMES.min(queue_frames),
        };

        let idle_after = match p.idle_after {
            Some(v) => Some(self.check(v, || key("idle_after"), |s| idle_after(s))?),
            None => None,
        };
        let min_awake = match p.min_awake {
            Some(v) => Some(self.check(v, || key("min_awake"), |s| min_awake(s))?),
            None => None,
        };
        let max_sleep = match p.max_sleep {
            Some(v) => Some(self.check(v, || key("max_sleep"), |s| max_sleep(s))?),
            None => None,
        };
        let awake_during = match p.awake_during {
            Some(list) => Some(self.windows(at, list)?),
            None => None,
        };
        let timezone = match p.timezone {
            Some(v) => Some(self.check(v, || key("timezone"), |s| timezone(s))?),
            None => None,
        };
        let before_sleep = self.hook(at, "before_sleep", p.before_sleep)?;
        let after_wake = self.hook(at, "after_wake", p.after_wake)?;
        let hook_timeout = match p.hook_timeout {
            Some(v) => self.check(
                v,
                || key("hook_timeout"),
                |s| {
                    let d = parse_duration(s)?;
                    if d.is_zero() {
                        return Err(format!("`{s}` is zero; a hook needs time to run"));
                    }
                    Ok(d)
                },
            )?,
            None => DEFAULT_HOOK_TIMEOUT,
        };
        let schedule = SleepSchedule {
            min_awake,
            max_sleep,
            awake_during,
            timezone,
        }
        .boxed();
        let guest_before_sleep = self.hook(at, "guest_before_sleep", p.guest_before_sleep)?;
        let guest_after_wake = self.hook(at, "guest_after_wake", p.guest_after_wake)?;
        let inhibit_file = match p.inhibit_file {
            Some(v) => Some(self.check(v, || key("inhibit_file"), |s| guest_path(s))?),
            None => None,
        };
        let hooks = GuestHooks {
            before_sleep,
            after_wake,
            guest_before_sleep,
            guest_after_wake,
            inhibit_file,
            timeout: hook_timeout,
        }
        .boxed();
        let keep_awake_while_connected = self.port_rules(
            at,
            "keep_awake_while_connected",
            p.keep_awake_while_connected,
            true,
        )?;
        let mut health = Vec::with_capacity(p.health.len());
        for (j, h) in p.health.iter().enumerate() {
            health.push(self.health(at, j, h.get_ref(), p.answer, &health, &wake_on)?);
        }
        Ok(Policy {
            wake_on,
            answer,
            queue_frames,
            queue_bytes,
            multicast,
            multicast_frames,
            idle_after,
            schedule,
            hooks,
            keep_awake_while_connected,
            health,
        })
    }

    /// Checks the backend and the keys that belong to it, and that a guest whose backend cannot
    /// find its own port gives `bridge`, `interface` and `mac`.
    fn backend(
        &self,
        i: usize,
        spanned: &Spanned<RawGuest>,
        name: &str,
    ) -> Result<BackendConfig, ConfigError> {
        let g = spanned.get_ref();
        let key = |field: &str| format!("guest[{i}].{field}");
        let kind = g.backend.get_ref().as_str();
        if !matches!(kind, "cgroup" | "libvirt" | "qmp") {
            return Err(self.err(
                g.backend.span(),
                key("backend"),
                format!("unknown backend `{kind}`; expected `cgroup`, `libvirt` or `qmp`"),
            ));
        }
        if kind == "libvirt" && !self.builtin.libvirt {
            return Err(self.err(
                g.backend.span(),
                key("backend"),
                format!(
                    "backend `libvirt` is not in this build: {NO_LIBVIRT}; without libvirt, a \
                     QEMU guest can be driven over its monitor (`backend = \"qmp\"`)"
                ),
            ));
        }
        // The first stray key in the file, if any.
        let stray = BACKEND_KEYS
            .iter()
            .filter(|(_, owners)| !owners.contains(&kind))
            .filter_map(|&(k, owners)| g.backend_key_span(k).map(|s| (s, k, owners)))
            .min_by_key(|(span, _, _)| span.start);
        if let Some((span, k, owners)) = stray {
            let owners = match owners {
                [one] => format!("backend `{one}`"),
                many => format!(
                    "backends {}",
                    many.iter()
                        .map(|o| format!("`{o}`"))
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
            };
            return Err(self.err(
                span,
                key(k),
                format!("`{k}` is only for {owners}, not `{kind}`"),
            ));
        }
        if kind != "libvirt" {
            let given = [
                ("bridge", g.bridge.is_some()),
                ("interface", g.interface.is_some()),
                ("mac", g.mac.is_some()),
            ];
            if let Some((missing, _)) = given.iter().find(|(_, given)| !given) {
                return Err(self.err(
                    spanned.span(),
                    format!("guest[{i}]"),
                    format!(
                        "missing key `{missing}`: backend `{kind}` needs it (only a libvirt \
                         guest may leave it out, to have it read from the domain's XML)"
                    ),
                ));
            }
        }
        let mode = match &g.mode {
            Some(m) => self.check(m, || key("mode"), |s| sleep_mode(s))?,
            None => SleepMode::Pause,
        };
        match kind {
            "cgroup" => match &g.cgroup {
                Some(dir) => self.check(
                    dir,
                    || key("cgroup"),
                    |s| absolute_path(s).map(|dir| BackendConfig::Cgroup { dir }),
                ),
                None => Err(self.err(
                    g.backend.span(),
                    key("backend"),
                    "backend `cgroup` needs `cgroup`, the absolute path of the guest's cgroup \
                     directory",
                )),
            },
            "libvirt" => {
                let domain = match &g.domain {
                    Some(d) => self.check(d, || key("domain"), |s| domain_name(s))?,
                    None => name.to_string(),
                };
                Ok(BackendConfig::Libvirt { domain, mode })
            }
            _ => self.qmp(i, g, mode),
        }
    }

    fn qmp(&self, i: usize, g: &RawGuest, mode: SleepMode) -> Result<BackendConfig, ConfigError> {
        let key = |field: &str| format!("guest[{i}].{field}");
        let socket = match &g.qmp {
            Some(s) => self.check(s, || key("qmp"), |s| socket_path(s))?,
            None => {
                return Err(self.err(
                    g.backend.span(),
                    key("backend"),
                    "backend `qmp` needs `qmp`, the absolute path of the QEMU monitor's unix \
                     socket",
                ))
            }
        };
        let agent = match &g.agent {
            Some(s) => Some(self.check(s, || key("agent"), |s| socket_path(s))?),
            None => None,
        };
        if mode != SleepMode::Save {
            let extra = [
                ("qemu_command", g.qemu_command.as_ref().map(Spanned::span)),
                ("state_file", g.state_file.as_ref().map(Spanned::span)),
            ];
            if let Some((k, Some(span))) = extra.into_iter().find(|(_, s)| s.is_some()) {
                return Err(self.err(
                    span,
                    key(k),
                    format!(
                        "`{k}` is only for mode `save`, not `{}`; set `mode = \"save\"` or \
                         leave it out",
                        mode.as_str()
                    ),
                ));
            }
            return Ok(BackendConfig::Qmp {
                socket,
                mode,
                qemu_command: Box::default(),
                state_file: None,
                agent: agent.map(PathBuf::into_boxed_path),
            });
        }
        // Mode `save`, which was given (it is not the default).
        let mode_span = g.mode.as_ref().map_or(g.backend.span(), Spanned::span);
        let Some(command) = &g.qemu_command else {
            return Err(self.err(
                mode_span,
                key("mode"),
                "mode `save` needs `qemu_command`, the argv that starts the guest's QEMU",
            ));
        };
        if command.get_ref().is_empty() {
            return Err(self.err(
                command.span(),
                key("qemu_command"),
                "`qemu_command` is empty; give the argv that starts the guest's QEMU, program \
                 first",
            ));
        }
        let mut qemu_command = Vec::with_capacity(command.get_ref().len());
        for (j, arg) in command.get_ref().iter().enumerate() {
            qemu_command.push(self.check(
                arg,
                || format!("guest[{i}].qemu_command[{j}]"),
                |s| argv_element(j, s),
            )?);
        }
        let Some(state_file) = &g.state_file else {
            return Err(self.err(
                mode_span,
                key("mode"),
                "mode `save` needs `state_file`, the absolute path of the file the guest's state \
                 is saved to",
            ));
        };
        let state_file = self.check(state_file, || key("state_file"), |s| absolute_path(s))?;
        Ok(BackendConfig::Qmp {
            socket,
            mode,
            qemu_command: qemu_command.into_boxed_slice(),
            state_file: Some(state_file.into_boxed_path()),
            agent: agent.map(PathBuf::into_boxed_path),
        })
    }

    /// `wake_on` or `keep_awake_while_connected`: port rules without duplicates, and only TCP
    /// ones if `tcp_only`.
    /// A hook's argv (`before_sleep`, `after_wake`) of the table `at`: not empty, a program
    /// first, no NUL; absent: no hook.
    fn hook(
        &self,
        at: &str,
        field: &str,
        argv: Option<&Spanned<Vec<Spanned<String>>>>,
    ) -> Result<Vec<String>, ConfigError> {
        let Some(argv) = argv else {
            return Ok(Vec::new());
        };
        if argv.get_ref().is_empty() {
            return Err(self.err(
                argv.span(),
                format!("{at}.{field}"),
                format!("`{field}` is empty; give the command to run, program first"),
            ));
        }
        let mut out = Vec::with_capacity(argv.get_ref().len());
        for (j, arg) in argv.get_ref().iter().enumerate() {
            out.push(self.check(arg, || format!("{at}.{field}[{j}]"), |s| argv_element(j, s))?);
        }
        Ok(out)
    }

    /// `awake_during` of the table `at`: each window checked at its element.
    fn windows(&self, at: &str, list: &[Spanned<String>]) -> Result<AwakeWindows, ConfigError> {
        let mut windows = Vec::with_capacity(list.len());
        for (j, w) in list.iter().enumerate() {
            windows.push(self.check(w, || format!("{at}.awake_during[{j}]"), |s| window(s))?);
        }
        Ok(AwakeWindows(windows))
    }

    fn port_rules(
        &self,
        at: &str,
        field: &str,
        list: &[Spanned<String>],
        tcp_only: bool,
    ) -> Result<Vec<PortRule>, ConfigError> {
        let mut rules: Vec<PortRule> = Vec::with_capacity(list.len());
        for (j, r) in list.iter().enumerate() {
            let key = || format!("{at}.{field}[{j}]");
            let rule = self.check(r, key, |s| {
                let rule = s.parse::<PortRule>().map_err(|e| e.to_string())?;
                if tcp_only && rule.transport != Transport::Tcp {
                    return Err(format!(
                        "`{rule}` is not a TCP port; only TCP has connections that keep a guest \
                         awake"
                    ));
                }
                Ok(rule)
            })?;
            if let Some(first) = rules.iter().position(|&x| x == rule) {
                return Err(self.err(
                    r.span(),
                    key(),
                    format!("`{rule}` is already listed at {at}.{field}[{first}]"),
                ));
            }
            rules.push(rule);
        }
        Ok(rules)
    }

    /// One `[[guest.health]]` table; `earlier` are the guest's health checks before it.
    fn health(
        &self,
        at: &str,
        j: usize,
        h: &RawHealth,
        answer: Option<&Vec<Spanned<String>>>,
        earlier: &[HealthCheck],
        wake_on: &[PortRule],
    ) -> Result<HealthCheck, ConfigError> {
        let key = |field: &str| format!("{at}.health[{j}].{field}");
        let port = self.check(
            &h.port,
            || key("port"),
            |&v| match u16::try_from(v) {
                Ok(p) if p > 0 => Ok(p),
                _ => Err(format!("{v} is not a TCP port (want 1..=65535)")),
            },
        )?;
        if let Some(first) = earlier.iter().position(|e| e.port == port) {
            return Err(self.err(
                h.port.span(),
                key("port"),
                format!("port {port} already has a health check at {at}.health[{first}]"),
            ));
        }
        let rule = PortRule {
            transport: Transport::Tcp,
            port,
        };
        if let Some(k) = wake_on.iter().position(|&r| r == rule) {
            return Err(self.err(
                h.port.span(),
                key("port"),
                format!(
                    "a health check on port {port} contradicts `{rule}` in \
                     {at}.wake_on[{k}]: a port cannot be both answered and a reason to wake"
                ),
            ));
        }
        if port == ECHO_PORT {
            let echo = answer
                .into_iter()
                .flatten()
                .position(|a| a.get_ref() == "tcp-echo");
            if let Some(k) = echo {
                return Err(self.err(
                    h.port.span(),
                    key("port"),
                    format!(
                        "a health check on port {port} contradicts `tcp-echo` in \
                         {at}.answer[{k}]: the echo service answers that port"
                    ),
                ));
            }
        }
        let path = self.check(&h.path, || key("path"), |s| health_path(s))?;
        let status = match &h.status {
            Some(v) => self.check(
                v,
                || key("status"),
                |&v| match u16::try_from(v) {
                    Ok(s) if (100..=599).contains(&s) => Ok(s),
                    _ => Err(format!("{v} is not an HTTP status code (want 100..=599)")),
                },
            )?,
            None => DEFAULT_HEALTH_STATUS,
        };
        let body = match &h.body {
            Some(v) => self.check(
                v,
                || key("body"),
                |s| {
                    if s.len() > MAX_HEALTH_BODY_LEN {
                        Err(format!(
                            "the body is {} bytes long; at most {MAX_HEALTH_BODY_LEN} are answered",
                            s.len()
                        ))
                    } else {
                        Ok(s.clone())
                    }
                },
            )?,
            None => DEFAULT_HEALTH_BODY.to_string(),
        };
        Ok(HealthCheck {
            port,
            path,
            status,
            body,
        })
    }

    fn answers(
        &self,
        at: &str,
        list: &[Spanned<String>],
        wake_on: &[PortRule],
    ) -> Result<Answers, ConfigError> {
        let mut answers = Answers::default();
        let mut seen: Vec<&str> = Vec::with_capacity(list.len());
        for (j, a) in list.iter().enumerate() {
            let key = || format!("{at}.answer[{j}]");
            let name = a.get_ref().as_str();
            let Some(flag) = answers.flag_mut(name) else {
                let expected = Answers::NAMES.map(|n| format!("`{n}`")).join(", ");
                return Err(self.err(
                    a.span(),
                    key(),
                    format!("unknown answer `{name}`; expected one of {expected}"),
                ));
            };
            if let Some(first) = seen.iter().position(|&x| x == name) {
                return Err(self.err(
                    a.span(),
                    key(),
                    format!("`{name}` is already listed at {at}.answer[{first}]"),
                ));
            }
            *flag = true;
            seen.push(name);
            let echo = match name {
                "tcp-echo" => Some(Transport::Tcp),
                "udp-echo" => Some(Transport::Udp),
                _ => None,
            };
            if let Some(transport) = echo {
                let rule = PortRule {
                    transport,
                    port: ECHO_PORT,
                };
                if let Some(k) = wake_on.iter().position(|&r| r == rule) {
                    return Err(self.err(
                        a.span(),
                        key(),
                        format!(
                            "`{name}` contradicts `{rule}` in {at}.wake_on[{k}]: the \
                             echo port cannot be both answered and a reason to wake"
                        ),
                    ));
                }
            }
        }
        Ok(answers)
    }

    /// Refuses values an earlier guest already took. Bridges, interfaces and MACs a libvirt
    /// guest leaves to its domain's XML are not known here, so they are not compared.
    fn unique(
        &self,
        i: usize,
        spanned: &Spanned<RawGuest>,
        guest: &GuestConfig,
        seen: &mut Seen,
    ) -> Result<(), ConfigError> {
        let g = spanned.get_ref();
        if let Some(&first) = seen.names.get(&guest.name) {
            return Err(self.err(
                g.name.span(),
                format!("guest[{i}].name"),
                format!("`{}` is already the name of guest[{first}]", guest.name),
            ));
        }
        seen.names.insert(guest.name.clone(), i);

        if let (Some(interface), Some(raw)) = (&guest.interface, &g.interface) {
            if let Some(&first) = seen.interfaces.get(interface) {
                return Err(self.err(
                    raw.span(),
                    format!("guest[{i}].interface"),
                    format!("`{interface}` is already the interface of guest[{first}]"),
                ));
            }
            seen.interfaces.insert(interface.clone(), i);
        }

        self.unique_target(i, g, guest, seen)?;

        let Some(bridge) = &guest.bridge else {
            return Ok(());
        };
        let lan = format!("bridge `{bridge}` vlan {}", guest.vlan);
        if let (Some(mac), Some(raw)) = (guest.mac, &g.mac) {
            let mac_key = (bridge.clone(), guest.vlan, mac);
            if let Some(&first) = seen.macs.get(&mac_key) {
                return Err(self.err(
                    raw.span(),
                    format!("guest[{i}].mac"),
                    format!(
                        "{} is already the MAC address of guest[{first}] on {lan}",
                        Mac(mac)
                    ),
                ));
            }
            seen.macs.insert(mac_key, i);
        }

        let v4 = guest.ipv4.iter().map(|&a| IpAddr::V4(a)).zip(&g.ipv4);
        let v6 = guest.ipv6.iter().map(|&a| IpAddr::V6(a)).zip(&g.ipv6);
        let keys = (0..g.ipv4.len())
            .map(|j| format!("guest[{i}].ipv4[{j}]"))
            .chain((0..g.ipv6.len()).map(|j| format!("guest[{i}].ipv6[{j}]")));
        for ((addr, raw), key) in v4.chain(v6).zip(keys) {
            let addr_key = (bridge.clone(), guest.vlan, addr);
            if let Some(first) = seen.addresses.get(&addr_key) {
                return Err(self.err(
                    raw.span(),
                    key,
                    format!("`{addr}` is already used by {first} on {lan}"),
                ));
            }
            seen.addresses.insert(addr_key, key);
        }
        Ok(())
    }

    /// Refuses a cgroup directory, libvirt domain, QMP socket or state file that an earlier
    /// guest already uses: two guests would then put the same thing to sleep.
    fn unique_target(
        &self,
        i: usize,
        g: &RawGuest,
        guest: &GuestConfig,
        seen: &mut Seen,
    ) -> Result<(), ConfigError> {
        let key = |field: &str| format!("guest[{i}].{field}");
        let path = |p: &Path| p.to_string_lossy().into_owned();
        // (what, value, where to point, key, how the value came about)
        let mut targets: Vec<(&'static str, String, Range<usize>, String, &str)> = Vec::new();
        match &guest.backend {
            BackendConfig::Cgroup { dir } => {
                if let Some(raw) = &g.cgroup {
                    targets.push(("cgroup", path(dir), raw.span(), key("cgroup"), ""));
                }
            }
            BackendConfig::Libvirt { domain, .. } => match &g.domain {
                Some(raw) => {
                    targets.push(("domain", domain.clone(), raw.span(), key("domain"), ""))
                }
                None => targets.push((
                    "domain",
                    domain.clone(),
                    g.backend.span(),
                    key("backend"),
                    " (by default the guest's name; give `domain` if that is not it)",
                )),
            },
            BackendConfig::Qmp {
                socket, state_file, ..
            } => {
                if let Some(raw) = &g.qmp {
                    targets.push(("QMP socket", path(socket), raw.span(), key("qmp"), ""));
                }
                if let (Some(file), Some(raw)) = (state_file, &g.state_file) {
                    targets.push(("state file", path(file), raw.span(), key("state_file"), ""));
                }
            }
        }
        for (what, value, span, key, note) in targets {
            if let Some(&first) = seen.targets.get(&(what, value.clone())) {
                return Err(self.err(
                    span,
                    key,
                    format!("`{value}` is already the {what} of guest[{first}]{note}"),
                ));
            }
            seen.targets.insert((what, value), i);
        }
        Ok(())
    }
}

impl RawGuest {
    /// Where the value of backend key `key` (one of [`BACKEND_KEYS`]) is, if it is given.
    fn backend_key_span(&self, key: &str) -> Option<Range<usize>> {
        match key {
            "agent" => self.agent.as_ref().map(Spanned::span),
            "cgroup" => self.cgroup.as_ref().map(Spanned::span),
            "domain" => self.domain.as_ref().map(Spanned::span),
            "mode" => self.mode.as_ref().map(Spanned::span),
            "qmp" => self.qmp.as_ref().map(Spanned::span),
            "qemu_command" => self.qemu_command.as_ref().map(Spanned::span),
            "state_file" => self.state_file.as_ref().map(Spanned::span),
            _ => None,
        }
    }
}

/// `"off"` or a non-zero duration.
pub(crate) fn idle_after(s: &str) -> Result<Option<Duration>, String> {
    off_or_not_zero(s, "a guest that sleeps only when told")
}

/// A duration that is not zero, or `off` (`None`); a zero one is refused, saying that `off`
/// is what gives `off_is`.
fn off_or_not_zero(s: &str, off_is: &str) -> Result<Option<Duration>, String> {
    if s == "off" {
        return Ok(None);
    }
    let d = parse_duration(s).map_err(|e| format!("{e}, or `off`"))?;
    if d.is_zero() {
        return Err(format!("`{s}` is zero; write `off` for {off_is}"));
    }
    Ok(Some(d))
}

/// Element `j` of a command's argv: the program (`j` 0) not empty, no NUL anywhere.
fn argv_element(j: usize, s: &str) -> Result<String, String> {
    if j == 0 && s.is_empty() {
        Err("the program to run is empty".to_string())
    } else if s.contains('\0') {
        Err("an argument cannot contain a NUL character".to_string())
    } else {
        Ok(s.to_owned())
    }
}

/// One window of `awake_during`: `DAYS HH:MM-HH:MM` (seconds may follow, `HH:MM:SS`).
/// DAYS is `daily`, `*`, or days and ranges of days joined by commas (`Mon-Fri`,
/// `Sat,Sun`, `Fri-Mon`); an end not after the start is on the next day.
pub(crate) fn window(s: &str) -> Result<Window, String> {
    let want = "write one like `Mon-Fri 08:00-18:00`, `Sat,Sun 10:00-12:00` or `daily 22:00-06:00`";
    let (days, times) = s
        .trim()
        .split_once(char::is_whitespace)
        .ok_or_else(|| format!("`{s}` is not a window; {want}"))?;
    let days = weekdays(days).map_err(|e| format!("{e}; {want}"))?;
    let (start, end) = times
        .trim()
        .split_once('-')
        .ok_or_else(|| format!("`{times}` is not a time range; {want}"))?;
    let start = time_of_day(start, false).map_err(|e| format!("{e}; {want}"))?;
    let end = time_of_day(end, true).map_err(|e| format!("{e}; {want}"))?;
    if start == end {
        return Err(format!(
            "`{times}` starts where it ends; for a whole day write 00:00-24:00"
        ));
    }
    Ok(Window { days, start, end })
}

/// `Mon-Fri`, `Sat,Sun`, `daily`, `*`.
fn weekdays(s: &str) -> Result<Weekdays, String> {
    if s == "daily" || s == "*" {
        return Ok(Weekdays::ALL);
    }
    let day = |d: &str| {
        DAY_NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(d))
            .map(|i| i as u8)
            .ok_or_else(|| format!("`{d}` is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"))
    };
    let mut days = Weekdays::none();
    for part in s.split(',') {
        match part.split_once('-') {
            Some((from, to)) => {
                let (from, to) = (day(from)?, day(to)?);
                let mut d = from;
                loop {
                    days = days.with(d);
                    if d == to {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => days = days.with(day(part)?),
        }
    }
    Ok(days)
}

/// `HH:MM` or `HH:MM:SS`, in seconds of the day; `24:00` only as an end.
fn time_of_day(s: &str, end: bool) -> Result<u32, String> {
    let bad = || format!("`{s}` is not a time of day (HH:MM, 00:00 to 23:59, or 24:00 as an end)");
    let mut parts = s.trim().split(':');
    let mut field = |max: u32| -> Result<u32, String> {
        let p = parts.next().ok_or_else(bad)?;
        if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let v: u32 = p.parse().map_err(|_| bad())?;
        if v > max {
            return Err(bad());
        }
        Ok(v)
    };
    let (h, m) = (field(24)?, field(59)?);
    let sec = match parts.next() {
        None => 0,
        Some(p) => {
            if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse::<u32>().ok().filter(|&v| v <= 59).ok_or_else(bad)?
        }
    };
    if parts.next().is_some() {
        return Err(bad());
    }
    let t = h * 3600 + m * 60 + sec;
    if t > DAY || (t == DAY && !end) {
        return Err(bad());
    }
    Ok(t)
}

/// A time zone of the tz database, as the host (or the copy built into vmnap) has it.
pub(crate) fn timezone(s: &str) -> Result<String, String> {
    jiff::tz::TimeZone::get(s).map_err(|_| {
        format!(
            "`{s}` is not a time zone of the tz database; write one like `Europe/Berlin` or `UTC`"
        )
    })?;
    Ok(s.to_owned())
}

/// `min_awake`: a duration, zero included (no minimum).
/// A path inside a guest: absolute, without NUL.
pub(crate) fn guest_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!(
            "`{s}` is not an absolute path (a file inside the guest)"
        ));
    }
    if s.contains('\0') {
        return Err("the path contains a NUL byte".to_owned());
    }
    Ok(s.to_owned())
}

pub(crate) fn min_awake(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| format!("{e} (0s for none)"))
}

/// `max_sleep`: a duration that is not zero, or `off`.
pub(crate) fn max_sleep(s: &str) -> Result<Option<Duration>, String> {
    off_or_not_zero(s, "a guest that sleeps until something wakes it")
}

/// A URI with a scheme (`qemu:///system`, `qemu+ssh://host/system`, `test:///default`).
fn libvirt_uri(s: &str) -> Result<String, String> {
    let want = "want one like qemu:///system";
    if s.is_empty() {
        return Err(format!("the libvirt URI is empty; {want}"));
    }
    if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{s}` contains {c:?}, which a URI cannot; {want}"));
    }
    let scheme = s.split_once(':').map_or("", |(scheme, _)| scheme);
    let good = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !good {
        return Err(format!("`{s}` is not a URI with a scheme; {want}"));
    }
    Ok(s.to_string())
}

/// `pause`, `pageout` or `save`.
pub(crate) fn sleep_mode(s: &str) -> Result<SleepMode, String> {
    match s {
        "pause" => Ok(SleepMode::Pause),
        "pageout" => Ok(SleepMode::Pageout),
        "save" => Ok(SleepMode::Save),
        other => Err(format!(
            "unknown mode `{other}`; expected `pause`, `pageout` or `save`"
        )),
    }
}

/// An XML namespace URI for `discover = { metadata = ... }`: what libvirt takes, a URI with a
/// scheme (`https://example.org/vmnap`).
fn metadata_uri(s: &str) -> Result<String, String> {
    let want = "want an XML namespace URI like https://example.org/vmnap";
    if s.is_empty() {
        return Err(format!("the metadata namespace is empty; {want}"));
    }
    if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{s}` contains {c:?}, which a URI cannot; {want}"));
    }
    let scheme = s.split_once(':').map_or("", |(scheme, _)| scheme);
    let good = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !good {
        return Err(format!("`{s}` is not a URI with a scheme; {want}"));
    }
    Ok(s.to_string())
}

/// What libvirt accepts as a domain name, roughly: not empty, no `/`, no control characters.
fn domain_name(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("the domain name is empty".into());
    }
    if let Some(c) = s.chars().find(|&c| c == '/' || c.is_control()) {
        return Err(format!(
            "`{s}` contains {c:?}, which libvirt refuses in a domain name"
        ));
    }
    Ok(s.to_string())
}

/// An HTTP request path: `/` first, then visible ASCII.
fn health_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!(
            "`{s}` does not start with `/`; want a path like /healthz"
        ));
    }
    if s.len() > MAX_HEALTH_PATH_LEN {
        return Err(format!(
            "the path is longer than {MAX_HEALTH_PATH_LEN} bytes"
        ));
    }
    if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "`{s}` contains {c:?}; a request path is visible ASCII (percent-encode the rest)"
        ));
    }
    Ok(s.to_string())
}

pub(crate) fn guest_name(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("guest name is empty".into());
    }
    if s.len() > MAX_NAME_LEN {
        return Err(format!("`{s}` is longer than {MAX_NAME_LEN} characters"));
    }
    if let Some(c) = s
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "`{s}` contains {c:?}; a guest name is made of letters, digits, `_`, `.` and `-`"
        ));
    }
    if s == "." || s == ".." {
        return Err(format!("`{s}` is not a usable guest name"));
    }
    Ok(s.to_string())
}

/// The rules of the kernel's `dev_valid_name`.
pub(crate) fn interface_name(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("interface name is empty".into());
    }
    if s.len() > MAX_IFNAME_LEN {
        return Err(format!(
            "`{s}` is longer than {MAX_IFNAME_LEN} bytes, the Linux limit for an interface name"
        ));
    }
    if s == "." || s == ".." {
        return Err(format!("`{s}` is not a valid interface name"));
    }
    if let Some(c) = s
        .chars()
        .find(|&c| matches!(c, '/' | ':' | '\0') || c.is_ascii_whitespace())
    {
        return Err(format!(
            "`{s}` contains {c:?}, which Linux refuses in an interface name"
        ));
    }
    Ok(s.to_string())
}

fn mac_address(s: &str) -> Result<[u8; 6], String> {
    let mac: Mac = s.parse().map_err(|e| format!("`{s}` is {e}"))?;
    if mac.is_multicast() {
        return Err(format!(
            "`{s}` is a multicast MAC address; a guest needs a unicast one"
        ));
    }
    if mac.is_zero() {
        return Err(format!("`{s}` is the all-zeros MAC address"));
    }
    Ok(mac.0)
}

pub(crate) fn ipv4_address(s: &str) -> Result<Ipv4Addr, String> {
    let a: Ipv4Addr = s
        .parse()
        .map_err(|_| format!("`{s}` is not an IPv4 address (want one like 198.18.0.11)"))?;
    if a.is_unspecified() {
        return Err(format!("`{s}` is the unspecified address"));
    }
    if a.is_multicast() {
        return Err(format!("`{s}` is a multicast address"));
    }
    if a.is_broadcast() {
        return Err(format!("`{s}` is the broadcast address"));
    }
    Ok(a)
}

pub(crate) fn ipv6_address(s: &str) -> Result<Ipv6Addr, String> {
    let a: Ipv6Addr = s
        .parse()
        .map_err(|_| format!("`{s}` is not an IPv6 address (want one like 2001:db8::11)"))?;
    if a.is_unspecified() {
        return Err(format!("`{s}` is the unspecified address"));
    }
    if a.is_multicast() {
        return Err(format!("`{s}` is a multicast address"));
    }
    Ok(a)
}

fn vlan_id(v: i64) -> Result<u16, String> {
    match u16::try_from(v) {
        Ok(v) if v <= MAX_VLAN => Ok(v),
        _ => Err(format!(
            "{v} is not a VLAN id (want 0 for untagged, or 1..={MAX_VLAN})"
        )),
    }
}

fn at_least(v: i64, min: usize, why: &str) -> Result<usize, String> {
    match usize::try_from(v) {
        Ok(n) if n >= min => Ok(n),
        _ => Err(format!("{v} is too small; want at least {min}{why}")),
    }
}

fn absolute_path(s: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    if !path.is_absolute() {
        return Err(format!("`{s}` is not an absolute path"));
    }
    Ok(path)
}

/// `socket_mode`: octal permission bits as a string, owner read and write, nothing for others.
fn socket_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    let mode = match u32::from_str_radix(digits, 8) {
        Ok(m) if !digits.is_empty() && digits.len() <= 4 && m <= 0o777 => m,
        _ => {
            return Err(format!(
                "`{s}` is not a permission mode (want octal digits like \"0600\" or \"0660\")"
            ))
        }
    };
    if mode & 0o600 != 0o600 {
        return Err(format!(
            "`{s}` does not let the daemon's owner read and write the socket (want at least 0600)"
        ));
    }
    if mode & 0o007 != 0 {
        return Err(format!(
            "`{s}` lets every user control the daemon; give access through the group instead \
             (like \"0660\")"
        ));
    }
    Ok(mode)
}

/// `listen`: an IP address and port, or a port alone (on 127.0.0.1); the port is never 0.
fn listen_address(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = match s.parse::<u16>() {
        Ok(port) => SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)),
        Err(_) => s.parse().map_err(|_| {
            format!(
                "`{s}` is not an address and port (want like \"127.0.0.1:7070\", \"[::1]:7070\" \
                 or a port alone, \"7070\", for 127.0.0.1)"
            )
        })?,
    };
    if addr.port() == 0 {
        return Err(format!("`{s}` has port 0; name the port to listen on"));
    }
    Ok(addr)
}

fn socket_path(s: &str) -> Result<PathBuf, String> {
    let path = absolute_path(s)?;
    if s.len() > MAX_SOCKET_PATH_LEN {
        return Err(format!(
            "`{s}` is longer than {MAX_SOCKET_PATH_LEN} bytes, the limit for a unix socket path"
        ));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips_through_format() {
        let mac = mac_address("02:AB:cd:00:01:ff").unwrap();
        assert_eq!(mac, [0x02, 0xab, 0xcd, 0x00, 0x01, 0xff]);
        assert_eq!(Mac(mac).to_string(), "02:ab:cd:00:01:ff");
    }

    #[test]
    fn mac_syntax_is_strict() {
        for bad in [
            "",
            "02:00:00:00:01",
            "02:00:00:00:01:01:01",
            "2:00:00:00:01:01",
            "02-00-00-00-01-01",
            "02:00:00:00:01:0g",
            "02:00:00:00:01:+1",
            "02:00:00:00:01:01:",
        ] {
            assert!(mac_address(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn interface_names_follow_the_kernel() {
        assert!(interface_name("vg-web1").is_ok());
        assert!(interface_name("a23456789012345").is_ok());
        for bad in [
            "",
            "a234567890123456",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "a\0b",
        ] {
            assert!(interface_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn at_least_refuses_negative_numbers() {
        assert!(at_least(-1, 0, "").is_err());
        assert_eq!(at_least(0, 0, ""), Ok(0));
    }
}
