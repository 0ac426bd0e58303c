//! Addresses learned from traffic: what a frame says about who has an address.
//!
//! A guest's own ARP (its sender address), its neighbour solicitations (their source) and
//! advertisements (their target), and a DHCP server's acknowledgement to its MAC (the address
//! given) each say that the guest has that address. The same frames from another port of the
//! bridge, seen on the surrogate's port (ARP requests, announcements and solicitations are
//! broadcast or multicast), say that this port has it: an address another port has used is
//! never learned for a guest, and a learned address another port uses is forgotten. The
//! worker keeps at most [`MAX_LEARNED`] of each family a guest, the latest seen last.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use vmnap_host::addrs::HostAddr;

/// How many addresses of each family a guest keeps learned; a new one past it replaces the
/// one seen longest ago.
pub(crate) const MAX_LEARNED: usize = 4;

/// How many addresses a bridge remembers as seen from its ports (past it, the one first seen
/// longest ago is forgotten).
const MAX_SEEN: usize = 4096;

/// The address `frame` says its sender (the MAC beside it) has, if it says one: a claim.
/// Addresses that are no one's in particular (unspecified, multicast, broadcast, loopback,
/// IPv6 link-local) are not claims.
pub(crate) fn claim(frame: &[u8]) -> Option<(IpAddr, [u8; 6])> {
    let (ethertype, at) = ethertype(frame)?;
    let src_mac: [u8; 6] = frame.get(6..12)?.try_into().ok()?;
    let (addr, mac) = match ethertype {
        0x0806 => arp(frame.get(at..)?)?,
        0x86dd => (IpAddr::V6(ndp(frame.get(at..)?)?), src_mac),
        0x0800 => {
            let (addr, mac) = dhcp_ack(frame.get(at..)?)?;
            (IpAddr::V4(addr), mac)
        }
        _ => return None,
    };
    usable(addr).then_some((addr, mac))
}

/// The VLAN of `frame`'s 802.1Q tag; 0 untagged.
pub(crate) fn vlan(frame: &[u8]) -> u16 {
    match frame.get(12..16) {
        Some([0x81, 0x00, hi, lo]) => u16::from_be_bytes([*hi, *lo]) & 0x0fff,
        _ => 0,
    }
}

/// The ethertype past an 802.1Q tag, if any, and where its payload starts.
fn ethertype(frame: &[u8]) -> Option<(u16, usize)> {
    let t = u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?);
    if t == 0x8100 {
        Some((u16::from_be_bytes(frame.get(16..18)?.try_into().ok()?), 18))
    } else {
        Some((t, 14))
    }
}

/// An ARP packet's sender address and MAC (Ethernet and IPv4 only).
fn arp(p: &[u8]) -> Option<(IpAddr, [u8; 6])> {
    if p.get(0..6)? != [0, 1, 8, 0, 6, 4] {
        return None;
    }
    let mac: [u8; 6] = p.get(8..14)?.try_into().ok()?;
    let ip: [u8; 4] = p.get(14..18)?.try_into().ok()?;
    Some((IpAddr::V4(Ipv4Addr::from(ip)), mac))
}

/// The address a neighbour solicitation (its source) or advertisement (its target) says
/// its sender has; IPv6 extension headers aside.
fn ndp(p: &[u8]) -> Option<Ipv6Addr> {
    if p.first()? >> 4 != 6 || *p.get(6)? != 58 {
        return None;
    }
    let icmp = p.get(40..)?;
    let field = match *icmp.first()? {
        135 => p.get(8..24)?,
        136 => icmp.get(8..24)?,
        _ => return None,
    };
    let a: [u8; 16] = field.try_into().ok()?;
    Some(Ipv6Addr::from(a))
}

/// A DHCPACK's address given (`yiaddr`) and the client's MAC (`chaddr`), from an IPv4 UDP
/// datagram to port 68.
fn dhcp_ack(p: &[u8]) -> Option<(Ipv4Addr, [u8; 6])> {
    let ihl = usize::from(*p.first()? & 0x0f) * 4;
    if p.first()? >> 4 != 4 || *p.get(9)? != 17 || ihl < 20 {
        return None;
    }
    let udp = p.get(ihl..)?;
    if u16::from_be_bytes(udp.get(2..4)?.try_into().ok()?) != 68 {
        return None;
    }
    let bootp = udp.get(8..)?;
    // op BOOTREPLY, htype Ethernet, hlen 6; the magic cookie.
    if bootp.get(0..3)? != [2, 1, 6] || bootp.get(236..240)? != [99, 130, 83, 99] {
        return None;
    }
    let mut options = bootp.get(240..)?;
    let mut ack = false;
    while let Some((&code, rest)) = options.split_first() {
        match code {
            0 => options = rest,
            255 => break,
            _ => {
                let len = usize::from(*rest.first()?);
                let value = rest.get(1..1 + len)?;
                if code == 53 && value == [5] {
                    ack = true;
                }
                options = &rest[1 + len..];
            }
        }
    }
    if !ack {
        return None;
    }
    let yiaddr: [u8; 4] = bootp.get(16..20)?.try_into().ok()?;
    let chaddr: [u8; 6] = bootp.get(28..34)?.try_into().ok()?;
    Some((Ipv4Addr::from(yiaddr), chaddr))
}

