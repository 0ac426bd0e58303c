//! A bridge's ports and what the bridge lets through them, and a socket that hears when
//! links change.
//!
//! The kernel's responder can answer at the ingress of every port of a bridge
//! ([`crate::xdp::Responder::attach_port`]), before the bridge sees the request. That is
//! right only where the bridge would have carried the request to the guest and its answer
//! back: these are what the daemon reads to decide, and [`LinkEvents`] tells it when to
//! read them again.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use super::{
    attrs, messages, route_socket, u32_at, Msg, Netlink, NetlinkError, AF_BRIDGE, AF_UNSPEC,
    IFINFOMSG_LEN, IFLA_BRPORT_STATE, IFLA_EXT_MASK, IFLA_INFO_DATA, IFLA_LINKINFO, IFLA_MASTER,
    IFLA_PROTINFO, NLMSG_HDRLEN, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, RTEXT_FILTER_SKIP_STATS,
    RTM_DELLINK, RTM_GETLINK, RTM_NEWLINK,
};

const IFLA_BRPORT_ISOLATED: u16 = 33;
const IFLA_BRPORT_LOCKED: u16 = 39;
const IFLA_BR_VLAN_FILTERING: u16 = 7;
const IFLA_BR_NF_CALL_IPTABLES: u16 = 36;
const IFLA_BR_NF_CALL_ARPTABLES: u16 = 38;
/// `BR_STATE_FORWARDING`.
const FORWARDING: u8 = 3;
/// `RTMGRP_LINK`: every link's creation, change and removal.
const RTMGRP_LINK: u32 = 1;

/// A bridge port as the bridge sees it ([`Netlink::bridge_ports`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgePort {
    /// The port's interface index.
    pub ifindex: u32,
    /// Its STP state (`BR_STATE_*`: 3 forwarding).
    pub state: u8,
    /// Isolated: the bridge carries nothing between it and another isolated port.
    pub isolated: bool,
    /// Locked: the bridge takes frames in only from hosts it has been told of.
    pub locked: bool,
}

impl BridgePort {
    /// Whether the bridge carries what comes in by this port to any other port, subject to
    /// nothing the port itself sets: forwarding, neither isolated nor locked.
    pub fn forwards_freely(&self) -> bool {
        self.state == FORWARDING && !self.isolated && !self.locked
    }
}

/// What a bridge does with the frames it carries, beyond forwarding them
/// ([`Netlink::bridge_settings`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BridgeSettings {
    /// VLAN filtering: a port's untagged frames belong to its PVID's VLAN.
    pub vlan_filtering: bool,
    /// The bridge's own `nf_call_iptables` or `nf_call_arptables` (br_netfilter's sysctls
    /// may turn these on for every bridge of the namespace besides).
    pub nf_call: bool,
}

impl Netlink {
    /// The ports of `bridge` (an `AF_BRIDGE` dump of every bridge port in the namespace,
    /// filtered by master).
    pub fn bridge_ports(&mut self, bridge: u32) -> Result<Vec<BridgePort>, NetlinkError> {
        let mut msg = Msg::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP)
            .ifinfomsg(0, 0, 0)
            .attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
        msg.buf[NLMSG_HDRLEN] = AF_BRIDGE;
        let replies = self
            .request(msg)
            .map_err(|source| NetlinkError::PortDump { bridge, source })?;
        Ok(replies
            .iter()
            .filter_map(|body| parse_port(body, bridge))
            .collect())
    }

    /// What `bridge` does beyond forwarding.
    pub fn bridge_settings(&mut self, bridge: u32) -> Result<BridgeSettings, NetlinkError> {
        let msg = Msg::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK)
            .ifinfomsg(bridge, 0, 0)
            .attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
        let replies = self.request(msg).map_err(|source| NetlinkError::GetLink {
            ifindex: bridge,
            source,
        })?;
        let mut settings = BridgeSettings::default();
        for body in &replies {
            if u32_at(body, 4) != Some(bridge) {
                continue;
            }
            let info = attrs(body.get(IFINFOMSG_LEN..).unwrap_or(&[]))
                .find(|(t, _)| *t == IFLA_LINKINFO)
                .map(|(_, p)| p);
            let data = info.and_then(|p| attrs(p).find(|(t, _)| *t == IFLA_INFO_DATA));
            for (ty, p) in data.map(|(_, p)| attrs(p)).into_iter().flatten() {
                let on = p.first().is_some_and(|&b| b != 0);
                match ty {
                    IFLA_BR_VLAN_FILTERING => settings.vlan_filtering = on,
                    IFLA_BR_NF_CALL_IPTABLES | IFLA_BR_NF_CALL_ARPTABLES => {
                        settings.nf_call |= on;
                    }
                    _ => {}
                }
            }
        }
        Ok(settings)
    }
}

