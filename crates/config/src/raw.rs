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
pub(crate) struct RawGuest {
    pub name: Spanned<String>,
    pub bridge: Spanned<String>,
    pub interface: Spanned<String>,
    pub mac: Spanned<String>,
    #[serde(default)]
    pub ipv4: Vec<Spanned<String>>,
    #[serde(default)]
    pub ipv6: Vec<Spanned<String>>,
    #[serde(default)]
    pub vlan: Option<Spanned<i64>>,
    pub backend: Spanned<String>,
    #[serde(default)]
    pub cgroup: Option<Spanned<String>>,
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
}
