//! Reads and validates vmnap's TOML config file into a typed [`Config`].
//!
//! The file is deserialized into raw structs that refuse unknown keys, then checked value by
//! value: names, interface names, MAC and IP addresses, VLAN ids, wake rules, answers, queue
//! limits, paths, and uniqueness across guests (names, interfaces, MACs and addresses per bridge
//! and VLAN). Every refusal is a [`ConfigError`] naming the file, line, column and key. The only
//! I/O is reading the one file in [`Config::load`]; this crate does not check that the bridges,
//! interfaces, cgroups or socket directory exist, nor does it look at the running system in any
//! other way: that is the daemon's business when it starts the guests.
//!
//! ```toml
//! [[guest]]
//! name = "web1"
//! bridge = "br0"
//! interface = "vg-web1"
//! mac = "02:00:00:00:01:01"
//! ipv4 = ["198.18.0.11"]
//! backend = "cgroup"
//! cgroup = "/sys/fs/cgroup/vmnap/web1"
//! wake_on = ["tcp/80"]
//! ```
//!
//! See `example.toml` next to this crate's `Cargo.toml` for every key with its default.

mod error;
mod locate;
mod raw;
mod validate;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

pub use error::ConfigError;

/// The API socket path used when `[api] socket` is not given.
pub const DEFAULT_SOCKET: &str = "/run/vmnap/vmnap.sock";
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

/// The whole config file, validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// The `[api]` table.
    pub api: ApiConfig,
    /// The `[[guest]]` tables, in file order. May be empty.
    pub guests: Vec<GuestConfig>,
}

/// The `[api]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Absolute path of the unix socket the daemon listens on.
    pub socket: PathBuf,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            socket: PathBuf::from(DEFAULT_SOCKET),
        }
    }
}

/// One `[[guest]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestConfig {
    /// Unique name, 1..=64 characters from `[A-Za-z0-9_.-]`, not `.` or `..`.
    pub name: String,
    /// The Linux bridge the guest's port is on.
    pub bridge: String,
    /// The guest's port on that bridge (host side of its veth or tap).
    pub interface: String,
    /// The guest's unicast MAC address.
    pub mac: [u8; 6],
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
}

/// How a guest is suspended and resumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendConfig {
    /// Freeze the processes of a cgroup v2 directory (`cgroup.freeze`).
    Cgroup {
        /// Absolute path of the cgroup directory.
        dir: PathBuf,
    },
}

impl BackendConfig {
    /// The name used for this backend in the config file (`"cgroup"`).
    pub fn kind(&self) -> &'static str {
        match self {
            BackendConfig::Cgroup { .. } => "cgroup",
        }
    }
}

pub use vmnap_core::{Answers, MulticastPolicy, ParsePortRuleError, PortRule, Transport};

impl Config {
    /// Reads and validates the config file at `path`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when the file cannot be read (`FILE: cannot read: ...`) or when
    /// [`Config::parse`] refuses it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, path)
    }

    /// Validates config text; `path` is used only in error messages.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for the first problem found: TOML syntax, an unknown or missing key, a
    /// value of the wrong type, or a value that fails validation.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        validate::parse(text, path)
    }

    /// The guest called `name`, if any.
    pub fn guest(&self, name: &str) -> Option<&GuestConfig> {
        self.guests.iter().find(|g| g.name == name)
    }
}
