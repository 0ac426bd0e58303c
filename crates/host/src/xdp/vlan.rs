//! Making a veth's peer write VLAN tags into the frames it sends, where XDP can see them.
//!
//! A veth offloads tag insertion (`tx-vlan-hw-insert`, `tx-vlan-stag-hw-insert`): a tagged
//! frame it sends keeps its tag beside the data (`skb->vlan_tci`), and so arrives at the
//! other end, where generic XDP, which reads the data only, takes it for untagged. With the
//! offload off, the peer's transmit path inserts the tag into the frame in software.
//!
//! The peer is found with [`Netlink::veth_peer`], the features changed with the
//! `SIOCETHTOOL` ioctl, by their names.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::netlink::{Netlink, VethPeer};

/// The features that keep a VLAN tag out of the frame on transmit (802.1Q, 802.1ad).
const TAG_INSERTION: [&str; 2] = ["tx-vlan-hw-insert", "tx-vlan-stag-hw-insert"];

/// Turns VLAN tag insertion offload off on the veth peer of `ifindex`, which must be in the
/// calling thread's network namespace. Fails if `ifindex` is not a veth, if its peer is in
/// another namespace, or if the offload stays on.
pub(crate) fn tags_in_frame_on_peer(ifindex: u32) -> io::Result<()> {
    let mut netlink = Netlink::open().map_err(io::Error::other)?;
    let peer = match netlink.veth_peer(ifindex).map_err(io::Error::other)? {
        VethPeer::Here(peer) => peer,
        VethPeer::NotAVeth => return Err(io::Error::other("the interface is not a veth")),
        VethPeer::Elsewhere => {
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
