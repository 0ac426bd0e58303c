//! A packet socket with mapped receive and transmit rings (`TPACKET_V2`), for benchmark
//! clients that must cost the machine less than what they measure.
//!
//! A plain packet socket costs a system call per frame sent and one per frame read, plus
//! a copy each way; with the answers it measures taking 2 to 4 µs, that is most of the
//! time. Here a frame is written into the transmit ring and a whole batch goes out with one
//! `send(2)`; answers are read straight from the receive ring, with no system call while
//! frames are waiting.
//!
//! The kernel and the process hand ring slots to each other through the slot's status word:
//! the receive side owns a slot while `TP_STATUS_USER` is set, the transmit side hands one
//! over with `TP_STATUS_SEND_REQUEST`. Those words are read and written with acquire and
//! release ordering; everything else in a slot belongs to whoever owns it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context};

const TPACKET_V2: libc::c_int = 1;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_TX_RING: libc::c_int = 13;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_SEND_REQUEST: u32 = 1;
const TP_STATUS_WRONG_FORMAT: u32 = 4;

/// The size of one slot: any frame these benchmarks send or expect fits with its header.
const FRAME_SIZE: usize = 2048;
/// Slots per ring (one block of 64 slots each, so that a batch of 64 fits).
const FRAMES: usize = 256;
/// `TPACKET_ALIGN(sizeof(struct tpacket2_hdr))`: where a transmitted frame's bytes start.
const TX_DATA_AT: usize = 32;

/// `struct tpacket_req`.
#[repr(C)]
struct TpacketReq {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
}

/// The fixed start of `struct tpacket2_hdr`: status, length, captured length, offsets.
#[repr(C)]
struct Tpacket2Hdr {
    status: AtomicU32,
    len: u32,
    snaplen: u32,
    mac: u16,
    net: u16,
}

/// An `AF_PACKET` socket bound to one interface, with a receive ring and a transmit ring.
#[derive(Debug)]
pub struct Ring {
    fd: OwnedFd,
    map: *mut u8,
    rx_next: usize,
    tx_next: usize,
    queued: usize,
}

