//! A user-space 802.1Q relay, for kernels built without `CONFIG_VLAN_8021Q` (where
//! `ip link add ... type vlan` fails with "Unknown device type").
//!
//! It joins a trunk link `LOWER` (tagged frames) and an access link `UPPER` (untagged; the
//! namespace's end of a veth pair whose other end carries the addresses): frames received
//! on `LOWER` with VLAN id `VID` are sent on `UPPER` without the tag, frames received on
//! `UPPER` are sent on `LOWER` with the tag. It reads and writes with vmnap's own
//! `AF_PACKET` sockets ([`vmnap_host::PacketSocket`]), which carry each frame's offloads
//! (a checksum not filled in yet, GSO) and put back the tag the kernel strips on receive.

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::thread;

use vmnap_host::PacketSocket;
use vmnap_wire::vlan::{insert_tag, LinkRepr, TPID_8021Q};
use vmnap_wire::vnet::VirtioNetHdr;
use vmnap_wire::MAX_FRAME_LEN;

fn open(iface: &str) -> io::Result<PacketSocket> {
    PacketSocket::open_capture(iface).map_err(|e| io::Error::other(format!("{iface}: {e}")))
}

/// Waits until `socket` has a frame.
fn wait_readable(socket: &PacketSocket) -> io::Result<()> {
    let mut fd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    let rc = unsafe { libc::poll(&mut fd, 1, -1) };
    if rc < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Moves the offload offsets of `vnet` by `delta` bytes, as the frame's header grows or
/// shrinks by a tag.
fn shift(vnet: &mut VirtioNetHdr, delta: i16) {
    if vnet.needs_checksum() {
        vnet.csum_start = vnet.csum_start.saturating_add_signed(delta);
    }
    if vnet.hdr_len != 0 {
        vnet.hdr_len = vnet.hdr_len.saturating_add_signed(delta);
    }
}

/// Relays frames from `from` to `to` until an error, changing each with `map`.
fn relay(
    from: PacketSocket,
    to: PacketSocket,
    mut map: impl FnMut(&mut [u8], usize, &mut VirtioNetHdr) -> Option<usize>,
) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_FRAME_LEN + 16];
    loop {
        let meta = match from.recv(&mut buf) {
            Ok(Some(meta)) => meta,
            Ok(None) => {
                wait_readable(&from)?;
                continue;
            }
            // A link flap is reported once; keep relaying.
            Err(vmnap_host::RecvError::LinkDown { .. }) => continue,
            Err(e) => return Err(io::Error::other(e.to_string())),
        };
        if meta.outgoing {
            continue;
        }
        let mut vnet = meta.vnet;
        if let Some(len) = map(&mut buf, meta.len, &mut vnet) {
            to.send(&buf[..len], &vnet)
                .map_err(|e| io::Error::other(e.to_string()))?;
        }
    }
}

/// Runs the relay between `lower` (tagged) and `upper` (untagged) for VLAN `vid`; writes
/// its PID to `ready` once both sockets are open.
pub fn run(lower: &str, upper: &str, vid: u16, ready: Option<&Path>) -> io::Result<()> {
    let (lo_in, up_out) = (open(lower)?, open(upper)?);
    let (up_in, lo_out) = (open(upper)?, open(lower)?);
    if let Some(r) = ready {
        std::fs::write(r, format!("{}\n", std::process::id()))?;
    }
    // Each direction on its own thread; the first that fails ends the relay.
    let (done, failed) = std::sync::mpsc::channel();
    let done_up = done.clone();
    // LOWER -> UPPER: keep frames of our VLAN, without the tag.
    thread::spawn(move || {
        let _ = done.send(relay(lo_in, up_out, |buf, len, vnet| {
            let link = LinkRepr::parse(&buf[..len]).ok()?;
            if link.header_len() != 18 || link.vlan != vid {
                return None;
            }
            buf.copy_within(16..len, 12);
            shift(vnet, -4);
            Some(len - 4)
        }));
    });
    // UPPER -> LOWER: add the tag.
    thread::spawn(move || {
        let _ = done_up.send(relay(up_in, lo_out, |buf, len, vnet| {
            let len = insert_tag(buf, len, TPID_8021Q, vid)?;
            shift(vnet, 4);
            Some(len)
        }));
    });
    failed
        .recv()
        .unwrap_or_else(|_| Err(io::Error::other("relay threads ended")))
}
