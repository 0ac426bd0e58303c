//! Guests made at start from the libvirt domains that `[libvirt] discover` selects, added
//! after the `[[guest]]` tables (which win for the same domain). Each domain's MAC, bridge and
//! tap come from its XML; its addresses from its metadata element, else from the DHCP leases
//! libvirt knows (only interfaces on libvirt-managed networks have any), else none yet: the
//! surrogate still queues what reaches its MAC and wakes it on TCP data or a wake port, and
//! answers ARP and NDP for the addresses it learns from the guest's own traffic (`learn.rs`)
//! once the guest has used them. Domains are looked at when the daemon starts, at each
//! reload, and when libvirt says one started (`follow.rs`).

use std::collections::HashSet;
use std::net::IpAddr;

use tracing::{info, warn};
use vmnap_config::{BackendConfig, Config, Discover, DomainSettings, GuestConfig};
use vmnap_libvirt::{DomainState, GuestMetadata, Selector};
use vmnap_wire::Mac;

use crate::error::chain;
use crate::learn::address_problem;

/// Adds a guest to `config` for each domain discovery selects and vmnap can stand in for,
/// logging why each other domain was skipped. `managed` are the guests a running daemon
/// discovered before (for a reload): a selected domain that is not running (vmnap may have
/// put it to sleep) keeps its guest from there, since its tap cannot be read now. Returns
/// the names of the guests it added, or why libvirt could not be asked.
pub(crate) fn add_discovered(
    config: &mut Config,
    managed: &[GuestConfig],
) -> Result<Vec<String>, String> {
    let Some(discover) = config.libvirt.discover.clone() else {
        return Ok(Vec::new());
    };
    let uri = config.libvirt.uri.clone();
    let selector = match &discover {
        Discover::All => Selector::All,
        Discover::Metadata(ns) => Selector::Metadata(ns.clone()),
    };
    let domains = vmnap_libvirt::list_domains(&uri, &selector)
        .map_err(|e| format!("cannot list the domains of {uri}: {}", chain(&e)))?;
    let configured: Vec<(String, String)> = config
        .guests
        .iter()
        .filter_map(|g| match &g.backend {
            BackendConfig::Libvirt { domain, .. } => Some((domain.clone(), g.name.clone())),
            _ => None,
        })
        .collect();
    let mut names: HashSet<String> = config.guests.iter().map(|g| g.name.clone()).collect();
    let mut addresses: HashSet<IpAddr> = config.guests.iter().flat_map(addresses_of).collect();
    let mut macs: HashSet<[u8; 6]> = config.guests.iter().filter_map(|g| g.mac).collect();
    let host = vmnap_host::addrs::host_addrs().unwrap_or_else(|e| {
        warn!(error = %e, "cannot read the host's addresses; discovered addresses are not checked against them");
        Vec::new()
    });
    let mut added = Vec::new();
    for d in &domains {
        let skip = |why: &str| info!(domain = %d.name, "discovery skips the domain: {why}");
        if !d.selected {
            if let Discover::Metadata(ns) = &discover {
                skip(&format!("no metadata element in namespace {ns}"));
            }
            continue;
        }
        if let Some(e) = &d.error {
            warn!(domain = %d.name, error = %e, "discovery skips the domain: it cannot be read");
            continue;
        }
        if let Some((_, guest)) = configured.iter().find(|(domain, _)| *domain == d.name) {
            skip(&format!("guest `{guest}` of the config names it, and wins"));
            continue;
        }
        let kept = managed.iter().find(
            |g| matches!(&g.backend, BackendConfig::Libvirt { domain, .. } if *domain == d.name),
        );
        if let (false, Some(g)) = (d.state == DomainState::Running, kept) {
            let clash = names.contains(&g.name)
                || g.mac.is_some_and(|m| macs.contains(&m))
                || addresses_of(g).any(|a| addresses.contains(&a));
            if clash {
                skip("not running, and its guest now clashes with another's name, MAC or address");
                continue;
            }
            info!(guest = %g.name, domain = %d.name, state = ?d.state, "keeping the discovered guest: its domain is not running (asleep, or stopped)");
            names.insert(g.name.clone());
            macs.extend(g.mac);
            addresses.extend(addresses_of(g));
            config.guests.push(g.clone());
            added.push(g.name.clone());
            continue;
        }
        if d.state != DomainState::Running {
            skip(&format!(
                "not running ({:?}), so its tap is unknown; it is taken when it starts",
                d.state
            ));
            continue;
        }
        let Some(iface) = d
            .interfaces
            .iter()
            .find(|i| i.bridge.is_some() && i.tap.is_some())
        else {
            skip("no interface on a bridge (vmnap stands in on a Linux bridge)");
            continue;
        };
        let settings = d.metadata.as_ref().map(settings_of).unwrap_or_default();
        let mut guest = match config.discovered_guest(&d.name, &settings) {
            Ok(g) => g,
            Err(e) => {
                warn!(domain = %d.name, "discovery skips the domain: its metadata element: {e}");
                continue;
            }
        };
        let source = if !guest.ipv4.is_empty() || !guest.ipv6.is_empty() {
            "metadata"
        } else {
            for l in d.leases.iter().filter(|l| l.mac == iface.mac) {
                match l.addr {
                    IpAddr::V4(a) if !guest.ipv4.contains(&a) => guest.ipv4.push(a),
                    IpAddr::V6(a) if !guest.ipv6.contains(&a) => guest.ipv6.push(a),
                    _ => {}
                }
            }
            if guest.ipv4.is_empty() && guest.ipv6.is_empty() {
                warn!(
                    domain = %d.name,
                    leases = d.lease_error.as_deref().unwrap_or("none"),
                    "discovered domain has no address yet (none in its metadata element, and no \
                     DHCP lease: only libvirt-managed networks have those); vmnap queues what \
                     reaches its MAC, and answers ARP and NDP for it at the addresses it \
                     learns from its traffic"
                );
                "none"
            } else {
                "dhcp-lease"
            }
        };
        if names.contains(&guest.name) {
            skip(&format!("a guest is already named `{}`", guest.name));
            continue;
        }
        if macs.contains(&iface.mac) {
            skip(&format!(
                "MAC {} is already another guest's",
                Mac(iface.mac)
            ));
            continue;
        }
        if let Some(a) = addresses_of(&guest).find(|a| addresses.contains(a)) {
            skip(&format!("address {a} is already another guest's"));
            continue;
        }
        let exists = |b: &str| {
            vmnap_host::Netlink::open()
                .and_then(|mut nl| nl.link_exists(b))
                .unwrap_or(false)
        };
        if let Err(why) = usable_port(iface.bridge.as_deref(), iface.tap.as_deref(), exists) {
            skip(&why);
            continue;
        }
        let bridge = iface.bridge.as_deref().unwrap_or_default();
        if let Some(why) = addresses_of(&guest).find_map(|a| address_problem(a, bridge, &host)) {
            skip(&why);
            continue;
        }
        guest.bridge = iface.bridge.clone();
        guest.mac = Some(iface.mac);
        info!(
            guest = %guest.name,
            domain = %d.name,
            bridge = iface.bridge.as_deref().unwrap_or(""),
            tap = iface.tap.as_deref().unwrap_or(""),
            mac = %Mac(iface.mac),
            addresses = ?addresses_of(&guest).collect::<Vec<_>>(),
            addresses_from = source,
            mode = guest.backend.mode().map_or("", |m| m.as_str()),
            "discovered a libvirt domain"
        );
        names.insert(guest.name.clone());
        macs.insert(iface.mac);
        addresses.extend(addresses_of(&guest));
        added.push(guest.name.clone());
        config.guests.push(guest);
    }
    info!(uri = %uri, domains = domains.len(), guests = added.len(), "libvirt discovery done");
    Ok(added)
}

