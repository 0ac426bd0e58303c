//! A synchronous `NETLINK_ROUTE` socket: links (veth, up/down, master, MAC, MTU) and the
//! bridge forwarding table.
//!
//! Messages are built by hand. Every request asks for an acknowledgement and waits for it,
//! so a call returns only once the kernel has applied (or refused) the change. The socket
//! works in the network namespace it was opened in.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use vmnap_wire::Mac;

mod ports;
pub use ports::{bridge_netfilter_on, BridgePort, BridgeSettings, LinkChange, LinkEvents};

/// The kind of forwarding entry [`Netlink::fdb_replace`] installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdbEntry {
    /// A static entry that the bridge neither ages out nor moves when it sees the MAC on
    /// another port (`static sticky`).
    StaticSticky,
    /// An entry that behaves as a learned one: it ages out and follows the MAC's traffic.
    Dynamic,
}

/// An error the kernel returned for a netlink request.
#[derive(Debug)]
pub struct KernelError {
    /// The errno, as an I/O error.
    pub errno: io::Error,
    /// The kernel's extended acknowledgement text, if it gave one.
    pub message: Option<String>,
}

impl std::fmt::Display for KernelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.message {
            Some(m) => write!(f, "{} (kernel: {m})", self.errno),
            None => write!(f, "{}", self.errno),
        }
    }
}

impl std::error::Error for KernelError {}

impl KernelError {
    fn io(errno: io::Error) -> Self {
        Self {
            errno,
            message: None,
        }
    }

    /// The raw errno, if there is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.errno.raw_os_error()
    }
}

/// Errors from [`Netlink`] operations. Each variant names the operation and the interface.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The socket could not be opened.
    #[error("Could not open a NETLINK_ROUTE socket")]
    Open(#[source] io::Error),
    /// The interface name cannot be sent (empty, too long or with a NUL byte).
    #[error("Invalid interface name {0:?}")]
    InvalidName(String),
    /// Looking up a link by name failed (`ENODEV`: no such link).
    #[error("Could not look up link {name}")]
    LinkIndex {
        /// The interface name.
        name: String,
        /// The kernel's answer.
        #[source]
        source: KernelError,
    },
    /// Reading a link's attributes failed.
    #[error("Could not read link {ifindex}")]
    GetLink {
        /// The interface index.
        ifindex: u32,
        /// The kernel's answer.
        #[source]
        source: KernelError,
    },
    /// Setting a link up or down failed.
    #[error("Could not set link {ifindex} {}", if *.up { "up" } else { "down" })]
    SetLinkUp {
        /// The interface index.
        ifindex: u32,
        /// The state asked for.
        up: bool,
        /// The kernel's answer.
        #[source]
        source: KernelError,
    },
    /// Creating a veth pair failed.
    #[error("Could not create veth pair {name} <-> {peer}")]
    CreateVeth {
        /// The first end.
        name: String,
        /// The second end.
        peer: String,
        /// The kernel's answer.
        #[source]
        source: KernelError,
    },
    /// Deleting a link failed.
    #[error("Could not delete link {ifindex}")]
    DeleteLink {
        /// The interface index.
        ifindex: u32,
        /// The kernel's answer.
        #[source]
        source: KernelError,
    },
    /// Enslaving a link failed.
    #[error("Could not set the master of link {ifindex} to {master}")]
    SetMaster {
        /// The interface index.
        ifindex: u32,
        /// The master's index (0: none).
        master: u32,
        /// The kernel's answer.
        #[source]
        source: KernelError,
    },
    /// Setting a bridge port's state failed.
    #[error("Could not set the bridge port state of link {ifindex} to {state:?}")]
    SetPortState {
        /// The interface index.
        ifindex: u32,
        /// The state asked for.
        state: PortState,
        /// The kernel's answer.
        #[source]
        source: KernelError,
    },
    /// Setting a MAC address failed.
    #[error("Could not set the MAC address of link {ifindex} to {mac}")]
    SetMac {
        /// The interface index.
        ifindex: u32,
        /// The address asked for.
        mac: Mac,
        /// The kernel's answer.
        #[source]
        source: KernelError,
    },
    /// Setting the MTU failed.
    #[error("Could not set the MTU of link {ifindex} to {mtu}")]
    SetMtu {
        /// The interface index.
        ifindex: u32,
        /// The MTU asked for.
        mtu: u32,
        /// The kernel's answer.
        #[source]
        source: KernelError,
    },
    /// The kernel's answer about a link lacked an attribute.
    #[error("The kernel's description of link {ifindex} has no {what}")]
    MissingAttribute {
        /// The interface index.
        ifindex: u32,
        /// The attribute.
        what: &'static str,
    },
    /// Replacing a forwarding entry failed.
    #[error("Could not point the forwarding entry for {mac} at port {port}")]
    FdbReplace {
        /// The bridge port.
        port: u32,
        /// The MAC.
        mac: Mac,
        /// The kernel's answer.
        #[source]
        source: KernelError,
    },
    /// Deleting a forwarding entry failed.
    #[error("Could not delete the forwarding entry for {mac} on port {port}")]
    FdbDelete {
        /// The bridge port.
        port: u32,
        /// The MAC.
        mac: Mac,
        /// The kernel's answer.
        #[source]
        source: KernelError,
    },
    /// Listing a bridge's ports failed.
    #[error("Could not list the ports of bridge {bridge}")]
    PortDump {
        /// The bridge's index.
        bridge: u32,
        /// The kernel's answer.
        #[source]
        source: KernelError,
    },
    /// Dumping a bridge's forwarding table failed.
    #[error("Could not read the forwarding table of bridge {bridge}")]
    FdbDump {
        /// The bridge's index.
        bridge: u32,
        /// The kernel's answer.
        #[source]
        source: KernelError,
    },
}

