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
    pub state: Option<Spanned<RawState>>,
    #[serde(default)]
    pub surrogate: Option<Spanned<RawSurrogate>>,
    #[serde(default)]
    pub wake: Option<Spanned<RawWake>>,
    #[serde(default)]
    pub guest: Vec<Spanned<RawGuest>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWake {
    #[serde(default)]
    pub max_resuming: Option<Spanned<i64>>,
    #[serde(default)]
    pub resume_memory_reserve: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSurrogate {
    #[serde(default)]
    pub in_kernel: Option<Spanned<bool>>,
    #[serde(default)]
    pub in_kernel_at_every_port: Option<Spanned<bool>>,
    #[serde(default)]
    pub learn_connections_for: Option<Spanned<String>>,
    #[serde(default)]
    pub max_held_bytes: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApi {
    #[serde(default)]
    pub socket: Option<Spanned<String>>,
    #[serde(default)]
    pub socket_mode: Option<Spanned<String>>,
    #[serde(default)]
    pub listen: Option<Spanned<String>>,
    #[serde(default)]
    pub token_file: Option<Spanned<String>>,
    #[serde(default)]
    pub insecure_listen_without_tls: Option<Spanned<bool>>,
    #[serde(default)]
    pub tls_cert: Option<Spanned<String>>,
    #[serde(default)]
    pub tls_key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawState {
    #[serde(default)]
    pub dir: Option<Spanned<String>>,
    #[serde(default)]
    pub on_restart: Option<Spanned<String>>,
    #[serde(default)]
    pub on_stop: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLibvirt {
    #[serde(default)]
    pub uri: Option<Spanned<String>>,
    /// `"all"` or `{ metadata = "URI" }`: checked in `validate`, where the span is enough.
    #[serde(default)]
    pub discover: Option<Spanned<RawDiscover>>,
    #[serde(default)]
    pub defaults: Option<Spanned<RawDefaults>>,
}

/// `discover`: a string, or a table of keys (only `metadata` is known; `validate` says so).
#[derive(Debug)]
pub(crate) enum RawDiscover {
    Name(String),
    Table(Vec<(String, toml::Value)>),
}

impl<'de> Deserialize<'de> for RawDiscover {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawDiscover;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"all\", or { metadata = \"URI\" }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawDiscover, E> {
                Ok(RawDiscover::Name(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawDiscover, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, toml::Value>()? {
                    out.push((k, v));
                }
                Ok(RawDiscover::Table(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// `[libvirt.defaults]`: the policy keys of a `[[guest]]`, for discovered guests.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDefaults {
    #[serde(default)]
    pub mode: Option<Spanned<String>>,
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
    pub min_awake: Option<Spanned<String>>,
    #[serde(default)]
    pub max_sleep: Option<Spanned<String>>,
    #[serde(default)]
    pub awake_during: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub timezone: Option<Spanned<String>>,
    #[serde(default)]
    pub before_sleep: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub after_wake: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub hook_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub guest_before_sleep: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub guest_after_wake: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub inhibit_file: Option<Spanned<String>>,
    #[serde(default)]
    pub keep_awake_while_connected: Vec<Spanned<String>>,
    #[serde(default)]
    pub health: Vec<Spanned<RawHealth>>,
}

/// The policy keys shared by `[[guest]]` and `[libvirt.defaults]`, borrowed from either.
pub(crate) struct RawPolicy<'a> {
    pub wake_on: &'a [Spanned<String>],
    pub answer: Option<&'a Vec<Spanned<String>>>,
    pub queue_frames: Option<&'a Spanned<i64>>,
    pub queue_bytes: Option<&'a Spanned<i64>>,
    pub multicast: Option<&'a Spanned<String>>,
    pub multicast_frames: Option<&'a Spanned<i64>>,
    pub idle_after: Option<&'a Spanned<String>>,
    pub min_awake: Option<&'a Spanned<String>>,
    pub max_sleep: Option<&'a Spanned<String>>,
    pub awake_during: Option<&'a Vec<Spanned<String>>>,
    pub timezone: Option<&'a Spanned<String>>,
    pub before_sleep: Option<&'a Spanned<Vec<Spanned<String>>>>,
    pub after_wake: Option<&'a Spanned<Vec<Spanned<String>>>>,
    pub hook_timeout: Option<&'a Spanned<String>>,
    pub guest_before_sleep: Option<&'a Spanned<Vec<Spanned<String>>>>,
    pub guest_after_wake: Option<&'a Spanned<Vec<Spanned<String>>>>,
    pub inhibit_file: Option<&'a Spanned<String>>,
    pub keep_awake_while_connected: &'a [Spanned<String>],
    pub health: &'a [Spanned<RawHealth>],
}

impl RawDefaults {
    pub(crate) fn policy(&self) -> RawPolicy<'_> {
        RawPolicy {
            wake_on: &self.wake_on,
            answer: self.answer.as_ref(),
            queue_frames: self.queue_frames.as_ref(),
            queue_bytes: self.queue_bytes.as_ref(),
            multicast: self.multicast.as_ref(),
            multicast_frames: self.multicast_frames.as_ref(),
            idle_after: self.idle_after.as_ref(),
            min_awake: self.min_awake.as_ref(),
            max_sleep: self.max_sleep.as_ref(),
            awake_during: self.awake_during.as_ref(),
            timezone: self.timezone.as_ref(),
            before_sleep: self.before_sleep.as_ref(),
            after_wake: self.after_wake.as_ref(),
            hook_timeout: self.hook_timeout.as_ref(),
            guest_before_sleep: self.guest_before_sleep.as_ref(),
            guest_after_wake: self.guest_after_wake.as_ref(),
            inhibit_file: self.inhibit_file.as_ref(),
            keep_awake_while_connected: &self.keep_awake_while_connected,
            health: &self.health,
        }
    }
}

impl RawGuest {
    pub(crate) fn policy(&self) -> RawPolicy<'_> {
        RawPolicy {
            wake_on: &self.wake_on,
            answer: self.answer.as_ref(),
            queue_frames: self.queue_frames.as_ref(),
            queue_bytes: self.queue_bytes.as_ref(),
            multicast: self.multicast.as_ref(),
            multicast_frames: self.multicast_frames.as_ref(),
            idle_after: self.idle_after.as_ref(),
            min_awake: self.min_awake.as_ref(),
            max_sleep: self.max_sleep.as_ref(),
            awake_during: self.awake_during.as_ref(),
            timezone: self.timezone.as_ref(),
            before_sleep: self.before_sleep.as_ref(),
            after_wake: self.after_wake.as_ref(),
            hook_timeout: self.hook_timeout.as_ref(),
            guest_before_sleep: self.guest_before_sleep.as_ref(),
            guest_after_wake: self.guest_after_wake.as_ref(),
            inhibit_file: self.inhibit_file.as_ref(),
            keep_awake_while_connected: &self.keep_awake_while_connected,
            health: &self.health,
        }
    }
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
    #[serde(default)]
    pub min_awake: Option<Spanned<String>>,
    #[serde(default)]
    pub max_sleep: Option<Spanned<String>>,
    #[serde(default)]
    pub awake_during: Vec<Spanned<String>>,
    #[serde(default)]
    pub timezone: Option<Spanned<String>>,
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
    pub agent: Option<Spanned<String>>,
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
    pub min_awake: Option<Spanned<String>>,
    #[serde(default)]
    pub max_sleep: Option<Spanned<String>>,
    #[serde(default)]
    pub awake_during: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub timezone: Option<Spanned<String>>,
    #[serde(default)]
    pub before_sleep: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub after_wake: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub hook_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub guest_before_sleep: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub guest_after_wake: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub inhibit_file: Option<Spanned<String>>,
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