fn settings_of(m: &GuestMetadata) -> DomainSettings {
    DomainSettings {
        name: m.name.clone(),
        mode: m.mode.clone(),
        ipv4: m.ipv4.clone(),
        ipv6: m.ipv6.clone(),
        wake_on: m.wake_on.clone(),
        answer: m.answer.clone(),
        idle_after: m.idle_after.clone(),
        keep_awake_while_connected: m.keep_awake_while_connected.clone(),
        min_awake: m.min_awake.clone(),
        max_sleep: m.max_sleep.clone(),
        inhibit_file: m.inhibit_file.clone(),
    }
}

/// Whether a domain's `bridge` and `tap`, read from its XML, are names Linux takes, and the
/// bridge exists here (`exists`): why not, else.
fn usable_port(
    bridge: Option<&str>,
    tap: Option<&str>,
    exists: impl Fn(&str) -> bool,
) -> Result<(), String> {
    let (Some(bridge), Some(tap)) = (bridge, tap) else {
        return Err("no interface on a bridge (vmnap stands in on a Linux bridge)".into());
    };
    vmnap_config::check_interface_name(bridge).map_err(|e| format!("its bridge: {e}"))?;
    vmnap_config::check_interface_name(tap).map_err(|e| format!("its tap: {e}"))?;
    if !exists(bridge) {
        return Err(format!(
            "its bridge `{bridge}` does not exist in this network namespace"
        ));
    }
    Ok(())
}

