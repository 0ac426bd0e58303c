//! Reads and validates vmnap's TOML config file into a typed [`Config`].
//!
//! The file is deserialized into raw structs that refuse unknown keys, then checked value by
//! value: names, interface names, MAC and IP addresses, VLAN ids, wake rules, answers, queue
//! limits, paths, durations, backends and their keys, health checks, and uniqueness across
//! guests (names, interfaces, backend targets, MACs and addresses per bridge and VLAN). Every
//! refusal is a [`ConfigError`] naming the file, line, column and key. The only I/O is reading
//! the one file in [`Config::load`], and a `timezone`'s name looked up in the tz database
//! (the host's, or the copy built into jiff); this crate does not check that the bridges, interfaces,
//! cgroups, libvirt domains, QMP sockets or socket directory exist, nor does it look at the
//! running system in any other way: that is the daemon's business when it starts the guests.
//!
//! ```toml
//! [idle]
//! idle_after = "10m"
//!
//! [[guest]]
//! name = "web1"
//! bridge = "br0"
//! interface = "vg-web1"
//! mac = "02:00:00:00:01:01"
//! ipv4 = ["198.18.0.11"]
//! backend = "cgroup"
//! cgroup = "/sys/fs/cgroup/vmnap/web1"
//! wake_on = ["tcp/80"]
//!
//! [[guest]]
//! name = "web2"
//! backend = "libvirt"        # MAC, bridge and tap come from the domain's XML
//! mode = "save"
//! ipv4 = ["198.18.0.12"]
//! wake_on = ["tcp/80"]
//!
//! [[guest.health]]
//! port = 8080
//! path = "/healthz"
//! ```
//!
//! Libvirt domains may also be discovered when the daemon starts, instead of listed: the
//! selector is [`LibvirtConfig::discover`], their policy [`LibvirtConfig::defaults`], and
//! [`Config::discovered_guest`] makes a guest of one, with what its metadata element says
//! ([`DomainSettings`]):
//!
//! ```toml
//! [libvirt]
//! discover = { metadata = "https://example.org/vmnap" }   # or "all"
//!
//! [libvirt.defaults]
//! mode = "save"
//! wake_on = ["tcp/80"]
//! ```
//!
//! See `example.toml` next to this crate's `Cargo.toml` for every key with its default.

mod discover;
mod duration;
mod error;
mod locate;
mod raw;
mod validate;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use discover::DomainSettings;
pub use vmnap_core::schedule::{AwakeWindows, Weekdays, Window};

/// Whether `name` is one Linux takes for an interface (`dev_valid_name`): `Err` says why
/// not. For names read from elsewhere than the config, such as a libvirt domain's XML.
pub fn check_interface_name(name: &str) -> Result<(), String> {
    validate::interface_name(name).map(drop)
}
pub use duration::parse_duration;
pub use error::ConfigError;

/// The API socket path used when `[api] socket` is not given.
pub const DEFAULT_SOCKET: &str = "/run/vmnap/vmnap.sock";
/// `[api] socket_mode` when not given: owner read and write only.
pub const DEFAULT_SOCKET_MODE: u32 = 0o600;
/// `[state] dir` when not given.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/vmnap";
/// Exit code for a bad config (`EX_USAGE` from `sysexits.h`).
pub const EX_CONFIG: u8 = 64;
/// `queue_frames` when not given.
pub const DEFAULT_QUEUE_FRAMES: usize = 4096;
/// `queue_bytes` when not given (8 MiB).
pub const DEFAULT_QUEUE_BYTES: usize = 8 * 1024 * 1024;
/// The smallest `queue_bytes` accepted: one 64 KiB GSO frame plus its Ethernet and VLAN headers
/// must fit.
pub const MIN_QUEUE_BYTES: usize = 65_600;
/// `multicast_frames` when not given, or `queue_frames` if that is smaller.
pub const DEFAULT_MULTICAST_FRAMES: usize = 256;
/// The largest VLAN id; 0 means untagged.
pub const MAX_VLAN: u16 = 4094;
/// The longest guest name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// The longest Linux interface name, in bytes (`IFNAMSIZ` - 1).
pub const MAX_IFNAME_LEN: usize = 15;
/// `[libvirt] uri` when not given.
pub const DEFAULT_LIBVIRT_URI: &str = "qemu:///system";
/// `[idle] interval` when not given.
pub const DEFAULT_IDLE_INTERVAL: Duration = Duration::from_secs(5);
/// The shortest `[idle] interval` accepted.
pub const MIN_IDLE_INTERVAL: Duration = Duration::from_millis(100);
/// `[idle] cpu_percent` when not given.
pub const DEFAULT_CPU_PERCENT: f64 = 2.0;
/// A guest's `hook_timeout` when not given.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// `[idle] idle_after` when not given (ten minutes).
pub const DEFAULT_IDLE_AFTER: Duration = Duration::from_secs(600);
/// A health check's `status` when not given.
pub const DEFAULT_HEALTH_STATUS: u16 = 200;
/// A health check's `body` when not given.
pub const DEFAULT_HEALTH_BODY: &str = "ok";
/// The longest health check `body` accepted, in bytes: with its status line and headers, the
/// whole answer fits in one TCP segment of the usual 1460-byte MSS.
pub const MAX_HEALTH_BODY_LEN: usize = 1024;