// Constants from the uapi headers, typed for the message layout.
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLA_F_NESTED: u16 = 0x8000;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWNEIGH: u16 = 28;
const RTM_DELNEIGH: u16 = 29;
const RTM_GETNEIGH: u16 = 30;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_EXT_MASK: u16 = 29;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;

const NDA_LLADDR: u16 = 2;
const NDA_VLAN: u16 = 5;
const NDA_MASTER: u16 = 9;
const NTF_MASTER: u8 = 0x04;
const NTF_STICKY: u8 = 0x40;
const NUD_REACHABLE: u16 = 0x02;
const NUD_NOARP: u16 = 0x40;

const AF_UNSPEC: u8 = 0;
const AF_BRIDGE: u8 = 7;
const IFF_UP: u32 = 1;
const IFF_RUNNING: u32 = 0x40;
const IFNAMSIZ: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const NDMSG_LEN: usize = 12;

const SOL_NETLINK: libc::c_int = 270;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;
const NETLINK_GET_STRICT_CHK: libc::c_int = 12;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The STP state of a bridge port (`BR_STATE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PortState {
    /// Takes no part in the bridge.
    Disabled = 0,
    /// Forwards frames and learns addresses.
    Forwarding = 3,
}

const RTM_SETLINK: u16 = 19;
const IFLA_PROTINFO: u16 = 12;
const IFLA_BRPORT_STATE: u16 = 1;

/// A netlink message under construction.
struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    fn new(ty: u16, flags: u16) -> Self {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&ty.to_ne_bytes());
        buf[6..8].copy_from_slice(&flags.to_ne_bytes());
        Self { buf }
    }

    /// Appends `struct ifinfomsg`.
    fn ifinfomsg(mut self, index: u32, flags: u32, change: u32) -> Self {
        let mut h = [0u8; IFINFOMSG_LEN];
        h[0] = AF_UNSPEC;
        h[4..8].copy_from_slice(&index.to_ne_bytes());
        h[8..12].copy_from_slice(&flags.to_ne_bytes());
        h[12..16].copy_from_slice(&change.to_ne_bytes());
        self.buf.extend_from_slice(&h);
        self
    }

    /// Appends `struct ndmsg`.
    fn ndmsg(mut self, family: u8, ifindex: u32, state: u16, flags: u8) -> Self {
        let mut h = [0u8; NDMSG_LEN];
        h[0] = family;
        h[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        h[8..10].copy_from_slice(&state.to_ne_bytes());
        h[10] = flags;
        self.buf.extend_from_slice(&h);
        self
    }

    fn attr(mut self, ty: u16, data: &[u8]) -> Self {
        push_attr(&mut self.buf, ty, data);
        self
    }

    fn attr_u32(self, ty: u16, v: u32) -> Self {
        self.attr(ty, &v.to_ne_bytes())
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

fn push_attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = u16::try_from(4 + data.len()).unwrap_or(u16::MAX);
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(align4(buf.len()), 0);
}

/// A NUL-terminated interface name, checked against `IFNAMSIZ`.
fn ifname_bytes(name: &str) -> Result<Vec<u8>, NetlinkError> {
    if name.is_empty() || name.len() >= IFNAMSIZ || name.bytes().any(|b| b == 0 || b == b'/') {
        return Err(NetlinkError::InvalidName(name.to_owned()));
    }
    let mut v = name.as_bytes().to_vec();
    v.push(0);
    Ok(v)
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(i..i + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

/// Iterates over the attributes in `b`: (type without flags, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(b, 0)?);
        let ty = u16_at(b, 2)?;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = b.get(align4(len)..).unwrap_or(&[]);
        Some((ty & NLA_TYPE_MASK, payload))
    })
}

/// A link as the kernel describes it.
struct LinkInfo {
    index: u32,
    flags: u32,
    mtu: Option<u32>,
    stats: Option<LinkStats>,
    /// `IFLA_LINK`: for a veth, its peer's index (in the peer's namespace).
    link: Option<u32>,
    /// `IFLA_LINK_NETNSID` present: that link is in another namespace.
    link_elsewhere: bool,
    /// `IFLA_INFO_KIND`, without its NUL.
    kind: Option<Vec<u8>>,
}

/// Where a veth's peer is ([`Netlink::veth_peer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VethPeer {
    /// The link is not a veth.
    NotAVeth,
    /// The peer is in another network namespace.
    Elsewhere,
    /// The peer's index, in this namespace.
    Here(u32),
}

/// A link's packet counters (`IFLA_STATS64`), from the host's side of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkStats {
    /// Packets the link received (for a guest's port: what the guest sent).
    pub rx_packets: u64,
    /// Packets the link sent (for a guest's port: what the guest was sent).
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
}

