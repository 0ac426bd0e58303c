//! A user-space 802.1Q relay, for kernels built without `CONFIG_VLAN_8021Q` (where
//! `ip link add ... type vlan` fails with "Unknown device type").
//!
//! It joins a trunk link `LOWER` (tagged frames) and an access link `UPPER` (untagged; the
//! namespace's end of a veth pair whose other end carries the addresses): frames received
//! on `LOWER` with VLAN id `VID` are sent on `UPPER` without the tag, frames received on
//! `UPPER` are sent on `LOWER` with the tag. Both sockets use `PACKET_VNET_HDR`, so a frame
//! whose checksum was never filled in (`CHECKSUM_PARTIAL`) or a GSO frame crosses with its
//! offload metadata instead of arriving with a bad checksum. The kernel moves a received
//! tag out of the frame into packet metadata; it is read from `PACKET_AUXDATA`.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::thread;

const ETH_P_ALL: u16 = 0x0003;
const ETH_P_8021Q: u16 = 0x8100;
const PACKET_AUXDATA: libc::c_int = 8;
const PACKET_VNET_HDR: libc::c_int = 15;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const PACKET_OUTGOING: u8 = 4;
const VNET_HDR_LEN: usize = 10;
const VNET_F_NEEDS_CSUM: u8 = 1;
const VNET_GSO_NONE: u8 = 0;

#[repr(C)]
#[derive(Clone, Copy)]
struct TpacketAuxdata {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
}

fn last_err(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn ifindex(name: &str) -> io::Result<libc::c_uint> {
    let c =
        std::ffi::CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        Err(last_err(&format!("if_nametoindex({name})")))
    } else {
        Ok(idx)
    }
}

fn setsockopt_int(fd: &OwnedFd, opt: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            opt,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(last_err("setsockopt"))
    } else {
        Ok(())
    }
}

/// An AF_PACKET socket bound to `iface` with vnet headers and auxdata.
fn open(iface: &str) -> io::Result<(OwnedFd, libc::c_int)> {
    let idx = ifindex(iface)?;
    // SAFETY: plain socket(2) call.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(ETH_P_ALL.to_be()),
        )
    };
    if raw < 0 {
        return Err(last_err("socket(AF_PACKET)"));
    }
    // SAFETY: raw is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    setsockopt_int(&fd, PACKET_AUXDATA, 1)?;
    setsockopt_int(&fd, PACKET_VNET_HDR, 1)?;
    // SAFETY: sockaddr_ll is plain data; zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ETH_P_ALL.to_be();
    sll.sll_ifindex = idx as libc::c_int;
    // SAFETY: sll is a valid sockaddr_ll of the given size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(last_err(&format!("bind to {iface}")));
    }
    Ok((fd, idx as libc::c_int))
}

/// One received frame: vnet header + frame in `buf[..len]`, the packet type and the VLAN
/// tag the kernel took out of it, if any.
fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<(usize, u8, Option<u16>)> {
    // SAFETY: all-zero is valid for these plain C structs.
    let mut from: libc::sockaddr_ll = unsafe { zeroed() };
    let mut cmsg_buf = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut from as *mut libc::sockaddr_ll).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_buf.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 16]>() as _;
    // SAFETY: msg points at live buffers of the sizes given.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(last_err("recvmsg"));
    }
    let mut vlan = None;
    // SAFETY: iterating the control messages the kernel wrote into msg.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == PACKET_AUXDATA {
                let aux: TpacketAuxdata = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                if aux.tp_status & TP_STATUS_VLAN_VALID != 0 || aux.tp_vlan_tci != 0 {
                    vlan = Some(aux.tp_vlan_tci & 0x0fff);
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, from.sll_pkttype, vlan))
}

fn send(fd: &OwnedFd, data: &[u8]) -> io::Result<()> {
    // SAFETY: data is a live buffer of data.len() bytes.
    let n = unsafe { libc::send(fd.as_raw_fd(), data.as_ptr().cast(), data.len(), 0) };
    if n < 0 {
        Err(last_err("send"))
    } else {
        Ok(())
    }
}

fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_ne_bytes());
}

/// Shifts the vnet header's offsets by `delta` bytes (tag added or removed).
fn shift_vnet(hdr: &mut [u8], delta: i32) {
    if hdr[0] & VNET_F_NEEDS_CSUM != 0 {
        let v = i32::from(get_u16(hdr, 6)) + delta;
        put_u16(hdr, 6, u16::try_from(v).unwrap_or(0));
    }
    if hdr[1] != VNET_GSO_NONE {
        let v = i32::from(get_u16(hdr, 2)) + delta;
        put_u16(hdr, 2, u16::try_from(v).unwrap_or(0));
    }
}

/// Runs the relay until an error. Writes `ready` (if given) once both sockets are open.
pub fn run(lower: &str, upper: &str, vid: u16, ready: Option<&Path>) -> io::Result<()> {
    let (lo, _) = open(lower)?;
    let (up, _) = open(upper)?;
    if let Some(r) = ready {
        std::fs::write(r, format!("{}\n", std::process::id()))?;
    }
    let lo2 = lo.try_clone()?;
    let up2 = up.try_clone()?;
    // LOWER -> UPPER: keep frames of our VLAN, without the tag.
    let down = thread::spawn(move || -> io::Result<()> {
        let mut buf = vec![0u8; 70_000];
        loop {
            let (n, pkttype, tag) = recv(&lo, &mut buf)?;
            if pkttype == PACKET_OUTGOING || n < VNET_HDR_LEN + 14 {
                continue;
            }
            let frame_vid = match tag {
                Some(v) => Some(v),
                None if u16::from_be_bytes([buf[VNET_HDR_LEN + 12], buf[VNET_HDR_LEN + 13]])
                    == ETH_P_8021Q =>
                {
                    // The tag is still in the frame: take it out.
                    let v = u16::from_be_bytes([buf[VNET_HDR_LEN + 14], buf[VNET_HDR_LEN + 15]])
                        & 0x0fff;
                    buf.copy_within(VNET_HDR_LEN + 16..n, VNET_HDR_LEN + 12);
                    shift_vnet(&mut buf[..VNET_HDR_LEN], -4);
                    if v == vid {
                        send(&up2, &buf[..n - 4])?;
                    }
                    continue;
                }
                None => None,
            };
            if frame_vid == Some(vid) {
                send(&up2, &buf[..n])?;
            }
        }
    });
    // UPPER -> LOWER: add the tag.
    let mut buf = vec![0u8; 70_004];
    let tci = vid.to_be_bytes();
    loop {
        if down.is_finished() {
            return match down.join() {
                Ok(r) => r,
                Err(_) => Err(io::Error::other("relay thread panicked")),
            };
        }
        let (n, pkttype, _) = recv(&up, &mut buf[..70_000])?;
        if pkttype == PACKET_OUTGOING || n < VNET_HDR_LEN + 14 {
            continue;
        }
        buf.copy_within(VNET_HDR_LEN + 12..n, VNET_HDR_LEN + 16);
        buf[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14].copy_from_slice(&ETH_P_8021Q.to_be_bytes());
        buf[VNET_HDR_LEN + 14..VNET_HDR_LEN + 16].copy_from_slice(&tci);
        shift_vnet(&mut buf[..VNET_HDR_LEN], 4);
        send(&lo2, &buf[..n + 4])?;
    }
}