/// The whole config file, validated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// The `[api]` table.
    pub api: ApiConfig,
    /// The `[libvirt]` table.
    pub libvirt: LibvirtConfig,
    /// The `[idle]` table: how idleness is measured, and the default `idle_after`.
    pub idle: IdleConfig,
    /// The `[state]` table: where the daemon keeps what it has done, and what it does with
    /// sleeping guests when it restarts or stops.
    pub state: StateConfig,
    /// The `[surrogate]` table: how the daemon stands in for sleeping guests.
    pub surrogate: SurrogateConfig,
    /// The `[wake]` table: how many guests wake at once.
    pub wake: WakeConfig,
    /// The `[[guest]]` tables, in file order. May be empty.
    pub guests: Vec<GuestConfig>,
}

/// The `[api]` table: where the daemon serves its HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Absolute path of the unix socket the daemon listens on (key `socket`). Anyone who can
    /// connect to it controls the daemon: it needs no token.
    pub socket: PathBuf,
    /// The permission bits of the socket (key `socket_mode`, an octal string like `"0660"`):
    /// the owner can always read and write, others never. Default [`DEFAULT_SOCKET_MODE`].
    pub socket_mode: u32,
    /// A TCP address the API is also served on (key `listen`, like `"127.0.0.1:7070"`, or a
    /// port alone, `"7070"`, for 127.0.0.1); `None` (the default): only the unix socket.
    /// Only with `token_file`. An address other than a loopback one only with `tls` (or
    /// `insecure_listen_without_tls`: the token and every answer would cross the network
    /// in clear).
    pub listen: Option<SocketAddr>,
    /// Absolute path of the file holding the bearer token that requests on `listen` must
    /// carry (key `token_file`; `Authorization: Bearer TOKEN`). `Some` exactly when `listen`
    /// is. The daemon reads it when it starts.
    pub token_file: Option<PathBuf>,
    /// The owner's word that `listen` may be an address other than a loopback one, with
    /// the API in clear text (key `insecure_listen_without_tls`, default `false`).
    pub insecure_listen_without_tls: bool,
    /// TLS on `listen`: the certificate chain and private key, PEM files (keys `tls_cert`
    /// and `tls_key`, absolute paths, both or neither, only with `listen`). The daemon
    /// reads them when it starts, and refuses a key file that others can read.
    pub tls: Option<TlsFiles>,
}

/// The files of the TCP listener's TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            socket: PathBuf::from(DEFAULT_SOCKET),
            socket_mode: DEFAULT_SOCKET_MODE,
            listen: None,
            token_file: None,
            insecure_listen_without_tls: false,
            tls: None,
        }
    }
}

/// The `[state]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateConfig {
    /// Absolute path of the directory the daemon keeps its journal in (key `dir`). Default
    /// [`DEFAULT_STATE_DIR`].
    pub dir: PathBuf,
    /// What a daemon started again does with the guests its journal says it left asleep (key
    /// `on_restart`).
    pub on_restart: OnRestart,
    /// What the daemon does with the guests it put to sleep when it stops (key `on_stop`).
    pub on_stop: OnStop,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            dir: PathBuf::from(DEFAULT_STATE_DIR),
            on_restart: OnRestart::default(),
            on_stop: OnStop::default(),
        }
    }
}