/// Why `addr`, read for a domain on `bridge` or learned from a guest's traffic there, cannot
/// be its guest's, given the host's own
/// addresses `host`: it is one of them (the bridge's own is the guests' gateway), or the
/// bridge has networks of its family (link-local ones aside) and it lies in none of them.
/// vmnap would answer ARP and NDP for it in the guest's name.
pub(crate) fn address_problem(addr: IpAddr, bridge: &str, host: &[HostAddr]) -> Option<String> {
    if let Some(own) = host.iter().find(|h| h.addr == addr) {
        return Some(format!(
            "address {addr} is the host's own, on {} (a guest's gateway, never a guest)",
            own.interface
        ));
    }
    let link_local = |a: IpAddr| match a {
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
        IpAddr::V4(v4) => v4.is_link_local(),
    };
    let nets: Vec<&HostAddr> = host
        .iter()
        .filter(|h| h.interface == bridge && h.addr.is_ipv4() == addr.is_ipv4())
        .filter(|h| !link_local(h.addr))
        .collect();
    if nets.is_empty() || nets.iter().any(|n| n.contains(addr)) {
        return None;
    }
    let list: Vec<String> = nets
        .iter()
        .map(|n| format!("{}/{}", n.addr, n.prefix))
        .collect();
    Some(format!(
        "address {addr} lies in none of the networks of its bridge {bridge} ({})",
        list.join(", ")
    ))
}

/// Whether `addr` can be one guest's own.
fn usable(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            !(a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback())
        }
        IpAddr::V6(a) => {
            !(a.is_unspecified()
                || a.is_multicast()
                || a.is_loopback()
                || a.segments()[0] & 0xffc0 == 0xfe80)
        }
    }
}

/// The addresses a bridge's ports have been seen to use, with the MAC that used each last;
/// the oldest forgotten past [`MAX_SEEN`] (a flood of made-up addresses costs a bounded
/// table and constant time a frame).
#[derive(Debug, Default)]
pub(crate) struct Seen {
    by_addr: HashMap<IpAddr, [u8; 6]>,
    /// In the order first seen.
    order: VecDeque<IpAddr>,
}

impl Seen {
    /// `mac` was seen using `addr`.
    pub(crate) fn saw(&mut self, addr: IpAddr, mac: [u8; 6]) {
        if self.by_addr.insert(addr, mac).is_none() {
            self.order.push_back(addr);
            if self.order.len() > MAX_SEEN {
                if let Some(old) = self.order.pop_front() {
                    self.by_addr.remove(&old);
                }
            }
        }
    }

    /// The MAC other than `mac` that was last seen using `addr`, if one was.
    pub(crate) fn other_than(&self, addr: IpAddr, mac: [u8; 6]) -> Option<[u8; 6]> {
        self.by_addr.get(&addr).copied().filter(|m| *m != mac)
    }
}

/// Adds `addr` to `learned` (or moves it to the end, as seen last), keeping at most
/// [`MAX_LEARNED`] of its family; whether the list changed.
pub(crate) fn remember(learned: &mut Vec<IpAddr>, addr: IpAddr) -> bool {
    if learned.last() == Some(&addr) {
        return false;
    }
    let had = learned.iter().position(|a| *a == addr);
    if let Some(at) = had {
        learned.remove(at);
    } else if learned
        .iter()
        .filter(|a| a.is_ipv4() == addr.is_ipv4())
        .count()
        >= MAX_LEARNED
    {
        let oldest = learned
            .iter()
            .position(|a| a.is_ipv4() == addr.is_ipv4())
            .expect("one of its family");
        learned.remove(oldest);
    }
    learned.push(addr);
    had.is_none()
}

