//! The config file as TOML says it: every key known, nothing checked yet. Values carry their
//! byte spans so that `validate` can point at them. Integers are read as `i64` so that range
//! errors get our message rather than serde's.

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub api: Option<Spanned<RawApi>>,
    #[serde(default)]
    pub libvirt: Option<Spanned<RawLibvirt>>,
    #[serde(default)]
    pub idle: Option<Spanned<RawIdle>>,
    #[serde(default)]
    pub guest: Vec<Spanned<RawGuest>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApi {
    #[serde(default)]
    pub socket: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLibvirt {
    #[serde(default)]
    pub uri: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIdle {
    #[serde(default)]
    pub interval: Option<Spanned<String>>,
    #[serde(default)]
    pub cpu_percent: Option<Spanned<f64>>,
    #[serde(default)]
    pub idle_after: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGuest {
    pub name: Spanned<String>,
    #[serde(default)]
    pub bridge: Option<Spanned<String>>,
    #[serde(default)]
    pub interface: Option<Spanned<String>>,
    #[serde(default)]
    pub mac: Option<Spanned<String>>,
    #[serde(default)]
    pub ipv4: Vec<Spanned<String>>,
    #[serde(default)]
    pub ipv6: Vec<Spanned<String>>,
    #[serde(default)]
    pub vlan: Option<Spanned<i64>>,
    pub backend: Spanned<String>,
    // Backend keys: which belong to which backend is checked in `validate`.
    #[serde(default)]
    pub cgroup: Option<Spanned<String>>,
    #[serde(default)]
    pub domain: Option<Spanned<String>>,
    #[serde(default)]
    pub mode: Option<Spanned<String>>,
    #[serde(default)]
    pub qmp: Option<Spanned<String>>,
    #[serde(default)]
    pub qemu_command: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub state_file: Option<Spanned<String>>,
    #[serde(default)]
    pub wake_on: Vec<Spanned<String>>,
    #[serde(default)]
    pub answer: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub queue_frames: Option<Spanned<i64>>,
    #[serde(default)]
    pub queue_bytes: Option<Spanned<i64>>,
    #[serde(default)]
    pub multicast: Option<Spanned<String>>,
    #[serde(default)]
    pub multicast_frames: Option<Spanned<i64>>,
    #[serde(default)]
    pub idle_after: Option<Spanned<String>>,
    #[serde(default)]
    pub keep_awake_while_connected: Vec<Spanned<String>>,
    #[serde(default)]
    pub health: Vec<Spanned<RawHealth>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    pub port: Spanned<i64>,
    pub path: Spanned<String>,
    #[serde(default)]
    pub status: Option<Spanned<i64>>,
    #[serde(default)]
    pub body: Option<Spanned<String>>,
}