/// The `[surrogate]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SurrogateConfig {
    /// Whether ARP requests for a sleeping guest's IPv4 addresses and ICMP echo requests to
    /// them are answered in the kernel, by an eBPF program on the surrogate's port, rather
    /// than by the daemon (key `in_kernel`, default `true`). The answers are the same; in
    /// the kernel they cost a fraction, and a guest on a VLAN is always answered by the
    /// daemon. Where the kernel refuses the program, the daemon answers and says why.
    pub in_kernel: bool,
    /// Whether the kernel also answers them at the ingress of every other port of the
    /// bridge, as a request comes in, rather than only at the surrogate's port once the
    /// bridge has carried it there (key `in_kernel_at_every_port`, default `false`; needs
    /// `in_kernel`). Neither the request nor the answer then crosses the bridge: about 1.5
    /// times the answers per second, and none of the bridge's own work per answer. But
    /// nothing the bridge would do to the request happens either: netfilter's rules for
    /// bridged frames (br_netfilter's iptables and arptables, ebtables, nftables' bridge
    /// family) do not see it, the bridge learns nothing from it, and a capture on the
    /// bridge does not show it. vmnap leaves alone the bridges with VLAN filtering, and
    /// the ports that are isolated, locked or not forwarding, and warns where bridged
    /// frames go to iptables or arptables; other rules are the operator's to weigh.
    pub in_kernel_at_every_port: bool,
    /// How long vmnap follows a guest's connections before it trusts that it knows them
    /// all (key `learn_connections_for`, default [`DEFAULT_LEARN_CONNECTIONS_FOR`]). While
    /// a guest sleeps, a TCP segment that opens nothing (data, a FIN, an ACK) wakes it only
    /// for a connection vmnap has seen on its port; one for any other connection gets the
    /// RST the guest's own kernel would send. vmnap learns a connection from its handshake,
    /// or from any data on it, and remembers those of a sleeping guest across restarts. A
    /// guest it begins to follow awake (at start, or after a crash) may have older,
    /// silent connections, so for this long after that its unknown connections still wake
    /// it. `0s` trusts at once.
    pub learn_connections_for: Duration,
    /// The bytes held for all sleeping guests together, across bridges (key
    /// `max_held_bytes`, default [`DEFAULT_MAX_HELD_BYTES`], at least [`MIN_QUEUE_BYTES`]).
    /// Each guest also has its own `queue_bytes`; past this budget a frame is dropped and
    /// counted (`hold-budget`) whoever it is for.
    pub max_held_bytes: usize,
}

/// The default of `[surrogate] max_held_bytes`: 512 MiB.
pub const DEFAULT_MAX_HELD_BYTES: usize = 512 << 20;

/// The `[wake]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakeConfig {
    /// How many guests the backends resume at once, across all bridges (key `max_resuming`,
    /// default [`DEFAULT_MAX_RESUMING`], 1 to [`MAX_MAX_RESUMING`]). A wake past it waits
    /// its turn, its guest's traffic held for it, so that a storm of wakes (from save,
    /// each reading its memory back) cannot take the host's memory or disk all at once.
    pub max_resuming: usize,
    /// The host memory, in bytes, that must stay available after a resume that brings a
    /// guest's memory back (from a save) and those under way (key `resume_memory_reserve`,
    /// default [`DEFAULT_RESUME_MEMORY_RESERVE`]). A resume that would go below it waits,
    /// its traffic held, until the host has the room.
    pub resume_memory_reserve: u64,
}

/// The default of `[wake] resume_memory_reserve`: 512 MiB.
pub const DEFAULT_RESUME_MEMORY_RESERVE: u64 = 512 << 20;

/// The default of `[wake] max_resuming`.
pub const DEFAULT_MAX_RESUMING: usize = 16;
/// The largest `[wake] max_resuming`.
pub const MAX_MAX_RESUMING: usize = 4096;

impl Default for WakeConfig {
    fn default() -> Self {
        WakeConfig {
            max_resuming: DEFAULT_MAX_RESUMING,
            resume_memory_reserve: DEFAULT_RESUME_MEMORY_RESERVE,
        }
    }
}

