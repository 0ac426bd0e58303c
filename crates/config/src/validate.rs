//! Turns [`RawConfig`] into [`Config`], refusing the first value that does not make sense.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

use crate::error::ConfigError;
use crate::locate;
use crate::raw::{RawApi, RawConfig, RawGuest};
use crate::{
    Answers, ApiConfig, BackendConfig, Config, GuestConfig, MulticastPolicy, PortRule, Transport,
    DEFAULT_MULTICAST_FRAMES, DEFAULT_QUEUE_BYTES, DEFAULT_QUEUE_FRAMES, DEFAULT_SOCKET,
    MAX_IFNAME_LEN, MAX_NAME_LEN, MAX_VLAN, MIN_QUEUE_BYTES,
};

/// The longest path `bind(2)` accepts for a unix socket (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH_LEN: usize = 107;

/// The echo port that `tcp-echo` and `udp-echo` answer on.
const ECHO_PORT: u16 = 7;

pub(crate) fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| toml_error(&e, text, file))?;
    let cx = Cx { text, file };
    let api = match &raw.api {
        Some(api) => cx.api(api.get_ref())?,
        None => ApiConfig::default(),
    };
    let mut seen = Seen::default();
    let mut guests = Vec::with_capacity(raw.guest.len());
    for (i, g) in raw.guest.iter().enumerate() {
        let guest = cx.guest(i, g)?;
        cx.unique(i, g.get_ref(), &guest, &mut seen)?;
        guests.push(guest);
    }
    Ok(Config { api, guests })
}

