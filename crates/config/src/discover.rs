//! Guests made from discovered libvirt domains: `[libvirt.defaults]`, overridden by what a
//! domain's own metadata element says ([`DomainSettings`]).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::validate::{
    guest_name, guest_path, idle_after, ipv4_address, ipv6_address, max_sleep, min_awake,
    sleep_mode,
};
use crate::{
    Answers, BackendConfig, Config, GuestConfig, GuestHooks, PortRule, Transport,
    DEFAULT_HOOK_TIMEOUT,
};

/// Prefixes a message with the attribute it is about.
fn at(key: &'static str) -> impl Fn(String) -> String {
    move |m| format!("`{key}`: {m}")
}

/// What a discovered domain's metadata element says about its guest, as written (every value
/// is checked by [`Config::discovered_guest`]). Each field is an attribute of the element;
/// lists are separated by whitespace:
///
/// ```xml
/// <metadata>
///   <vmnap:guest xmlns:vmnap="https://example.org/vmnap"
///       name="web3" mode="save" ipv4="198.18.0.40" ipv6="2001:db8::40"
///       wake_on="tcp/80 tcp/22" answer="arp ndp icmp-echo" idle_after="5m"
///       keep_awake_while_connected="tcp/22"/>
/// </metadata>
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainSettings {
    /// `name`: the guest's name; default the domain's.
    pub name: Option<String>,
    /// `mode`: `pause` or `save`; default `[libvirt.defaults] mode`.
    pub mode: Option<String>,
    /// `ipv4`: the guest's IPv4 addresses.
    pub ipv4: Vec<String>,
    /// `ipv6`: the guest's IPv6 addresses.
    pub ipv6: Vec<String>,
    /// `wake_on`: replaces the default list.
    pub wake_on: Option<Vec<String>>,
    /// `answer`: replaces the default list.
    pub answer: Option<Vec<String>>,
    /// `idle_after`: a duration or `off`.
    pub idle_after: Option<String>,
    /// `keep_awake_while_connected`: replaces the default list.
    pub keep_awake_while_connected: Option<Vec<String>>,
    /// `min_awake`: a duration.
    pub min_awake: Option<String>,
    /// `max_sleep`: a duration or `off`.
    pub max_sleep: Option<String>,
    /// `inhibit_file`: an absolute path in the guest.
    pub inhibit_file: Option<String>,
}

