//! Making a veth's peer write VLAN tags into the frames it sends, where XDP can see them.
//!
//! A veth offloads tag insertion (`tx-vlan-hw-insert`, `tx-vlan-stag-hw-insert`): a tagged
//! frame it sends keeps its tag beside the data (`skb->vlan_tci`), and so arrives at the
//! other end, where generic XDP, which reads the data only, takes it for untagged. With the
//! offload off, the peer's transmit path inserts the tag into the frame in software.
//!
//! The peer is found with `RTM_GETLINK` (`IFLA_LINK`, and `IFLA_LINK_NETNSID` when it is in
//! another namespace), the features changed with the `SIOCETHTOOL` ioctl, by their names.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The features that keep a VLAN tag out of the frame on transmit (802.1Q, 802.1ad).
const TAG_INSERTION: [&str; 2] = ["tx-vlan-hw-insert", "tx-vlan-stag-hw-insert"];

/// Turns VLAN tag insertion offload off on the veth peer of `ifindex`, which must be in the
/// calling thread's network namespace. Fails if `ifindex` is not a veth, if its peer is in
/// another namespace, or if the offload stays on.
pub(crate) fn tags_in_frame_on_peer(ifindex: u32) -> io::Result<()> {
    let link = link_info(ifindex)?;
    if link.kind.as_deref() != Some(b"veth".as_slice()) {
        return Err(io::Error::other("the interface is not a veth"));
    }
    let peer = match link.peer {
        Some(peer) if !link.peer_elsewhere && peer != 0 => peer,
        _ => {
            return Err(io::Error::other(
                "its veth peer is in another network namespace",
            ))
        }
    };
    let mut name = [0u8; libc::IFNAMSIZ];
    // SAFETY: `name` has the IFNAMSIZ bytes if_indextoname writes at most.
    let found = unsafe { libc::if_indextoname(peer, name.as_mut_ptr().cast()) };
    if found.is_null() {
        return Err(io::Error::last_os_error());
    }
    let ethtool = Ethtool::open(name)?;
    let names = ethtool.feature_names()?;
    let bits: Vec<usize> = TAG_INSERTION
        .iter()
        .filter_map(|f| names.iter().position(|n| n == f))
        .collect();
    let words = names.len().div_ceil(32);
    // Ask for them off (ignoring `ETHTOOL_F_*` "not all applied": checked below).
    let mut valid = vec![0u32; words];
    for &bit in &bits {
        valid[bit / 32] |= 1 << (bit % 32);
    }
    ethtool.set_features(&valid)?;
    let active = ethtool.active_features(words)?;
    if bits
        .iter()
        .any(|&bit| active[bit / 32] & (1 << (bit % 32)) != 0)
    {
        return Err(io::Error::other(
            "the peer keeps VLAN tag insertion offloaded",
        ));
    }
    Ok(())
}

/// What `RTM_GETLINK` says of a link's peer and kind.
struct LinkInfo {
    /// `IFLA_LINK`: for a veth, its peer's index (in the peer's namespace).
    peer: Option<u32>,
    /// `IFLA_LINK_NETNSID` present: the peer is in another namespace.
    peer_elsewhere: bool,
    /// `IFLA_INFO_KIND`, without its NUL.
    kind: Option<Vec<u8>>,
}

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
const IFLA_EXT_MASK: u16 = 29;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_INFO_KIND: u16 = 1;
const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;
const NLA_TYPE_MASK: u16 = 0x3fff;

fn link_info(ifindex: u32) -> io::Result<LinkInfo> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // nlmsghdr, ifinfomsg { family 0, type 0, index, flags 0, change 0 }, IFLA_EXT_MASK.
    let len = NLMSG_HDRLEN + IFINFOMSG_LEN + 8;
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&RTM_GETLINK.to_ne_bytes());
    msg.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel assigns ours
    msg.extend_from_slice(&[0, 0, 0, 0]);
    msg.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    msg.extend_from_slice(&[0; 8]);
    msg.extend_from_slice(&8u16.to_ne_bytes());
    msg.extend_from_slice(&IFLA_EXT_MASK.to_ne_bytes());
    msg.extend_from_slice(&RTEXT_FILTER_SKIP_STATS.to_ne_bytes());
    // SAFETY: `msg` outlives the call; to the kernel (no address: a netlink socket's
    // default destination).
    let sent = unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 32 * 1024];
    // SAFETY: `buf` is writable for its whole length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let reply = &buf[..n as usize];
    let bad = || io::Error::from(io::ErrorKind::InvalidData);
    let (Some(len), Some(ty)) = (u32_at(reply, 0), u16_at(reply, 4)) else {
        return Err(bad());
    };
    let body = reply.get(NLMSG_HDRLEN..len as usize).ok_or_else(bad)?;
    match ty {
        NLMSG_ERROR => {
            let code = u32_at(body, 0).ok_or_else(bad)? as i32;
            Err(io::Error::from_raw_os_error(-code))
        }
        RTM_NEWLINK => {
            let mut info = LinkInfo {
                peer: None,
                peer_elsewhere: false,
                kind: None,
            };
            for (ty, value) in attrs(body.get(IFINFOMSG_LEN..).ok_or_else(bad)?) {
                match ty {
                    IFLA_LINK => info.peer = u32_at(value, 0),
                    IFLA_LINK_NETNSID => info.peer_elsewhere = true,
                    IFLA_LINKINFO => {
                        info.kind = attrs(value)
                            .find(|(t, _)| *t == IFLA_INFO_KIND)
                            .map(|(_, v)| v.split(|&b| b == 0).next().unwrap_or(v).to_vec());
                    }
                    _ => {}
                }
            }
            Ok(info)
        }
        _ => Err(bad()),
    }
}