/// Moves `addr`, if `learned` has it, to the end (seen last), in place.
pub(crate) fn refresh(learned: &mut [IpAddr], addr: IpAddr) {
    if let Some(at) = learned.iter().position(|a| *a == addr) {
        learned[at..].rotate_left(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST: [u8; 6] = [0x52, 0x54, 0, 0x12, 0, 0x1f];

    fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&GUEST);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn arp_frame(sender: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0, 1, 8, 0, 6, 4, 0, 1];
        p.extend_from_slice(&GUEST);
        p.extend_from_slice(&sender);
        p.extend_from_slice(&[0; 6]);
        p.extend_from_slice(&[198, 18, 0, 1]);
        eth(0x0806, &p)
    }

    fn ndp_frame(kind: u8, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 32, 58, 255];
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&"ff02::1:ff00:1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&[kind, 0, 0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&target.octets());
        eth(0x86dd, &p)
    }

    fn dhcp_frame(kind: u8, yiaddr: [u8; 4]) -> Vec<u8> {
        let mut bootp = vec![2, 1, 6, 0];
        bootp.extend_from_slice(&[0; 12]);
        bootp.extend_from_slice(&yiaddr);
        bootp.extend_from_slice(&[0; 8]);
        bootp.extend_from_slice(&GUEST);
        bootp.resize(236, 0);
        bootp.extend_from_slice(&[99, 130, 83, 99, 53, 1, kind, 0, 255]);
        let mut udp = vec![0, 67, 0, 68, 0, 0, 0, 0];
        udp.extend_from_slice(&bootp);
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 198, 18, 0, 1, 255, 255, 255, 255,
        ];
        ip.extend_from_slice(&udp);
        eth(0x0800, &ip)
    }

    #[test]
    fn arp_ndp_and_dhcp_acks_claim_addresses_and_probes_do_not() {
        let v4 = |a: [u8; 4]| IpAddr::V4(Ipv4Addr::from(a));
        assert_eq!(
            claim(&arp_frame([198, 18, 0, 77])),
            Some((v4([198, 18, 0, 77]), GUEST))
        );
        // An ARP probe (sender 0.0.0.0) claims nothing.
        assert_eq!(claim(&arp_frame([0, 0, 0, 0])), None);
        let a: Ipv6Addr = "2001:db8::77".parse().unwrap();
        let other: Ipv6Addr = "2001:db8::99".parse().unwrap();
        assert_eq!(
            claim(&ndp_frame(135, a, other)),
            Some((IpAddr::V6(a), GUEST))
        );
        assert_eq!(
            claim(&ndp_frame(136, other, a)),
            Some((IpAddr::V6(a), GUEST))
        );
        // Duplicate address detection solicits from ::; link-local addresses are not kept.
        assert_eq!(claim(&ndp_frame(135, Ipv6Addr::UNSPECIFIED, a)), None);
        let ll: Ipv6Addr = "fe80::1".parse().unwrap();
        assert_eq!(claim(&ndp_frame(135, ll, a)), None);
        assert_eq!(claim(&ndp_frame(128, a, a)), None, "an echo request");
        assert_eq!(
            claim(&dhcp_frame(5, [198, 18, 0, 88])),
            Some((v4([198, 18, 0, 88]), GUEST))
        );
        assert_eq!(claim(&dhcp_frame(2, [198, 18, 0, 88])), None, "an offer");
        // Cut short anywhere: nothing, and no panic.
        let full = dhcp_frame(5, [198, 18, 0, 88]);
        for n in 0..full.len() {
            let _ = claim(&full[..n]);
        }
    }

    #[test]
    fn at_most_four_of_a_family_are_kept_the_latest_seen_last() {
        let a = |n: u8| IpAddr::V4(Ipv4Addr::new(198, 18, 0, n));
        let six: IpAddr = "2001:db8::1".parse().unwrap();
        let mut l = Vec::new();
        assert!(remember(&mut l, six));
        for n in 1..=4 {
            assert!(remember(&mut l, a(n)));
        }
        assert!(!remember(&mut l, a(4)));
        // Seen again: moved to the end, not added.
        assert!(!remember(&mut l, a(1)));
        assert!(remember(&mut l, a(5)));
        assert_eq!(l, [six, a(3), a(4), a(1), a(5)]);
        refresh(&mut l, six);
        assert_eq!(l, [a(3), a(4), a(1), a(5), six]);
    }

    #[test]
    fn a_bridge_remembers_who_used_an_address() {
        let mut seen = Seen::default();
        let addr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9));
        seen.saw(addr, [2, 0, 0, 0, 0, 9]);
        assert_eq!(seen.other_than(addr, GUEST), Some([2, 0, 0, 0, 0, 9]));
        assert_eq!(seen.other_than(addr, [2, 0, 0, 0, 0, 9]), None);
        for n in 0..MAX_SEEN as u32 + 10 {
            seen.saw(IpAddr::V4(Ipv4Addr::from(n + 1_000_000)), GUEST);
        }
        assert_eq!(seen.by_addr.len(), MAX_SEEN);
        assert_eq!(seen.order.len(), MAX_SEEN);
        assert_eq!(
            seen.other_than(addr, GUEST),
            None,
            "the oldest is forgotten"
        );
    }
}