/// A `toml` error (syntax, unknown key, missing key, wrong type) with the key named.
fn toml_error(e: &toml::de::Error, text: &str, file: &Path) -> ConfigError {
    // Syntax errors come on several lines ("invalid string\nexpected `"`, `'`"); serde's name
    // for our integer type and for arrays are not TOML's.
    let message = e
        .message()
        .trim()
        .lines()
        .collect::<Vec<_>>()
        .join("; ")
        .replace("expected i64", "expected an integer")
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

/// Values already taken by earlier guests, with the key that took them.
#[derive(Default)]
struct Seen {
    names: HashMap<String, usize>,
    interfaces: HashMap<String, usize>,
    macs: HashMap<(String, u16, [u8; 6]), usize>,
    addresses: HashMap<(String, u16, IpAddr), String>,
}

struct Cx<'a> {
    text: &'a str,
    file: &'a Path,
}

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
        Ok(ApiConfig { socket })
    }

    fn guest(&self, i: usize, spanned: &Spanned<RawGuest>) -> Result<GuestConfig, ConfigError> {
        let g = spanned.get_ref();
        let key = |field: &str| format!("guest[{i}].{field}");
        let name = self.check(&g.name, || key("name"), |s| guest_name(s))?;
        let bridge = self.check(&g.bridge, || key("bridge"), |s| interface_name(s))?;
        let interface = self.check(
            &g.interface,
            || key("interface"),
            |s| {
                let s = interface_name(s)?;
                if s == bridge {
                    return Err(format!("`{s}` is the bridge itself, not a port on it"));
                }
                Ok(s)
            },
        )?;
        let mac = self.check(&g.mac, || key("mac"), |s| mac_address(s))?;

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
        let backend = self.backend(i, g)?;

        let mut wake_on: Vec<PortRule> = Vec::with_capacity(g.wake_on.len());
        for (j, r) in g.wake_on.iter().enumerate() {
            let rule = self.check(
                r,
                || format!("guest[{i}].wake_on[{j}]"),
                |s| s.parse::<PortRule>().map_err(|e| e.to_string()),
            )?;
            if let Some(first) = wake_on.iter().position(|&x| x == rule) {
                return Err(self.err(
                    r.span(),
                    format!("guest[{i}].wake_on[{j}]"),
                    format!("`{rule}` is already listed at guest[{i}].wake_on[{first}]"),
                ));
            }
            wake_on.push(rule);
        }

        let answer = match &g.answer {
            None => Answers::DEFAULT,
            Some(list) => self.answers(i, list, &wake_on)?,
        };

        let queue_frames = match &g.queue_frames {
            Some(v) => self.check(v, || key("queue_frames"), |&v| at_least(v, 1, ""))?,
            None => DEFAULT_QUEUE_FRAMES,
        };
        let queue_bytes = match &g.queue_bytes {
            Some(v) => self.check(
                v,
                || key("queue_bytes"),
                |&v| at_least(v, MIN_QUEUE_BYTES, " so that one 64 KiB GSO frame fits"),
            )?,
            None => DEFAULT_QUEUE_BYTES,
        };
        let multicast = match &g.multicast {
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
        let multicast_frames = match &g.multicast_frames {
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
        })
    }

    fn backend(&self, i: usize, g: &RawGuest) -> Result<BackendConfig, ConfigError> {
        let kind = g.backend.get_ref().as_str();
        match (kind, &g.cgroup) {
            ("cgroup", Some(dir)) => self.check(dir, || format!("guest[{i}].cgroup"), |s| {
                absolute_path(s).map(|dir| BackendConfig::Cgroup { dir })
            }),
            ("cgroup", None) => Err(self.err(
                g.backend.span(),
                format!("guest[{i}].backend"),
                "backend `cgroup` needs `cgroup`, the absolute path of the guest's cgroup directory",
            )),
            (_, Some(dir)) => Err(self.err(
                dir.span(),
                format!("guest[{i}].cgroup"),
                format!("`cgroup` is only for backend `cgroup`, not `{kind}`"),
            )),
            ("libvirt" | "qmp", None) => Err(self.err(
                g.backend.span(),
                format!("guest[{i}].backend"),
                format!("backend `{kind}` is not supported yet"),
            )),
            (_, None) => Err(self.err(
                g.backend.span(),
                format!("guest[{i}].backend"),
                format!("unknown backend `{kind}`; expected `cgroup`"),
            )),
        }
    }

    fn answers(
        &self,
        i: usize,
        list: &[Spanned<String>],
        wake_on: &[PortRule],
    ) -> Result<Answers, ConfigError> {
        let mut answers = Answers::default();
        let mut seen: Vec<&str> = Vec::with_capacity(list.len());
        for (j, a) in list.iter().enumerate() {
            let key = || format!("guest[{i}].answer[{j}]");
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
                    format!("`{name}` is already listed at guest[{i}].answer[{first}]"),
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
                            "`{name}` contradicts `{rule}` in guest[{i}].wake_on[{k}]: the \
                             echo port cannot be both answered and a reason to wake"
                        ),
                    ));
                }
            }
        }
        Ok(answers)
    }

    /// Refuses values an earlier guest already took.
    fn unique(
        &self,
        i: usize,
        g: &RawGuest,
        guest: &GuestConfig,
        seen: &mut Seen,
    ) -> Result<(), ConfigError> {
        if let Some(&first) = seen.names.get(&guest.name) {
            return Err(self.err(
                g.name.span(),
                format!("guest[{i}].name"),
                format!("`{}` is already the name of guest[{first}]", guest.name),
            ));
        }
        seen.names.insert(guest.name.clone(), i);

        if let Some(&first) = seen.interfaces.get(&guest.interface) {
            return Err(self.err(
                g.interface.span(),
                format!("guest[{i}].interface"),
                format!(
                    "`{}` is already the interface of guest[{first}]",
                    guest.interface
                ),
            ));
        }
        seen.interfaces.insert(guest.interface.clone(), i);

        let lan = format!("bridge `{}` vlan {}", guest.bridge, guest.vlan);
        let mac_key = (guest.bridge.clone(), guest.vlan, guest.mac);
        if let Some(&first) = seen.macs.get(&mac_key) {
            return Err(self.err(
                g.mac.span(),
                format!("guest[{i}].mac"),
                format!(
                    "{} is already the MAC address of guest[{first}] on {lan}",
                    format_mac(guest.mac)
                ),
            ));
        }
        seen.macs.insert(mac_key, i);

        let v4 = guest.ipv4.iter().map(|&a| IpAddr::V4(a)).zip(&g.ipv4);
        let v6 = guest.ipv6.iter().map(|&a| IpAddr::V6(a)).zip(&g.ipv6);
        let keys = (0..g.ipv4.len())
            .map(|j| format!("guest[{i}].ipv4[{j}]"))
            .chain((0..g.ipv6.len()).map(|j| format!("guest[{i}].ipv6[{j}]")));
        for ((addr, raw), key) in v4.chain(v6).zip(keys) {
            let addr_key = (guest.bridge.clone(), guest.vlan, addr);
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
}

fn guest_name(s: &str) -> Result<String, String> {
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
fn interface_name(s: &str) -> Result<String, String> {
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
    let syntax =
        || format!("`{s}` is not a MAC address (want six hex pairs like 02:00:00:00:01:01)");
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for octet in &mut mac {
        let part = parts.next().ok_or_else(syntax)?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(syntax());
        }
        *octet = u8::from_str_radix(part, 16).map_err(|_| syntax())?;
    }
    if parts.next().is_some() {
        return Err(syntax());
    }
    if mac[0] & 1 == 1 {
        return Err(format!(
            "`{s}` is a multicast MAC address; a guest needs a unicast one"
        ));
    }
    if mac == [0; 6] {
        return Err(format!("`{s}` is the all-zeros MAC address"));
    }
    Ok(mac)
}

fn format_mac(mac: [u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

fn ipv4_address(s: &str) -> Result<Ipv4Addr, String> {
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

fn ipv6_address(s: &str) -> Result<Ipv6Addr, String> {
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
        assert_eq!(format_mac(mac), "02:ab:cd:00:01:ff");
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