const IFLA_STATS64: u16 = 23;

fn u64_at(b: &[u8], i: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(i..i + 8)?.try_into().ok()?))
}

fn parse_link(body: &[u8]) -> Option<LinkInfo> {
    let index = u32_at(body, 4)?;
    let flags = u32_at(body, 8)?;
    let mut mtu = None;
    let mut stats = None;
    let (mut link, mut link_elsewhere, mut kind) = (None, false, None);
    for (ty, p) in attrs(body.get(IFINFOMSG_LEN..)?) {
        match ty {
            IFLA_LINK => link = u32_at(p, 0),
            IFLA_LINK_NETNSID => link_elsewhere = true,
            IFLA_LINKINFO => {
                kind = attrs(p)
                    .find(|(t, _)| *t == IFLA_INFO_KIND)
                    .map(|(_, v)| v.split(|&b| b == 0).next().unwrap_or(v).to_vec());
            }
            _ => {}
        }
        if ty == IFLA_STATS64 {
            // struct rtnl_link_stats64: rx_packets, tx_packets, rx_bytes, tx_bytes, ...
            stats = Some(LinkStats {
                rx_packets: u64_at(p, 0)?,
                tx_packets: u64_at(p, 8)?,
                rx_bytes: u64_at(p, 16)?,
                tx_bytes: u64_at(p, 24)?,
            });
        }
        if ty == IFLA_MTU {
            mtu = u32_at(p, 0);
        }
    }
    Some(LinkInfo {
        index,
        flags,
        mtu,
        stats,
        link,
        link_elsewhere,
        kind,
    })
}