// SAFETY: the mapping belongs to this value alone; moving it to another thread moves the
// only handle to it.
unsafe impl Send for Ring {}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live `T` for the duration of the call, and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            std::ptr::from_ref(value).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Ring {
    /// Opens the socket on `ifname`, for every protocol. It does not see the frames it
    /// sends itself (`PACKET_IGNORE_OUTGOING`), and sends past the qdisc.
    pub fn open(ifname: &str) -> anyhow::Result<Self> {
        let name = std::ffi::CString::new(ifname).context("interface name")?;
        // SAFETY: a NUL-terminated name that outlives the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("no interface {ifname}"));
        }
        // Protocol 0 until bound, so no other interface's frame lands in the ring.
        // SAFETY: plain socket(2); the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error()).context("socket(AF_PACKET)");
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        setsockopt(raw, libc::SOL_PACKET, PACKET_VERSION, &TPACKET_V2).context("PACKET_VERSION")?;
        setsockopt(
            raw,
            libc::SOL_PACKET,
            PACKET_IGNORE_OUTGOING,
            &1 as &libc::c_int,
        )
        .context("PACKET_IGNORE_OUTGOING")?;
        setsockopt(
            raw,
            libc::SOL_PACKET,
            PACKET_QDISC_BYPASS,
            &1 as &libc::c_int,
        )
        .context("PACKET_QDISC_BYPASS")?;
        let req = TpacketReq {
            block_size: (FRAME_SIZE * 64) as u32,
            block_nr: (FRAMES / 64) as u32,
            frame_size: FRAME_SIZE as u32,
            frame_nr: FRAMES as u32,
        };
        setsockopt(raw, libc::SOL_PACKET, PACKET_RX_RING, &req).context("PACKET_RX_RING")?;
        setsockopt(raw, libc::SOL_PACKET, PACKET_TX_RING, &req).context("PACKET_TX_RING")?;
        let len = 2 * FRAMES * FRAME_SIZE;
        // SAFETY: a fresh shared mapping of the socket's rings, of the size they were set up
        // with; checked against MAP_FAILED.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_LOCKED,
                raw,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error()).context("mmap of the packet rings");
        }
        let ring = Self {
            fd,
            map: map.cast(),
            rx_next: 0,
            tx_next: 0,
            queued: 0,
        };
        // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: a valid sockaddr_ll and its size.
        let rc = unsafe {
            libc::bind(
                raw,
                std::ptr::addr_of!(sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error()).with_context(|| format!("bind to {ifname}"));
        }
        Ok(ring)
    }

    /// The header of slot `i` of the receive ring (`tx` false) or the transmit ring.
    fn slot(&self, tx: bool, i: usize) -> *mut u8 {
        let base = if tx { FRAMES * FRAME_SIZE } else { 0 };
        // SAFETY: `i < FRAMES`, so the offset is inside the mapping.
        unsafe { self.map.add(base + i * FRAME_SIZE) }
    }

    fn header(&self, tx: bool, i: usize) -> &Tpacket2Hdr {
        // SAFETY: every slot starts with a tpacket2_hdr, 32-byte aligned in a page-aligned
        // mapping; the status word is only touched atomically.
        unsafe { &*self.slot(tx, i).cast::<Tpacket2Hdr>() }
    }

    /// Queues `frame` in the transmit ring; [`Ring::flush`] sends it. Fails when the ring
    /// is full (more than its slots queued without a flush) or the frame is too large.
    pub fn queue(&mut self, frame: &[u8]) -> anyhow::Result<()> {
        if frame.len() > FRAME_SIZE - TX_DATA_AT {
            bail!("a frame of {} bytes does not fit a ring slot", frame.len());
        }
        let i = self.tx_next;
        let status = self.header(true, i).status.load(Ordering::Acquire);
        if status & !TP_STATUS_WRONG_FORMAT != TP_STATUS_KERNEL {
            bail!("the transmit ring is full");
        }
        let slot = self.slot(true, i);
        // SAFETY: the slot is the process's (status available); the frame fits after the
        // header, as checked above.
        unsafe {
            std::ptr::copy_nonoverlapping(frame.as_ptr(), slot.add(TX_DATA_AT), frame.len());
            (*slot.cast::<Tpacket2Hdr>()).len = frame.len() as u32;
        }
        self.header(true, i)
            .status
            .store(TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.tx_next = (i + 1) % FRAMES;
        self.queued += 1;
        Ok(())
    }

    /// Sends every queued frame with one system call.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        if self.queued == 0 {
            return Ok(());
        }
        // SAFETY: send(2) with no buffer: the kernel takes the frames from the ring.
        let rc = unsafe { libc::send(self.fd.as_raw_fd(), std::ptr::null(), 0, 0) };
        if rc < 0 {
            return Err(io::Error::last_os_error()).context("send of the transmit ring");
        }
        self.queued = 0;
        Ok(())
    }

    /// Calls `f` with each frame waiting in the receive ring, handing each slot back after;
    /// returns how many there were.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) -> usize {
        let mut n = 0;
        loop {
            let i = self.rx_next;
            let h = self.header(false, i);
            if h.status.load(Ordering::Acquire) & TP_STATUS_USER == 0 {
                return n;
            }
            let (at, len) = (usize::from(h.mac), h.snaplen as usize);
            let len = len.min(FRAME_SIZE.saturating_sub(at));
            // SAFETY: the slot is the process's while TP_STATUS_USER is set; the frame lies
            // inside it (clamped above).
            let frame = unsafe { std::slice::from_raw_parts(self.slot(false, i).add(at), len) };
            f(frame);
            h.status.store(TP_STATUS_KERNEL, Ordering::Release);
            self.rx_next = (i + 1) % FRAMES;
            n += 1;
        }
    }

    /// Waits up to `timeout_ms` for a frame in the receive ring.
    pub fn wait(&self, timeout_ms: i32) -> anyhow::Result<()> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, valid for the call.
        if unsafe { libc::poll(&mut pfd, 1, timeout_ms) } < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err).context("poll");
            }
        }
        Ok(())
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, of that size, used by nothing after this.
        unsafe { libc::munmap(self.map.cast(), 2 * FRAMES * FRAME_SIZE) };
    }
}