impl Config {
    /// The guest of discovered domain `domain`: `[libvirt.defaults]` with what `settings`
    /// overrides, its addresses from `settings` (possibly none: the daemon may add the ones
    /// libvirt's DHCP leases give), and no bridge, port or MAC (the domain's XML has them).
    ///
    /// # Errors
    ///
    /// Why the settings cannot be used, naming the attribute: `wake_on: ...`.
    pub fn discovered_guest(
        &self,
        domain: &str,
        settings: &DomainSettings,
    ) -> Result<GuestConfig, String> {
        let d = &self.libvirt.defaults;
        let name = match &settings.name {
            Some(n) => guest_name(n).map_err(at("name"))?,
            None => guest_name(domain).map_err(|m| {
                format!("the domain's name is not a usable guest name ({m}); give one in `name`")
            })?,
        };
        let mode = match &settings.mode {
            Some(m) => sleep_mode(m).map_err(at("mode"))?,
            None => d.mode,
        };
        let mut ipv4: Vec<Ipv4Addr> = Vec::new();
        for a in &settings.ipv4 {
            let a = ipv4_address(a).map_err(at("ipv4"))?;
            if ipv4.contains(&a) {
                return Err(format!("`ipv4`: `{a}` is listed twice"));
            }
            ipv4.push(a);
        }
        let mut ipv6: Vec<Ipv6Addr> = Vec::new();
        for a in &settings.ipv6 {
            let a = ipv6_address(a).map_err(at("ipv6"))?;
            if ipv6.contains(&a) {
                return Err(format!("`ipv6`: `{a}` is listed twice"));
            }
            ipv6.push(a);
        }
        let wake_on = match &settings.wake_on {
            Some(list) => port_rules("wake_on", list, false)?,
            None => d.wake_on.clone(),
        };
        let answer = match &settings.answer {
            Some(list) => answers(list)?,
            None => d.answer,
        };
        let echo = |t: Transport| PortRule {
            transport: t,
            port: 7,
        };
        for (on, t) in [
            (answer.tcp_echo, Transport::Tcp),
            (answer.udp_echo, Transport::Udp),
        ] {
            if on && wake_on.contains(&echo(t)) {
                return Err(format!(
                    "`answer` has the {t} echo service and `wake_on` has `{}`: the echo port \
                     cannot be both answered and a reason to wake",
                    echo(t)
                ));
            }
        }
        for h in &d.health {
            let rule = PortRule {
                transport: Transport::Tcp,
                port: h.port,
            };
            if wake_on.contains(&rule) {
                return Err(format!(
                    "`wake_on` has `{rule}`, which the health check of [libvirt.defaults] \
                     answers: a port cannot be both answered and a reason to wake"
                ));
            }
            if h.port == 7 && answer.tcp_echo {
                return Err(
                    "`answer` has `tcp-echo`, but a health check of [libvirt.defaults] is on \
                     port 7"
                        .to_string(),
                );
            }
        }
        let idle_after = match &settings.idle_after {
            Some(s) => Some(idle_after(s).map_err(at("idle_after"))?),
            None => d.idle_after,
        };
        let keep_awake_while_connected = match &settings.keep_awake_while_connected {
            Some(list) => port_rules("keep_awake_while_connected", list, true)?,
            None => d.keep_awake_while_connected.clone(),
        };
        let mut schedule = d.schedule.as_deref().cloned().unwrap_or_default();
        if let Some(s) = &settings.min_awake {
            schedule.min_awake = Some(min_awake(s).map_err(at("min_awake"))?);
        }
        if let Some(s) = &settings.max_sleep {
            schedule.max_sleep = Some(max_sleep(s).map_err(at("max_sleep"))?);
        }
        let hooks = match &settings.inhibit_file {
            Some(path) => {
                let mut hooks = d.hooks.as_deref().cloned().unwrap_or(GuestHooks {
                    before_sleep: Vec::new(),
                    after_wake: Vec::new(),
                    guest_before_sleep: Vec::new(),
                    guest_after_wake: Vec::new(),
                    inhibit_file: None,
                    timeout: DEFAULT_HOOK_TIMEOUT,
                });
                hooks.inhibit_file = Some(guest_path(path).map_err(at("inhibit_file"))?);
                hooks.boxed()
            }
            None => d.hooks.clone(),
        };
        Ok(GuestConfig {
            name,
            bridge: None,
            interface: None,
            mac: None,
            ipv4,
            ipv6,
            vlan: 0,
            backend: BackendConfig::Libvirt {
                domain: domain.to_string(),
                mode,
            },
            wake_on,
            answer,
            queue_frames: d.queue_frames,
            queue_bytes: d.queue_bytes,
            multicast: d.multicast,
            multicast_frames: d.multicast_frames,
            idle_after,
            schedule: schedule.boxed(),
            hooks,
            keep_awake_while_connected,
            health: d.health.clone(),
        })
    }
}

fn port_rules(key: &str, list: &[String], tcp_only: bool) -> Result<Vec<PortRule>, String> {
    let mut rules: Vec<PortRule> = Vec::with_capacity(list.len());
    for s in list {
        let rule = s.parse::<PortRule>().map_err(|e| format!("`{key}`: {e}"))?;
        if tcp_only && rule.transport != Transport::Tcp {
            return Err(format!(
                "`{key}`: `{rule}` is not a TCP port; only TCP has connections that keep a guest \
                 awake"
            ));
        }
        if rules.contains(&rule) {
            return Err(format!("`{key}`: `{rule}` is listed twice"));
        }
        rules.push(rule);
    }
    Ok(rules)
}

fn answers(list: &[String]) -> Result<Answers, String> {
    let mut answers = Answers::default();
    let mut seen: Vec<&str> = Vec::with_capacity(list.len());
    for name in list {
        let Some(flag) = answers.flag_mut(name) else {
            let expected = Answers::NAMES.map(|n| format!("`{n}`")).join(", ");
            return Err(format!(
                "`answer`: unknown answer `{name}`; expected one of {expected}"
            ));
        };
        if seen.contains(&name.as_str()) {
            return Err(format!("`answer`: `{name}` is listed twice"));
        }
        *flag = true;
        seen.push(name);
    }
    Ok(answers)
}