/// A synchronous `NETLINK_ROUTE` socket in the namespace it was opened in.
#[derive(Debug)]
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl AsRawFd for Netlink {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Netlink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `v` lives for the call and its size is passed alongside it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// How long a request waits for the kernel's answer before giving up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// A `NETLINK_ROUTE` socket in the calling thread's namespace, bound to the multicast
/// `groups` (0: none), with `flags` added to its type (`SOCK_NONBLOCK`).
fn route_socket(flags: libc::c_int, groups: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | flags,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: a zeroed sockaddr_nl is valid (nl_pid 0: the kernel assigns the port).
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = groups;
    // SAFETY: `addr` is a valid sockaddr_nl and its size is passed alongside it.
    let r = unsafe {
        libc::bind(
            raw,
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// A netlink message read from the kernel: its type, flags, sequence number and body
/// (after the `nlmsghdr`).
struct Message<'a> {
    ty: u16,
    flags: u16,
    seq: u32,
    body: &'a [u8],
}

/// The messages in what one `recv` read; a message whose length does not fit ends it.
fn messages(mut rest: &[u8]) -> impl Iterator<Item = Message<'_>> {
    std::iter::from_fn(move || {
        let len = u32_at(rest, 0)? as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return None;
        }
        let m = Message {
            ty: u16_at(rest, 4)?,
            flags: u16_at(rest, 6)?,
            seq: u32_at(rest, 8)?,
            body: &rest[NLMSG_HDRLEN..len],
        };
        rest = rest.get(align4(len)..).unwrap_or(&[]);
        Some(m)
    })
}

impl Netlink {
    /// Opens a `NETLINK_ROUTE` socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        let fd = route_socket(0, 0).map_err(NetlinkError::Open)?;
        let raw = fd.as_raw_fd();
        // Best effort: error texts, short acks. Strict checking is needed for the
        // bridge filter of FDB dumps to apply; entries are filtered here too.
        let _ = setsockopt_int(raw, SOL_NETLINK, NETLINK_EXT_ACK, 1);
        let _ = setsockopt_int(raw, SOL_NETLINK, NETLINK_CAP_ACK, 1);
        let _ = setsockopt_int(raw, SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1);
        let tv = libc::timeval {
            tv_sec: REPLY_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: `tv` lives for the call and its size is passed alongside it.
        let r = unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(NetlinkError::Open(io::Error::last_os_error()));
        }
        let seq = std::process::id().wrapping_mul(65_536);
        Ok(Self {
            fd,
            seq,
            buf: vec![0u8; 64 * 1024],
        })
    }

    /// Sends `msg` and collects the bodies of the replies (after the `nlmsghdr`) until the
    /// acknowledgement, or `NLMSG_DONE` for a dump.
    fn request(&mut self, msg: Msg) -> Result<Vec<Vec<u8>>, KernelError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = msg.finish(seq);
        // SAFETY: `kernel` is a valid sockaddr_nl (pid 0: the kernel); `bytes` outlives the call.
        let sent = unsafe {
            let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
            kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(KernelError::io(io::Error::last_os_error()));
        }
        let mut replies = Vec::new();
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
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(KernelError::io(e));
            }
            for Message {
                ty,
                flags,
                seq: mseq,
                body,
            } in messages(self.buf.get(..n as usize).unwrap_or(&[]))
            {
                if mseq != seq {
                    continue; // a late answer to an earlier request
                }
                match ty {
                    NLMSG_ERROR => {
                        let code = u32_at(body, 0).unwrap_or(0) as i32;
                        if code == 0 {
                            return Ok(replies);
                        }
                        return Err(KernelError {
                            errno: io::Error::from_raw_os_error(-code),
                            message: ext_ack_message(body, flags),
                        });
                    }
                    NLMSG_DONE => {
                        let code = u32_at(body, 0).unwrap_or(0) as i32;
                        if code < 0 {
                            return Err(KernelError::io(io::Error::from_raw_os_error(-code)));
                        }
                        return Ok(replies);
                    }
                    _ => replies.push(body.to_vec()),
                }
            }
        }
    }

    fn get_link_by_name(&mut self, name: &str) -> Result<LinkInfo, NetlinkError> {
        let nm = ifname_bytes(name)?;
        let msg = Msg::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK)
            .ifinfomsg(0, 0, 0)
            .attr(IFLA_IFNAME, &nm)
            .attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
        let err = |source| NetlinkError::LinkIndex {
            name: name.to_owned(),
            source,
        };
        let replies = self.request(msg).map_err(err)?;
        replies
            .iter()
            .find_map(|b| parse_link(b))
            .ok_or_else(|| err(KernelError::io(io::Error::from_raw_os_error(libc::ENODEV))))
    }

    fn get_link(&mut self, ifindex: u32) -> Result<LinkInfo, NetlinkError> {
        let msg = Msg::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK)
            .ifinfomsg(ifindex, 0, 0)
            .attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
        let err = |source| NetlinkError::GetLink { ifindex, source };
        let replies = self.request(msg).map_err(err)?;
        replies
            .iter()
            .filter_map(|b| parse_link(b))
            .find(|l| l.index == ifindex)
            .ok_or_else(|| err(KernelError::io(io::Error::from_raw_os_error(libc::ENODEV))))
    }

    /// The index of the link called `name` (`RTM_GETLINK` by `IFLA_IFNAME`, not sysfs).
    pub fn link_index(&mut self, name: &str) -> Result<u32, NetlinkError> {
        Ok(self.get_link_by_name(name)?.index)
    }

    /// Where the peer of veth `ifindex` is.
    pub fn veth_peer(&mut self, ifindex: u32) -> Result<VethPeer, NetlinkError> {
        let link = self.get_link(ifindex)?;
        Ok(match (link.kind.as_deref(), link.link) {
            (Some(b"veth"), _) if link.link_elsewhere => VethPeer::Elsewhere,
            (Some(b"veth"), Some(peer)) if peer != 0 => VethPeer::Here(peer),
            (Some(b"veth"), _) => VethPeer::Elsewhere,
            _ => VethPeer::NotAVeth,
        })
    }

    /// Whether a link called `name` exists.
    pub fn link_exists(&mut self, name: &str) -> Result<bool, NetlinkError> {
        match self.get_link_by_name(name) {
            Ok(_) => Ok(true),
            Err(NetlinkError::LinkIndex { source, .. })
                if source.raw_os_error() == Some(libc::ENODEV) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Sets the link administratively up or down (`IFF_UP`).
    pub fn set_link_up(&mut self, ifindex: u32, up: bool) -> Result<(), NetlinkError> {
        let msg = Msg::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK).ifinfomsg(
            ifindex,
            if up { IFF_UP } else { 0 },
            IFF_UP,
        );
        self.request(msg)
            .map_err(|source| NetlinkError::SetLinkUp {
                ifindex,
                up,
                source,
            })?;
        Ok(())
    }

    /// Whether the link is administratively up (`IFF_UP`).
    pub fn link_is_up(&mut self, ifindex: u32) -> Result<bool, NetlinkError> {
        Ok(self.get_link(ifindex)?.flags & IFF_UP != 0)
    }

    /// Whether the link is operationally up (`IFF_RUNNING`: up, with carrier, and the
    /// kernel's link watcher has activated its queue).
    ///
    /// After a link or its veth peer comes up, frames sent before this turns true can be
    /// dropped without any error (the queue is still the no-op one).
    pub fn link_is_running(&mut self, ifindex: u32) -> Result<bool, NetlinkError> {
        Ok(self.get_link(ifindex)?.flags & IFF_RUNNING != 0)
    }

    /// Creates a veth pair `name` <-> `peer`, both in the current namespace, both down.
    pub fn create_veth(&mut self, name: &str, peer: &str) -> Result<(), NetlinkError> {
        let nm = ifname_bytes(name)?;
        let pn = ifname_bytes(peer)?;
        // IFLA_LINKINFO { IFLA_INFO_KIND "veth", IFLA_INFO_DATA { VETH_INFO_PEER { ifinfomsg, IFLA_IFNAME } } }
        let mut peer_attr = vec![0u8; IFINFOMSG_LEN];
        push_attr(&mut peer_attr, IFLA_IFNAME, &pn);
        let mut data = Vec::new();
        push_attr(&mut data, VETH_INFO_PEER | NLA_F_NESTED, &peer_attr);
        let mut info = Vec::new();
        push_attr(&mut info, IFLA_INFO_KIND, b"veth");
        push_attr(&mut info, IFLA_INFO_DATA | NLA_F_NESTED, &data);
        let msg = Msg::new(
            RTM_NEWLINK,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .ifinfomsg(0, 0, 0)
        .attr(IFLA_IFNAME, &nm)
        .attr(IFLA_LINKINFO | NLA_F_NESTED, &info);
        self.request(msg)
            .map_err(|source| NetlinkError::CreateVeth {
                name: name.to_owned(),
                peer: peer.to_owned(),
                source,
            })?;
        Ok(())
    }

    /// Deletes the link (for a veth, both ends go).
    pub fn delete_link(&mut self, ifindex: u32) -> Result<(), NetlinkError> {
        let msg = Msg::new(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK).ifinfomsg(ifindex, 0, 0);
        self.request(msg)
            .map_err(|source| NetlinkError::DeleteLink { ifindex, source })?;
        Ok(())
    }

    /// Enslaves the link to `master` (a bridge); `master` 0 releases it.
    pub fn set_master(&mut self, ifindex: u32, master: u32) -> Result<(), NetlinkError> {
        let msg = Msg::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK)
            .ifinfomsg(ifindex, 0, 0)
            .attr_u32(IFLA_MASTER, master);
        self.request(msg)
            .map_err(|source| NetlinkError::SetMaster {
                ifindex,
                master,
                source,
            })?;
        Ok(())
    }

    /// Sets the STP state of bridge port `ifindex` (`bridge link set dev PORT state N`): a
    /// disabled port neither receives from nor sends to the bridge, while the link itself
    /// stays up. Refused (`EBUSY`) when the bridge runs the kernel's STP.
    pub fn set_port_state(&mut self, ifindex: u32, state: PortState) -> Result<(), NetlinkError> {
        let mut protinfo = Vec::new();
        push_attr(&mut protinfo, IFLA_BRPORT_STATE, &[state as u8]);
        let mut msg = Msg::new(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK).ifinfomsg(ifindex, 0, 0);
        msg.buf[NLMSG_HDRLEN] = AF_BRIDGE;
        let msg = msg.attr(IFLA_PROTINFO | NLA_F_NESTED, &protinfo);
        self.request(msg)
            .map_err(|source| NetlinkError::SetPortState {
                ifindex,
                state,
                source,
            })?;
        Ok(())
    }

    /// Sets the link's MAC address.
    pub fn set_mac(&mut self, ifindex: u32, mac: [u8; 6]) -> Result<(), NetlinkError> {
        let msg = Msg::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK)
            .ifinfomsg(ifindex, 0, 0)
            .attr(IFLA_ADDRESS, &mac);
        self.request(msg).map_err(|source| NetlinkError::SetMac {
            ifindex,
            mac: Mac(mac),
            source,
        })?;
        Ok(())
    }

    /// Sets the link's MTU.
    pub fn set_mtu(&mut self, ifindex: u32, mtu: u32) -> Result<(), NetlinkError> {
        let msg = Msg::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK)
            .ifinfomsg(ifindex, 0, 0)
            .attr_u32(IFLA_MTU, mtu);
        self.request(msg).map_err(|source| NetlinkError::SetMtu {
            ifindex,
            mtu,
            source,
        })?;
        Ok(())
    }

    /// The link's packet and byte counters.
    pub fn link_stats(&mut self, ifindex: u32) -> Result<LinkStats, NetlinkError> {
        let msg = Msg::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK).ifinfomsg(ifindex, 0, 0);
        let err = |source| NetlinkError::GetLink { ifindex, source };
        let replies = self.request(msg).map_err(err)?;
        replies
            .iter()
            .filter_map(|b| parse_link(b))
            .find(|l| l.index == ifindex)
            .and_then(|l| l.stats)
            .ok_or(NetlinkError::MissingAttribute {
                ifindex,
                what: "IFLA_STATS64",
            })
    }

    /// The link's MTU.
    pub fn link_mtu(&mut self, ifindex: u32) -> Result<u32, NetlinkError> {
        self.get_link(ifindex)?
            .mtu
            .ok_or(NetlinkError::MissingAttribute {
                ifindex,
                what: "IFLA_MTU",
            })
    }

    /// Points the bridge's forwarding entry for `mac` on VLAN `vid` (0: no VLAN, as on a
    /// bridge without VLAN filtering) at bridge port `port`, atomically replacing any entry,
    /// on this port or another.
    ///
    /// `RTM_NEWNEIGH`, family `AF_BRIDGE`, `NLM_F_CREATE|NLM_F_REPLACE`, `ndm_flags`
    /// `NTF_MASTER` (plus `NTF_STICKY` for [`FdbEntry::StaticSticky`]), `ndm_state`
    /// `NUD_NOARP` (static) or `NUD_REACHABLE` (dynamic), `NDA_LLADDR`: like
    /// `bridge fdb replace MAC dev PORT master static sticky`. A dynamic entry is refused
    /// (`EPERM`) unless the port is up and forwarding.
    pub fn fdb_replace(
        &mut self,
        port: u32,
        mac: [u8; 6],
        vid: u16,
        entry: FdbEntry,
    ) -> Result<(), NetlinkError> {
        let (state, flags) = match entry {
            FdbEntry::StaticSticky => (NUD_NOARP, NTF_MASTER | NTF_STICKY),
            FdbEntry::Dynamic => (NUD_REACHABLE, NTF_MASTER),
        };
        let msg = Msg::new(
            RTM_NEWNEIGH,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
        .ndmsg(AF_BRIDGE, port, state, flags)
        .attr(NDA_LLADDR, &mac);
        let msg = if vid == 0 {
            msg
        } else {
            msg.attr(NDA_VLAN, &vid.to_ne_bytes())
        };
        self.request(msg)
            .map_err(|source| NetlinkError::FdbReplace {
                port,
                mac: Mac(mac),
                source,
            })?;
        Ok(())
    }

    /// Removes the entry for `mac` on VLAN `vid` (0: none) on `port`
    /// (`bridge fdb del MAC dev PORT master`). An absent entry is not an error.
    pub fn fdb_delete(&mut self, port: u32, mac: [u8; 6], vid: u16) -> Result<(), NetlinkError> {
        let msg = Msg::new(RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK)
            .ndmsg(AF_BRIDGE, port, 0, NTF_MASTER)
            .attr(NDA_LLADDR, &mac);
        let msg = if vid == 0 {
            msg
        } else {
            msg.attr(NDA_VLAN, &vid.to_ne_bytes())
        };
        match self.request(msg) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(source) => Err(NetlinkError::FdbDelete {
                port,
                mac: Mac(mac),
                source,
            }),
        }
    }

    /// The bridge port whose forwarding entry holds `mac`, if any.
    ///
    /// Dumps `bridge`'s forwarding table. The entry without a VLAN (vid 0) wins; with VLAN
    /// filtering on and no such entry, the first entry for `mac` is taken. An entry local to
    /// the bridge device itself yields `bridge`.
    pub fn fdb_port_of(&mut self, bridge: u32, mac: [u8; 6]) -> Result<Option<u32>, NetlinkError> {
        let msg = Msg::new(RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP)
            .ndmsg(AF_BRIDGE, 0, 0, 0)
            .attr_u32(NDA_MASTER, bridge);
        let replies = self
            .request(msg)
            .map_err(|source| NetlinkError::FdbDump { bridge, source })?;
        let mut fallback = None;
        for body in &replies {
            if body.len() < NDMSG_LEN || body[0] != AF_BRIDGE {
                continue;
            }
            let Some(ifindex) = u32_at(body, 4) else {
                continue;
            };
            let (mut lladdr, mut master, mut vlan) = (None, None, 0u16);
            for (ty, p) in attrs(&body[NDMSG_LEN..]) {
                match ty {
                    NDA_LLADDR => lladdr = p.get(..6),
                    NDA_MASTER => master = u32_at(p, 0),
                    NDA_VLAN => vlan = u16_at(p, 0).unwrap_or(0),
                    _ => {}
                }
            }
            if master != Some(bridge) || lladdr != Some(&mac[..]) {
                continue;
            }
            if vlan == 0 {
                return Ok(Some(ifindex));
            }
            fallback.get_or_insert(ifindex);
        }
        Ok(fallback)
    }
}