/// The default of `[surrogate] learn_connections_for`: an hour.
pub const DEFAULT_LEARN_CONNECTIONS_FOR: Duration = Duration::from_secs(3600);

impl Default for SurrogateConfig {
    fn default() -> Self {
        SurrogateConfig {
            in_kernel: true,
            in_kernel_at_every_port: false,
            learn_connections_for: DEFAULT_LEARN_CONNECTIONS_FOR,
            max_held_bytes: DEFAULT_MAX_HELD_BYTES,
        }
    }
}

/// `[state] on_restart`: `"stand-in"` (the default) or `"wake"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OnRestart {
    /// Keep the guests asleep and stand in for them again.
    #[default]
    StandIn,
    /// Wake them.
    Wake,
}

impl OnRestart {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            OnRestart::StandIn => "stand-in",
            OnRestart::Wake => "wake",
        }
    }
}

/// `[state] on_stop`: `"wake"` (the default) or `"keep-asleep"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OnStop {
    /// Wake every guest the daemon put to sleep.
    #[default]
    Wake,
    /// Leave them asleep, for the next daemon to pick up from its journal.
    KeepAsleep,
}

impl OnStop {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            OnStop::Wake => "wake",
            OnStop::KeepAsleep => "keep-asleep",
        }
    }
}

/// The `[libvirt]` table, used by guests with `backend = "libvirt"` and by discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibvirtConfig {
    /// The libvirt connection URI, like `qemu:///system` or `test:///default`: a scheme, `:`,
    /// and no whitespace. Default [`DEFAULT_LIBVIRT_URI`].
    pub uri: String,
    /// Which domains of `uri` the daemon makes guests of at start, besides the `[[guest]]`
    /// tables (key `discover`); `None` (the default): none.
    pub discover: Option<Discover>,
    /// The policy of discovered guests (table `[libvirt.defaults]`, only with `discover`).
    pub defaults: GuestDefaults,
}

impl Default for LibvirtConfig {
    fn default() -> Self {
        LibvirtConfig {
            uri: DEFAULT_LIBVIRT_URI.to_string(),
            discover: None,
            defaults: GuestDefaults::default(),
        }
    }
}

/// `[libvirt] discover`: which domains become guests without a `[[guest]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discover {
    /// `discover = "all"`: every domain of the connection.
    All,
    /// `discover = { metadata = "URI" }`: the domains whose `<metadata>` holds an element in
    /// the XML namespace `URI` (libvirt's `virDomainGetMetadata` with
    /// `VIR_DOMAIN_METADATA_ELEMENT`). The element's attributes may override the defaults
    /// (see [`DomainSettings`]).
    Metadata(String),
}

/// `[libvirt.defaults]`: the policy of discovered guests, with the same keys, meanings and
/// defaults as in `[[guest]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestDefaults {
    /// How the domain sleeps.
    pub mode: SleepMode,
    /// As [`GuestConfig::wake_on`].
    pub wake_on: Vec<PortRule>,
    /// As [`GuestConfig::answer`].
    pub answer: Answers,
    /// As [`GuestConfig::queue_frames`].
    pub queue_frames: usize,
    /// As [`GuestConfig::queue_bytes`].
    pub queue_bytes: usize,
    /// As [`GuestConfig::multicast`].
    pub multicast: MulticastPolicy,
    /// As [`GuestConfig::multicast_frames`].
    pub multicast_frames: usize,
    /// As [`GuestConfig::idle_after`].
    pub idle_after: Option<Option<Duration>>,
    /// As [`GuestConfig::schedule`].
    pub schedule: Option<Box<SleepSchedule>>,
    /// As [`GuestConfig::hooks`].
    pub hooks: Option<Box<GuestHooks>>,
    /// As [`GuestConfig::keep_awake_while_connected`].
    pub keep_awake_while_connected: Vec<PortRule>,
    /// As [`GuestConfig::health`] (`[[libvirt.defaults.health]]`).
    pub health: Vec<HealthCheck>,
}