/// The netlink attributes in `bytes`: type (flags masked off) and value.
fn attrs(mut bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(bytes, 0)?);
        let ty = u16_at(bytes, 2)? & NLA_TYPE_MASK;
        let value = bytes.get(4..len)?;
        bytes = bytes.get(len.next_multiple_of(4)..).unwrap_or(&[]);
        Some((ty, value))
    })
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETHTOOL_SFEATURES: u32 = 0x3b;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;

/// `struct ifreq` with its `ifr_data` member.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _rest: [u8; 16],
}

/// `SIOCETHTOOL` on one interface of the calling thread's namespace.
struct Ethtool {
    socket: OwnedFd,
    name: [u8; libc::IFNAMSIZ],
}

impl Ethtool {
    fn open(name: [u8; libc::IFNAMSIZ]) -> io::Result<Self> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Ethtool { socket, name })
    }

    /// Runs the ethtool command at the start of `cmd` (a buffer of 32-bit words, so that
    /// the kernel's structs are aligned in it). Returns the ioctl's non-negative result.
    fn ioctl(&self, cmd: &mut [u32]) -> io::Result<libc::c_int> {
        let mut req = IfReq {
            name: self.name,
            data: cmd.as_mut_ptr().cast(),
            _rest: [0; 16],
        };
        // SAFETY: `req` is a valid ifreq whose data points at `cmd`, a buffer as long as
        // the command's struct says (each caller sizes it from the counts it puts there).
        let rc = unsafe { libc::ioctl(self.socket.as_raw_fd(), SIOCETHTOOL as _, &mut req) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    }

    /// The names of the device's features, in bit order (`ETH_SS_FEATURES`).
    fn feature_names(&self) -> io::Result<Vec<String>> {
        // struct ethtool_sset_info { cmd, reserved, u64 sset_mask, u32 data[1] }
        let mut info = [ETHTOOL_GSSET_INFO, 0, 0, 0, 0];
        let mask = 1u64 << ETH_SS_FEATURES;
        let [lo, hi] = [mask as u32, (mask >> 32) as u32];
        (info[2], info[3]) = if cfg!(target_endian = "little") {
            (lo, hi)
        } else {
            (hi, lo)
        };
        self.ioctl(&mut info)?;
        let count = info[4] as usize;
        if count == 0 || count > 1024 {
            return Err(io::Error::from(io::ErrorKind::InvalidData));
        }
        // struct ethtool_gstrings { cmd, string_set, len, u8 data[len * 32] }
        let mut strings = vec![0u32; 3 + count * ETH_GSTRING_LEN / 4];
        strings[..3].copy_from_slice(&[ETHTOOL_GSTRINGS, ETH_SS_FEATURES, count as u32]);
        self.ioctl(&mut strings)?;
        let bytes: Vec<u8> = strings[3..].iter().flat_map(|w| w.to_ne_bytes()).collect();
        Ok(bytes
            .chunks(ETH_GSTRING_LEN)
            .map(|s| {
                let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
                String::from_utf8_lossy(&s[..end]).into_owned()
            })
            .collect())
    }

    /// Turns off the features whose bits are set in `off`.
    fn set_features(&self, off: &[u32]) -> io::Result<()> {
        // struct ethtool_sfeatures { cmd, size, { valid, requested }[size] }
        let mut cmd = vec![ETHTOOL_SFEATURES, off.len() as u32];
        for &valid in off {
            cmd.extend_from_slice(&[valid, 0]);
        }
        self.ioctl(&mut cmd).map(drop)
    }

    /// The features in force, `words` 32-bit words of them.
    fn active_features(&self, words: usize) -> io::Result<Vec<u32>> {
        // struct ethtool_gfeatures { cmd, size, { available, requested, active,
        // never_changed }[size] }
        let mut cmd = vec![0u32; 2 + 4 * words];
        cmd[..2].copy_from_slice(&[ETHTOOL_GFEATURES, words as u32]);
        self.ioctl(&mut cmd)?;
        Ok((0..words).map(|w| cmd[2 + 4 * w + 2]).collect())
    }
}

// `struct ifreq` is 40 bytes on 64-bit Linux, 32 on 32-bit.
const _: () = assert!(size_of::<IfReq>() == libc::IFNAMSIZ + 16 + size_of::<usize>());

#[cfg(test)]
mod tests {
    use super::*;

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
}