fn addresses_of(g: &GuestConfig) -> impl Iterator<Item = IpAddr> + '_ {
    g.ipv4
        .iter()
        .map(|&a| IpAddr::V4(a))
        .chain(g.ipv6.iter().map(|&a| IpAddr::V6(a)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmnap_host::addrs::HostAddr;

    const NS: &str = "https://example.org/vmnap";

    #[test]
    fn a_discovered_address_must_not_be_the_hosts_and_must_lie_in_its_bridges_networks() {
        let h = |interface: &str, addr: &str, prefix| HostAddr {
            interface: interface.into(),
            addr: addr.parse().expect("ip"),
            prefix,
        };
        let host = [
            h("br0", "198.18.0.1", 24),
            h("br0", "fe80::1", 64),
            h("eth0", "198.19.0.5", 16),
            h("br1", "2001:db8::1", 64),
        ];
        let problem =
            |a: &str, bridge: &str| address_problem(a.parse().expect("ip"), bridge, &host);
        assert_eq!(problem("198.18.0.11", "br0"), None);
        let gw = problem("198.18.0.1", "br0").expect("the gateway");
        assert!(gw.contains("host's own, on br0"), "{gw}");
        let own = problem("198.19.0.5", "br1").expect("another interface's");
        assert!(own.contains("on eth0"), "{own}");
        let outside = problem("198.18.5.11", "br0").expect("outside br0's /24");
        assert!(
            outside.contains("none of the networks of its bridge br0 (198.18.0.1/24)"),
            "{outside}"
        );
        // br0 has only a link-local IPv6 network: any IPv6 address will do; br1 has no IPv4.
        assert_eq!(problem("2001:db8:9::11", "br0"), None);
        assert_eq!(problem("198.18.9.9", "br1"), None);
        assert!(problem("2001:db8:9::11", "br1").is_some());
        // A bridge with no address of its own says nothing.
        assert_eq!(problem("198.18.5.11", "br9"), None);
    }

    fn config(discover: &str, guests: &str) -> Config {
        let text = format!("[libvirt]\nuri = \"test:///default\"\ndiscover = {discover}\n{guests}");
        Config::parse(&text, std::path::Path::new("/t.toml")).expect("valid")
    }

    #[test]
    fn a_domains_bridge_and_tap_must_be_names_linux_takes_and_the_bridge_exist() {
        let here = |b: &str| b == "br0";
        assert_eq!(usable_port(Some("br0"), Some("vnet3"), here), Ok(()));
        for (bridge, tap, why) in [
            (
                "br0/../eth0",
                "vnet3",
                "its bridge: `br0/../eth0` contains '/'",
            ),
            ("br0", "vnet 3", "its tap: `vnet 3` contains ' '"),
            (
                "a-name-far-too-long",
                "vnet3",
                "its bridge: `a-name-far-too-long` is longer",
            ),
            (
                "br9",
                "vnet3",
                "its bridge `br9` does not exist in this network namespace",
            ),
        ] {
            let e = usable_port(Some(bridge), Some(tap), here).expect_err(bridge);
            assert!(e.starts_with(why), "{e}");
        }
        assert!(usable_port(None, Some("vnet3"), here).is_err());
    }

    /// The test driver's default instance is per process: this one test uses it.
    #[test]
    fn the_test_drivers_domain_is_discovered_unless_a_guest_names_it() {
        // The test driver's domain `test` runs, with an interface on no bridge.
        let mut c = config("\"all\"", "");
        add_discovered(&mut c, &[]).expect("discovery");
        assert!(c.guests.is_empty(), "{:?}", c.guests);
        // Selected by a namespace nobody uses: nothing.
        let mut c = config(&format!("{{ metadata = \"{NS}\" }}"), "");
        add_discovered(&mut c, &[]).expect("discovery");
        assert!(c.guests.is_empty());
        // A configured guest keeps its place.
        let mut c = config(
            "\"all\"",
            "[[guest]]\nname = \"t\"\nbackend = \"libvirt\"\ndomain = \"test\"\nipv4 = [\"198.18.0.9\"]\n",
        );
        add_discovered(&mut c, &[]).expect("discovery");
        assert_eq!(c.guests.len(), 1);
        // No libvirt at all: the configured guests only.
        let mut c = config("\"all\"", "");
        c.libvirt.uri = "test:///nonexistent/file.xml".into();
        let failed = add_discovered(&mut c, &[]);
        assert!(failed.is_err(), "{failed:?}");
        assert!(c.guests.is_empty());
    }
}