impl Default for GuestDefaults {
    fn default() -> Self {
        GuestDefaults {
            mode: SleepMode::Pause,
            wake_on: Vec::new(),
            answer: Answers::DEFAULT,
            queue_frames: DEFAULT_QUEUE_FRAMES,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            multicast: MulticastPolicy::Queue,
            multicast_frames: DEFAULT_MULTICAST_FRAMES.min(DEFAULT_QUEUE_FRAMES),
            idle_after: None,
            schedule: None,
            hooks: None,
            keep_awake_while_connected: Vec::new(),
            health: Vec::new(),
        }
    }
}

/// The `[idle]` table.
///
/// A guest counts as idle while it stays under `cpu_percent` with no traffic other than what
/// the surrogate could have answered itself; it is put to sleep once it has been idle for its
/// [`GuestConfig::idle_after`].
#[derive(Debug, Clone, PartialEq)]
pub struct IdleConfig {
    /// How often each guest is sampled; at least [`MIN_IDLE_INTERVAL`], default
    /// [`DEFAULT_IDLE_INTERVAL`].
    pub interval: Duration,
    /// Below this share of one core (in percent) a guest counts as idle. Finite and above 0;
    /// may exceed 100 for guests with several vCPUs. Default [`DEFAULT_CPU_PERCENT`].
    pub cpu_percent: f64,
    /// How long a guest must stay idle before it is put to sleep, for guests that do not say
    /// otherwise. `None` (written `"off"`): guests sleep only when told (`vmnap sleep`).
    /// Never zero. Default [`DEFAULT_IDLE_AFTER`].
    pub idle_after: Option<Duration>,
    /// After a wake, idleness does not put a guest back to sleep before this long, for
    /// guests that do not say otherwise (against a guest flapping between asleep and
    /// awake); `vmnap sleep` still does. Default zero.
    pub min_awake: Duration,
    /// A guest asleep this long is woken (for its maintenance, its backups, its updates),
    /// and may fall asleep again when idle, for guests that do not say otherwise. `None`
    /// (written `"off"`, the default): it sleeps until traffic or an operator wakes it.
    /// Never zero.
    pub max_sleep: Option<Duration>,
    /// Windows of weekdays and times of day in which guests that do not say otherwise do
    /// not fall asleep by idleness, and at whose start a sleeping one is woken (cause
    /// `awake-window`); `vmnap sleep` still puts them to sleep. Written like
    /// `"Mon-Fri 08:00-18:00"`. Default: none.
    pub awake_during: AwakeWindows,
    /// The time zone of the windows, for guests that do not say otherwise: a name of the tz
    /// database (`Europe/Berlin`, `UTC`). `None` (the default): the host's.
    pub timezone: Option<String>,
}

impl Default for IdleConfig {
    fn default() -> Self {
        IdleConfig {
            interval: DEFAULT_IDLE_INTERVAL,
            cpu_percent: DEFAULT_CPU_PERCENT,
            idle_after: Some(DEFAULT_IDLE_AFTER),
            min_awake: Duration::ZERO,
            max_sleep: None,
            awake_during: AwakeWindows::default(),
            timezone: None,
        }
    }
}

