//! Linux I/O for vmnap: `AF_PACKET` sockets that read and write whole frames with their
//! virtio-net header ([`packet`]), a synchronous rtnetlink socket for links and the bridge
//! forwarding table ([`netlink`]), freezing cgroups, v2 or v1 ([`cgroup`]), and an XDP
//! program that answers ARP and ping for sleeping guests in the kernel, before their frames
//! reach a packet socket ([`xdp`]).
//!
//! This is the only crate of the workspace with `unsafe`, and it is kept thin: each call
//! does one kernel operation and reports the kernel's answer as a typed error naming the
//! interface or cgroup. It holds no protocol logic (it does not parse the frames it moves,
//! beyond re-inserting a VLAN tag the kernel stripped; the XDP program's two answers
//! mirror the core's surrogate, which stays the reference) and no policy (it never decides
//! when to freeze, which entry to install or what to send); it reads no clock other than
//! for its own bounded waits.

pub mod addrs;
pub mod bpf;
pub mod cgroup;
pub mod diag;
pub mod memory;
pub mod netlink;
pub mod packet;
pub mod pageout;
pub mod process;
pub mod xdp;

pub use cgroup::{Cgroup, CgroupError, CgroupVersion};
pub use netlink::{
    BridgePort, BridgeSettings, FdbEntry, KernelError, LinkChange, LinkEvents, LinkStats, Netlink,
    NetlinkError, PortState, VethPeer,
};
pub use packet::{OpenError, PacketSocket, RecvError, RecvMeta, SendError};
pub use xdp::Responder;