/// The `NLMSGERR_ATTR_MSG` text of an error message, if the kernel attached one.
fn ext_ack_message(body: &[u8], flags: u16) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    // struct nlmsgerr: error (4) + the request's nlmsghdr (16; capped: no payload).
    let req_len = u32_at(body, 4)? as usize;
    let skip = 4 + if flags & 0x100 != 0 {
        NLMSG_HDRLEN
    } else {
        align4(req_len)
    };
    attrs(body.get(skip..)?)
        .find(|(ty, _)| *ty == NLMSGERR_ATTR_MSG)
        .map(|(_, p)| {
            let end = p.iter().position(|&c| c == 0).unwrap_or(p.len());
            String::from_utf8_lossy(&p[..end]).into_owned()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_layout_is_aligned_and_sized() {
        let m = Msg::new(RTM_GETLINK, NLM_F_REQUEST)
            .ifinfomsg(0, 0, 0)
            .attr(IFLA_IFNAME, b"ab\0");
        let b = m.finish(7);
        assert_eq!(b.len(), 16 + 16 + 8);
        assert_eq!(u32_at(&b, 0), Some(40));
        assert_eq!(u32_at(&b, 8), Some(7));
        let a: Vec<_> = attrs(&b[32..]).collect();
        assert_eq!(a, vec![(IFLA_IFNAME, &b"ab\0"[..])]);
    }

    #[test]
    fn attributes_are_read_with_their_padding_and_flags() {
        // IFLA_LINK 7; IFLA_LINKINFO (nested flag) { IFLA_INFO_KIND "veth\0" }.
        let mut b = Vec::new();
        b.extend_from_slice(&8u16.to_ne_bytes());
        b.extend_from_slice(&IFLA_LINK.to_ne_bytes());
        b.extend_from_slice(&7u32.to_ne_bytes());
        b.extend_from_slice(&16u16.to_ne_bytes());
        b.extend_from_slice(&(IFLA_LINKINFO | 0x8000).to_ne_bytes());
        b.extend_from_slice(&9u16.to_ne_bytes());
        b.extend_from_slice(&IFLA_INFO_KIND.to_ne_bytes());
        b.extend_from_slice(b"veth\0\0\0\0");
        let all: Vec<(u16, &[u8])> = attrs(&b).collect();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], (IFLA_LINK, &7u32.to_ne_bytes()[..]));
        assert_eq!(all[1].0, IFLA_LINKINFO);
        let inner: Vec<(u16, &[u8])> = attrs(all[1].1).collect();
        assert_eq!(inner, vec![(IFLA_INFO_KIND, &b"veth\0"[..])]);
        // A truncated attribute ends the walk instead of reading past the buffer.
        assert_eq!(attrs(&b[..6]).count(), 0);
    }

    #[test]
    fn long_names_are_refused() {
        assert!(matches!(
            ifname_bytes("0123456789abcdef"),
            Err(NetlinkError::InvalidName(_))
        ));
        assert!(ifname_bytes("0123456789abcde").is_ok());
    }

    #[test]
    fn mac_is_formatted_with_colons() {}
}