/// One `[[guest]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestConfig {
    /// Unique name, 1..=64 characters from `[A-Za-z0-9_.-]`, not `.` or `..`.
    pub name: String,
    /// The Linux bridge the guest's port is on. Always `Some` for cgroup and QMP guests; for a
    /// libvirt guest `None` means "read it from the domain's XML", and `Some` is a value the
    /// domain must agree with.
    pub bridge: Option<String>,
    /// The guest's port on that bridge (host side of its veth or tap); never the bridge itself.
    /// Given, absent and checked like `bridge`.
    pub interface: Option<String>,
    /// The guest's unicast MAC address. Given, absent and checked like `bridge`.
    pub mac: Option<[u8; 6]>,
    /// The guest's IPv4 addresses; at least one of `ipv4` and `ipv6` is non-empty.
    pub ipv4: Vec<Ipv4Addr>,
    /// The guest's IPv6 addresses.
    pub ipv6: Vec<Ipv6Addr>,
    /// 802.1Q VLAN id; 0 means untagged, otherwise 1..=4094.
    pub vlan: u16,
    /// How the guest is put to sleep and woken.
    pub backend: BackendConfig,
    /// Traffic that wakes the guest.
    pub wake_on: Vec<PortRule>,
    /// What the surrogate answers on the guest's behalf while it sleeps.
    pub answer: Answers,
    /// At most this many frames are held while the guest wakes (>= 1).
    pub queue_frames: usize,
    /// At most this many bytes of frames are held while the guest wakes (>= [`MIN_QUEUE_BYTES`]).
    pub queue_bytes: usize,
    /// What happens to broadcast and multicast frames that arrive while the guest sleeps.
    pub multicast: MulticastPolicy,
    /// At most this many broadcast/multicast frames are held (<= `queue_frames`); they never
    /// wake the guest. Defaults to [`DEFAULT_MULTICAST_FRAMES`] or `queue_frames`, whichever is
    /// smaller.
    pub multicast_frames: usize,
    /// This guest's override of `[idle] idle_after`: `None` when not given, `Some(None)` for
    /// `"off"` (the guest sleeps only when told), `Some(Some(d))` with `d` never zero. Use
    /// [`GuestConfig::idle_after`] for the value that applies.
    pub idle_after: Option<Option<Duration>>,
    /// This guest's overrides of `[idle]`'s `min_awake`, `max_sleep`, `awake_during` and
    /// `timezone`; `None` when it gives none of them (boxed: few guests do). Use
    /// [`GuestConfig::min_awake`] and its siblings for the values that apply.
    pub schedule: Option<Box<SleepSchedule>>,
    /// Its hooks; `None` when it has none and the default `hook_timeout`.
    pub hooks: Option<Box<GuestHooks>>,
    /// The guest is not put to sleep while it has an open TCP connection on one of these ports
    /// (only `tcp/PORT` rules; no duplicates).
    pub keep_awake_while_connected: Vec<PortRule>,
    /// HTTP health checks the surrogate answers while the guest sleeps, in file order; ports
    /// are unique per guest and never a `tcp/PORT` of `wake_on`.
    pub health: Vec<HealthCheck>,
}

impl GuestConfig {
    /// How long this guest must stay idle before it is put to sleep: its own `idle_after` if
    /// given, otherwise `idle.idle_after`. `None`: it sleeps only when told.
    pub fn idle_after(&self, idle: &IdleConfig) -> Option<Duration> {
        self.idle_after.unwrap_or(idle.idle_after)
    }

    /// How long after a wake idleness leaves this guest awake at least: its own
    /// `min_awake` if given, otherwise `idle.min_awake`.
    pub fn min_awake(&self, idle: &IdleConfig) -> Duration {
        self.schedule
            .as_ref()
            .and_then(|s| s.min_awake)
            .unwrap_or(idle.min_awake)
    }

    /// How long this guest may sleep before it is woken: its own `max_sleep` if given,
    /// otherwise `idle.max_sleep`. `None`: as long as nothing wakes it.
    pub fn max_sleep(&self, idle: &IdleConfig) -> Option<Duration> {
        self.schedule
            .as_ref()
            .and_then(|s| s.max_sleep)
            .unwrap_or(idle.max_sleep)
    }

    /// This guest's awake windows: its own `awake_during` if given, otherwise
    /// `idle.awake_during`.
    pub fn awake_during<'a>(&'a self, idle: &'a IdleConfig) -> &'a AwakeWindows {
        self.schedule
            .as_ref()
            .and_then(|s| s.awake_during.as_ref())
            .unwrap_or(&idle.awake_during)
    }

    /// The time zone of its windows: its own `timezone` if given, otherwise
    /// `idle.timezone`; `None`: the host's.
    pub fn timezone<'a>(&'a self, idle: &'a IdleConfig) -> Option<&'a str> {
        self.schedule
            .as_ref()
            .and_then(|s| s.timezone.as_deref())
            .or(idle.timezone.as_deref())
    }
}

/// A guest's overrides of the `[idle]` keys that time its sleeps beside idleness (each
/// `None` when not given).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SleepSchedule {
    /// Its `min_awake`.
    pub min_awake: Option<Duration>,
    /// Its `max_sleep`: `Some(None)` for `"off"`.
    pub max_sleep: Option<Option<Duration>>,
    /// Its `awake_during` (an empty list: no window).
    pub awake_during: Option<AwakeWindows>,
    /// Its `timezone`.
    pub timezone: Option<String>,
}