/// A port of `bridge` from an `AF_BRIDGE` link message, or `None` if the message is not
/// about one.
fn parse_port(body: &[u8], bridge: u32) -> Option<BridgePort> {
    if *body.first()? != AF_BRIDGE {
        return None;
    }
    let ifindex = u32_at(body, 4)?;
    let mut port = BridgePort {
        ifindex,
        state: 0,
        isolated: false,
        locked: false,
    };
    let mut master = None;
    for (ty, p) in attrs(body.get(IFINFOMSG_LEN..)?) {
        match ty {
            IFLA_MASTER => master = u32_at(p, 0),
            IFLA_PROTINFO => {
                for (t, v) in attrs(p) {
                    let byte = v.first().copied().unwrap_or(0);
                    match t {
                        IFLA_BRPORT_STATE => port.state = byte,
                        IFLA_BRPORT_ISOLATED => port.isolated = byte != 0,
                        IFLA_BRPORT_LOCKED => port.locked = byte != 0,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (master == Some(bridge) && ifindex != bridge).then_some(port)
}

/// A link that was created, changed or removed ([`LinkEvents::drain`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkChange {
    /// The link's index.
    pub ifindex: u32,
    /// Its master (a bridge, for a port), as the message gives it.
    pub master: Option<u32>,
    /// Whether the link was removed (`RTM_DELLINK`).
    pub removed: bool,
    /// For a message of the bridge's own (`AF_BRIDGE`, sent when a port is added, changes
    /// state or flags, or leaves), the port as it is now.
    pub port: Option<BridgePort>,
}

/// A non-blocking netlink socket that hears every link's creation, change and removal in
/// its namespace (`RTMGRP_LINK`), a bridge port's STP state and flags among them. Poll its
/// descriptor for reading, then [`LinkEvents::drain`] it.
#[derive(Debug)]
pub struct LinkEvents {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl AsRawFd for LinkEvents {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for LinkEvents {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl LinkEvents {
    /// Opens the socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Self> {
        let fd = route_socket(libc::SOCK_NONBLOCK, RTMGRP_LINK)?;
        Ok(Self {
            fd,
            buf: vec![0u8; 64 * 1024],
        })
    }

    /// Reads every message waiting, calling `f` for each link that changed. Returns whether
    /// the kernel dropped messages since the last call (`ENOBUFS`: the socket's buffer was
    /// full), in which case any link may have changed unheard.
    pub fn drain(&mut self, mut f: impl FnMut(LinkChange)) -> io::Result<bool> {
        let mut lost = false;
        loop {
            // SAFETY: `self.buf` is writable for its whole length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(lost),
                    Some(libc::EINTR) => continue,
                    Some(libc::ENOBUFS) => {
                        lost = true;
                        continue;
                    }
                    _ => return Err(e),
                }
            }
            for m in messages(self.buf.get(..n as usize).unwrap_or(&[])) {
                if let Some(change) = parse_change(m.ty, m.body) {
                    f(change);
                }
            }
        }
    }
}

/// The link a `RTM_NEWLINK` or `RTM_DELLINK` message is about.
fn parse_change(ty: u16, body: &[u8]) -> Option<LinkChange> {
    if ty != RTM_NEWLINK && ty != RTM_DELLINK {
        return None;
    }
    let family = *body.first()?;
    if family != AF_UNSPEC && family != AF_BRIDGE {
        return None;
    }
    let ifindex = u32_at(body, 4)?;
    let master = attrs(body.get(IFINFOMSG_LEN..)?)
        .find(|(t, _)| *t == IFLA_MASTER)
        .and_then(|(_, p)| u32_at(p, 0));
    Some(LinkChange {
        ifindex,
        master,
        removed: ty == RTM_DELLINK,
        port: master.and_then(|m| parse_port(body, m)),
    })
}

/// Whether br_netfilter is loaded in this namespace and hands bridged IPv4 or ARP frames to
/// iptables or arptables on every bridge (its `bridge-nf-call-*` sysctls).
pub fn bridge_netfilter_on() -> bool {
    ["iptables", "arptables"].iter().any(|t| {
        std::fs::read_to_string(format!("/proc/sys/net/bridge/bridge-nf-call-{t}"))
            .is_ok_and(|v| v.trim() == "1")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        super::super::push_attr(&mut v, ty, data);
        v
    }

    fn port_message(ifindex: u32, master: u32, protinfo: &[(u16, u8)]) -> Vec<u8> {
        let mut body = vec![0u8; IFINFOMSG_LEN];
        body[0] = AF_BRIDGE;
        body[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        body.extend(attr(IFLA_MASTER, &master.to_ne_bytes()));
        let nested: Vec<u8> = protinfo.iter().flat_map(|&(t, v)| attr(t, &[v])).collect();
        body.extend(attr(IFLA_PROTINFO | super::super::NLA_F_NESTED, &nested));
        body
    }

    #[test]
    fn a_port_message_gives_state_and_flags() {
        let m = port_message(
            12,
            4,
            &[
                (IFLA_BRPORT_STATE, FORWARDING),
                (IFLA_BRPORT_ISOLATED, 1),
                (IFLA_BRPORT_LOCKED, 0),
            ],
        );
        let p = parse_port(&m, 4).expect("a port of bridge 4");
        assert_eq!(
            p,
            BridgePort {
                ifindex: 12,
                state: FORWARDING,
                isolated: true,
                locked: false
            }
        );
        assert!(!p.forwards_freely(), "an isolated port does not");
        let free = parse_port(&port_message(13, 4, &[(IFLA_BRPORT_STATE, FORWARDING)]), 4);
        assert!(free.is_some_and(|p| p.forwards_freely()));
        let blocking = parse_port(&port_message(14, 4, &[(IFLA_BRPORT_STATE, 4)]), 4);
        assert!(blocking.is_some_and(|p| !p.forwards_freely()));
        assert_eq!(parse_port(&m, 5), None, "another bridge's port");
        assert_eq!(
            parse_port(&port_message(4, 4, &[]), 4),
            None,
            "the bridge itself"
        );
    }

    #[test]
    fn link_messages_name_the_link_and_its_master() {
        let m = port_message(12, 4, &[]);
        assert_eq!(
            parse_change(RTM_DELLINK, &m),
            Some(LinkChange {
                ifindex: 12,
                master: Some(4),
                removed: true,
                port: Some(BridgePort {
                    ifindex: 12,
                    state: 0,
                    isolated: false,
                    locked: false
                })
            })
        );
        let mut plain = m.clone();
        plain[0] = AF_UNSPEC;
        let change = parse_change(RTM_NEWLINK, &plain).expect("a link message");
        assert_eq!(
            (change.master, change.port),
            (Some(4), None),
            "not the bridge's own"
        );
        assert_eq!(parse_change(RTM_GETLINK, &m), None);
        assert_eq!(parse_change(RTM_NEWLINK, &[]), None, "a message cut short");
    }
}