impl SleepSchedule {
    /// `None` when it overrides nothing, so that a guest without overrides holds nothing.
    pub fn boxed(self) -> Option<Box<SleepSchedule>> {
        (self != SleepSchedule::default()).then(|| Box::new(self))
    }
}

/// A guest's hooks: commands run on the host, argv program first, with `VMNAP_GUEST` and
/// `VMNAP_EVENT` (`before-sleep`, `after-wake`) in their environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestHooks {
    /// Run before each sleep of the guest (empty: none): a non-zero exit, or no exit within
    /// `timeout`, vetoes the sleep (idleness tries again later).
    pub before_sleep: Vec<String>,
    /// Run after each wake (empty: none), not waited for by the wake; a failure is reported.
    pub after_wake: Vec<String>,
    /// Run inside the guest through its qemu-guest-agent (`guest-exec`) before each sleep,
    /// after `before_sleep`, argv program first (empty: none): as `before_sleep`, a
    /// non-zero exit or no exit within `timeout` vetoes the sleep, as does an agent that
    /// does not answer.
    pub guest_before_sleep: Vec<String>,
    /// Run inside the guest through its agent after each wake (empty: none), as
    /// `after_wake`.
    pub guest_after_wake: Vec<String>,
    /// A file inside the guest whose existence vetoes its sleeps (read through its agent,
    /// `guest-file-open`): a backup or a long job creates it, and removes it when done.
    pub inhibit_file: Option<String>,
    /// How long a hook may run before it is killed (and a `before_sleep` counts as a
    /// veto); `hook_timeout`, default [`DEFAULT_HOOK_TIMEOUT`].
    pub timeout: Duration,
}

impl GuestHooks {
    /// `None` when there is no hook to run and the timeout is the default, so that a
    /// guest without hooks holds nothing (a timeout of `[libvirt.defaults]` is kept for the
    /// hooks a domain's metadata adds).
    pub fn boxed(self) -> Option<Box<GuestHooks>> {
        (self.runs_before_sleep() || self.runs_after_wake() || self.timeout != DEFAULT_HOOK_TIMEOUT)
            .then(|| Box::new(self))
    }

    /// Whether anything runs before a sleep (and may veto it).
    pub fn runs_before_sleep(&self) -> bool {
        !self.before_sleep.is_empty()
            || !self.guest_before_sleep.is_empty()
            || self.inhibit_file.is_some()
    }

    /// Whether anything runs after a wake.
    pub fn runs_after_wake(&self) -> bool {
        !self.after_wake.is_empty() || !self.guest_after_wake.is_empty()
    }
}

/// How a guest is suspended and resumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendConfig {
    /// `backend = "cgroup"`: freeze the processes of a cgroup directory.
    Cgroup {
        /// Absolute path of the cgroup directory (key `cgroup`).
        dir: PathBuf,
    },
    /// `backend = "libvirt"`: a domain of the `[libvirt]` connection.
    Libvirt {
        /// The libvirt domain name (key `domain`); defaults to the guest's name. Not empty, no
        /// `/`, no control characters.
        domain: String,
        /// How the domain sleeps (key `mode`).
        mode: SleepMode,
    },
    /// `backend = "qmp"`: a QEMU started without libvirt, driven over its QMP socket.
    Qmp {
        /// Absolute path of the QEMU monitor's unix socket (key `qmp`).
        socket: PathBuf,
        /// How the guest sleeps (key `mode`).
        mode: SleepMode,
        /// The argv that starts the guest's QEMU (key `qemu_command`; `[0]` is the program).
        /// Non-empty with [`SleepMode::Save`], empty otherwise (where the key is refused). The daemon adds what restoring from `state_file` takes.
        qemu_command: Box<[String]>,
        /// Absolute path of the file the guest's state is saved to (key `state_file`). `Some`
        /// with [`SleepMode::Save`], `None` otherwise (where the key is refused).
        state_file: Option<Box<Path>>,
        /// Absolute path of the unix socket of the guest's qemu-guest-agent (key `agent`:
        /// QEMU's `-chardev socket,path=...,server=on,wait=off` of a `virtserialport` named
        /// `org.qemu.guest_agent.0`); `None`: the guest has no agent.
        agent: Option<Box<Path>>,
    },
}

impl BackendConfig {
    /// The name used for this backend in the config file (`"cgroup"`, `"libvirt"` or `"qmp"`).
    pub fn kind(&self) -> &'static str {
        match self {
            BackendConfig::Cgroup { .. } => "cgroup",
            BackendConfig::Libvirt { .. } => "libvirt",
            BackendConfig::Qmp { .. } => "qmp",
        }
    }

    /// The sleep mode of a libvirt or QMP guest; `None` for a cgroup guest.
    pub fn mode(&self) -> Option<SleepMode> {
        match self {
            BackendConfig::Cgroup { .. } => None,
            BackendConfig::Libvirt { mode, .. } | BackendConfig::Qmp { mode, .. } => Some(*mode),
        }
    }
}

/// How a libvirt or QMP guest sleeps: `mode = "pause"` (the default), `"pageout"` or
/// `"save"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SleepMode {
    /// Stop the vCPUs and keep the memory: fastest wake.
    #[default]
    Pause,
    /// Stop the vCPUs and take the guest's RAM out of host memory: written back to the file
    /// that backs it and dropped from the page cache. The wake is a resume, and the RAM
    /// comes back a page at a time as the guest touches it. Needs RAM that is a shared
    /// mapping of a file (QEMU's `memory-backend-file,share=on`; libvirt's
    /// `<memoryBacking><source type='file'/><access mode='shared'/>`).
    Pageout,
    /// Save the guest's state to disk and end its QEMU, freeing its memory; start it again
    /// from the saved state on wake.
    Save,
}

impl SleepMode {
    /// The name used in the config file (`"pause"`, `"pageout"` or `"save"`).
    pub fn as_str(self) -> &'static str {
        match self {
            SleepMode::Pause => "pause",
            SleepMode::Pageout => "pageout",
            SleepMode::Save => "save",
        }
    }
}

/// One `[[guest.health]]` table is a [`HealthCheck`]: an HTTP health check the surrogate
/// answers while the guest sleeps, over a real TCP connection, without waking it.
pub use vmnap_core::{
    Answers, HealthCheck, MulticastPolicy, ParsePortRuleError, PortRule, Transport,
};

/// What a build of vmnap can run: the optional backends compiled into it (the binary's cargo
/// features). A config that needs one that is missing is refused where it asks for it
/// ([`Config::load_for`]), not when the daemon first reaches the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Builtin {
    /// Libvirt domains (`backend = "libvirt"`, `[libvirt] discover`): the cargo feature
    /// `libvirt`, which links libvirt.
    pub libvirt: bool,
}

impl Builtin {
    /// Every backend there is.
    pub const ALL: Builtin = Builtin { libvirt: true };
}

impl Config {
    /// Reads and validates the config file at `path`, for a build with every backend.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when the file cannot be read (`FILE: cannot read: ...`) or when
    /// [`Config::parse`] refuses it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_for(path, Builtin::ALL)
    }

    /// Reads and validates the config file at `path` for a build that has the backends of
    /// `builtin`.
    ///
    /// # Errors
    ///
    /// As [`Config::load`], and a guest or table that needs a backend `builtin` lacks.
    pub fn load_for(path: &Path, builtin: Builtin) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        Config::parse_for(&text, path, builtin)
    }

    /// Validates config text, for a build with every backend; `path` is used only in error
    /// messages.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for the first problem found: TOML syntax, an unknown or missing key, a
    /// value of the wrong type, or a value that fails validation.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse_for(text, path, Builtin::ALL)
    }

    /// Validates config text for a build that has the backends of `builtin`.
    ///
    /// # Errors
    ///
    /// As [`Config::parse`], and a guest or table that needs a backend `builtin` lacks.
    pub fn parse_for(text: &str, path: &Path, builtin: Builtin) -> Result<Config, ConfigError> {
        validate::parse(text, path, builtin)
    }

    /// The guest called `name`, if any.
    pub fn guest(&self, name: &str) -> Option<&GuestConfig> {
        self.guests.iter().find(|g| g.name == name)
    }

    /// The guests by name, for looking many up: [`Config::guest`] searches the list.
    pub fn guests_by_name(&self) -> std::collections::HashMap<&str, &GuestConfig> {
        self.guests.iter().map(|g| (g.name.as_str(), g)).collect()
    }
}
