//! `AF_PACKET` sockets that read and write whole Ethernet frames with their virtio-net
//! header, on one interface.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use vmnap_wire::vlan::{insert_tag, TPID_8021Q};
use vmnap_wire::vnet::VirtioNetHdr;

/// Errors from opening a [`PacketSocket`].
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The interface name is empty, too long or has a NUL byte.
    #[error("Invalid interface name {0:?}")]
    InvalidName(String),
    /// No interface of that name exists in this network namespace.
    #[error("Could not find interface {ifname}")]
    NoSuchInterface {
        /// The interface.
        ifname: String,
        /// The error of the lookup.
        #[source]
        source: io::Error,
    },
    /// A socket call failed while setting up the socket.
    #[error("Could not set up a packet socket on {ifname}: {step} failed")]
    Setup {
        /// The interface.
        ifname: String,
        /// The step that failed (`socket`, `bind`, `PACKET_VNET_HDR`, ...).
        step: &'static str,
        /// The error of that step.
        #[source]
        source: io::Error,
    },
}

/// Errors from [`PacketSocket::recv`].
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    /// The frame did not fit the buffer; it has been consumed.
    #[error("Frame of {len} bytes on {ifname} truncated to a buffer of {capacity} bytes")]
    Truncated {
        /// The interface.
        ifname: String,
        /// The frame's length.
        len: usize,
        /// The room the buffer had for it.
        capacity: usize,
    },
    /// The buffer cannot hold even a minimal frame and a re-inserted tag.
    #[error("Receive buffer of {capacity} bytes for {ifname} is too small")]
    BufferTooSmall {
        /// The interface.
        ifname: String,
        /// The buffer's length.
        capacity: usize,
    },
    /// The link went down (or away) since the last read. The error is reported once; the
    /// socket receives again once the link is up.
    #[error("Link {ifname} went down")]
    LinkDown {
        /// The interface.
        ifname: String,
        /// `ENETDOWN`, or `ENODEV` if the link was deleted.
        #[source]
        source: io::Error,
    },
    /// The frame came without its virtio-net header.
    #[error("Frame on {ifname} came without its virtio-net header")]
    NoVnetHeader {
        /// The interface.
        ifname: String,
    },
    /// `recvmsg` failed.
    #[error("Could not read a frame from {ifname}")]
    Io {
        /// The interface.
        ifname: String,
        /// The error of `recvmsg`.
        #[source]
        source: io::Error,
    },
}

/// Errors from [`PacketSocket::send`].
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The queue stayed full for the whole wait.
    #[error("Could not send a frame of {len} bytes on {ifname}: queue full for {waited:?}")]
    QueueFull {
        /// The interface.
        ifname: String,
        /// The frame's length.
        len: usize,
        /// How long the send waited for room.
        waited: Duration,
    },
    /// `sendmsg` failed (`ENETDOWN`: link down; `EMSGSIZE`: larger than the MTU without GSO).
    #[error("Could not send a frame of {len} bytes on {ifname}")]
    Io {
        /// The interface.
        ifname: String,
        /// The frame's length.
        len: usize,
        /// The error of `sendmsg`.
        #[source]
        source: io::Error,
    },
    /// The kernel accepted fewer bytes than the frame holds.
    #[error("Short send on {ifname}: {sent} of {len} bytes")]
    Short {
        /// The interface.
        ifname: String,
        /// Bytes accepted, virtio-net header included.
        sent: usize,
        /// Bytes offered, virtio-net header included.
        len: usize,
    },
}

/// What [`PacketSocket::recv`] learnt about the frame it read.
#[derive(Debug, Clone, Copy)]
pub struct RecvMeta {
    /// Bytes of the frame written into the buffer (a stripped VLAN tag re-inserted).
    pub len: usize,
    /// Offloads of the frame (`NEEDS_CSUM`, GSO). When a tag was re-inserted,
    /// `csum_start` and `hdr_len` are already shifted by its 4 bytes.
    pub vnet: VirtioNetHdr,
    /// `sll_pkttype == PACKET_OUTGOING`: the frame leaves through this interface.
    pub outgoing: bool,
}

// uapi/linux/if_packet.h
const SOL_PACKET: libc::c_int = 263;
const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
const PACKET_AUXDATA: libc::c_int = 8;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_MR_PROMISC: libc::c_ushort = 1;
const PACKET_OUTGOING: u8 = 4;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
const ETH_P_ALL: u16 = 0x0003;
const RCVBUF: libc::c_int = 16 * 1024 * 1024;
/// How long `send` waits for room in a full queue.
const SEND_WAIT: Duration = Duration::from_millis(100);

/// `struct tpacket_auxdata`.
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

/// `struct packet_mreq`.
#[repr(C)]
struct PacketMreq {
    mr_ifindex: libc::c_int,
    mr_type: libc::c_ushort,
    mr_alen: libc::c_ushort,
    mr_address: [u8; 8],
}

/// An `AF_PACKET` socket bound to one interface, with `PACKET_VNET_HDR` on.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
    name: String,
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` points to a live `T` and its size is passed alongside it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (v as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The index of `ifname` in the calling thread's network namespace (`SIOCGIFINDEX`, not sysfs).
fn ifindex_of(ifname: &str) -> Result<u32, OpenError> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ {
        return Err(OpenError::InvalidName(ifname.to_owned()));
    }
    let c =
        std::ffi::CString::new(ifname).map_err(|_| OpenError::InvalidName(ifname.to_owned()))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(OpenError::NoSuchInterface {
            ifname: ifname.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(idx)
}

impl PacketSocket {
    fn open(ifname: &str, protocol: u16, capture: bool) -> Result<Self, OpenError> {
        let ifindex = ifindex_of(ifname)?;
        let fail = |step: &'static str, source: io::Error| OpenError::Setup {
            ifname: ifname.to_owned(),
            step,
            source,
        };
        // Protocol 0 at creation: the socket receives nothing until it is bound to the
        // interface, so no frame of another interface slips in.
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(fail("socket", io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        setsockopt(raw, SOL_PACKET, PACKET_VNET_HDR, &1 as &libc::c_int)
            .map_err(|e| fail("PACKET_VNET_HDR", e))?;
        if capture {
            setsockopt(raw, SOL_PACKET, PACKET_AUXDATA, &1 as &libc::c_int)
                .map_err(|e| fail("PACKET_AUXDATA", e))?;
            if setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &RCVBUF).is_err() {
                setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, &RCVBUF)
                    .map_err(|e| fail("SO_RCVBUF", e))?;
            }
        }
        // SAFETY: a zeroed sockaddr_ll is valid; the fields that matter are set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as libc::c_ushort;
        sll.sll_protocol = protocol.to_be();
        sll.sll_ifindex = ifindex as libc::c_int;
        // SAFETY: `sll` is a valid sockaddr_ll and its size is passed alongside it.
        let r = unsafe {
            libc::bind(
                raw,
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(fail("bind", io::Error::last_os_error()));
        }
        if capture {
            let mreq = PacketMreq {
                mr_ifindex: ifindex as libc::c_int,
                mr_type: PACKET_MR_PROMISC,
                mr_alen: 0,
                mr_address: [0; 8],
            };
            setsockopt(raw, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mreq)
                .map_err(|e| fail("PACKET_MR_PROMISC", e))?;
        }
        Ok(Self {
            fd,
            ifindex,
            name: ifname.to_owned(),
        })
    }

    /// Capture socket on interface `ifname`: `ETH_P_ALL`, bound to its ifindex,
    /// non-blocking, `PACKET_VNET_HDR` and `PACKET_AUXDATA` on, `PACKET_MR_PROMISC`
    /// membership (dropped when the socket closes), `SO_RCVBUFFORCE` 16 MiB (falling back
    /// to `SO_RCVBUF`).
    ///
    /// Frames this very socket sends are not returned (kernel design); frames sent by
    /// *another* socket on the same interface are, as outgoing.
    pub fn open_capture(ifname: &str) -> Result<Self, OpenError> {
        Self::open(ifname, ETH_P_ALL, true)
    }

    /// Send-only socket (protocol 0: receives nothing) bound to `ifname`, non-blocking,
    /// `PACKET_VNET_HDR` on.
    pub fn open_sender(ifname: &str) -> Result<Self, OpenError> {
        Self::open(ifname, 0, false)
    }

    /// The interface's index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The frames the kernel dropped for this socket since the last call (its receive
    /// buffer was full: the reader did not keep up), from `PACKET_STATISTICS`, which
    /// counts from zero again once read.
    pub fn take_drops(&self) -> io::Result<u64> {
        let mut stats = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `stats` is a live `tpacket_stats` and `len` its size, which the kernel
        // writes at most.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut stats as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(u64::from(stats.tp_drops))
    }

    /// Reads one frame into `buf` (give it at least `vmnap_wire::MAX_FRAME_LEN + 16`
    /// bytes). Returns `Ok(None)` when no frame is waiting.
    ///
    /// A VLAN tag that the kernel stripped into `PACKET_AUXDATA` is put back after the
    /// MACs, so the frame reads as it was on the wire; the virtio-net header's offsets are
    /// shifted to match. A frame larger than the buffer is consumed and reported as
    /// [`RecvError::Truncated`].
    pub fn recv(&self, buf: &mut [u8]) -> Result<Option<RecvMeta>, RecvError> {
        // Keep 4 bytes free for a tag to re-insert.
        let capacity = buf.len().saturating_sub(4);
        if capacity < 14 {
            return Err(RecvError::BufferTooSmall {
                ifname: self.name.clone(),
                capacity: buf.len(),
            });
        }
        let mut hdr = [0u8; VirtioNetHdr::LEN];
        let mut iov = [
            libc::iovec {
                iov_base: hdr.as_mut_ptr().cast(),
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: capacity,
            },
        ];
        // Room for one cmsg with tpacket_auxdata, 8-aligned.
        let mut control = [0u64; 8];
        let mut addr = MaybeUninit::<libc::sockaddr_ll>::zeroed();
        // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = addr.as_mut_ptr().cast();
        msg.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len() as _;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of::<[u64; 8]>() as _;
        // SAFETY: `msg` points at live buffers of the lengths it states.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_TRUNC) };
        if n < 0 {
            let source = io::Error::last_os_error();
            return match source.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
                Some(libc::ENETDOWN) | Some(libc::ENODEV) => Err(RecvError::LinkDown {
                    ifname: self.name.clone(),
                    source,
                }),
                _ => Err(RecvError::Io {
                    ifname: self.name.clone(),
                    source,
                }),
            };
        }
        let n = n as usize;
        if n < VirtioNetHdr::LEN {
            return Err(RecvError::NoVnetHeader {
                ifname: self.name.clone(),
            });
        }
        let len = n - VirtioNetHdr::LEN;
        if msg.msg_flags & libc::MSG_TRUNC != 0 || len > capacity {
            return Err(RecvError::Truncated {
                ifname: self.name.clone(),
                len,
                capacity,
            });
        }
        let mut vnet = VirtioNetHdr::parse(&hdr).map_err(|_| RecvError::NoVnetHeader {
            ifname: self.name.clone(),
        })?;
        // SAFETY: the kernel filled in the address (msg_name) for a packet socket.
        let addr = unsafe { addr.assume_init() };
        let outgoing = addr.sll_pkttype == PACKET_OUTGOING;

        let mut len = len;
        if let Some(aux) = auxdata(&msg) {
            if aux.tp_status & TP_STATUS_VLAN_VALID != 0 {
                let tpid = if aux.tp_status & TP_STATUS_VLAN_TPID_VALID != 0 {
                    aux.tp_vlan_tpid
                } else {
                    TPID_8021Q
                };
                // `buf` has the 4 bytes kept free above, so this only fails on runts.
                if let Some(tagged) = insert_tag(buf, len, tpid, aux.tp_vlan_tci) {
                    len = tagged;
                    if vnet.needs_checksum() {
                        vnet.csum_start = vnet.csum_start.saturating_add(4);
                    }
                    if vnet.hdr_len != 0 {
                        vnet.hdr_len = vnet.hdr_len.saturating_add(4);
                    }
                }
            }
        }
        Ok(Some(RecvMeta {
            len,
            vnet,
            outgoing,
        }))
    }

    /// Sends one frame with its virtio-net header ([`VirtioNetHdr::NONE`] for a complete
    /// frame).
    ///
    /// A first `ENETDOWN` (the error a socket keeps from a time its link was down) is
    /// retried once. On `EAGAIN`/`ENOBUFS` the call waits for room up to 100 ms, so a
    /// replay of thousands of frames drops none.
    pub fn send(&self, frame: &[u8], vnet: &VirtioNetHdr) -> Result<(), SendError> {
        let mut hdr = [0u8; VirtioNetHdr::LEN];
        vnet.emit(&mut hdr);
        let iov = [
            libc::iovec {
                iov_base: hdr.as_ptr() as *mut libc::c_void,
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: frame.as_ptr() as *mut libc::c_void,
                iov_len: frame.len(),
            },
        ];
        let total = hdr.len() + frame.len();
        let mut retried_down = false;
        let mut deadline: Option<Instant> = None;
        loop {
            // SAFETY: a zeroed msghdr is valid (no address: the socket is bound).
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = iov.len() as _;
            // SAFETY: the iovecs point at live buffers; the kernel only reads them.
            let n = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &msg, libc::MSG_DONTWAIT) };
            if n >= 0 {
                if n as usize != total {
                    return Err(SendError::Short {
                        ifname: self.name.clone(),
                        sent: n as usize,
                        len: total,
                    });
                }
                return Ok(());
            }
            let source = io::Error::last_os_error();
            match source.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ENETDOWN) if !retried_down => {
                    retried_down = true;
                    continue;
                }
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                    let now = Instant::now();
                    let until = *deadline.get_or_insert(now + SEND_WAIT);
                    if now >= until {
                        return Err(SendError::QueueFull {
                            ifname: self.name.clone(),
                            len: frame.len(),
                            waited: SEND_WAIT,
                        });
                    }
                    self.wait_writable();
                }
                _ => {
                    return Err(SendError::Io {
                        ifname: self.name.clone(),
                        len: frame.len(),
                        source,
                    })
                }
            }
        }
    }

    /// Waits a moment for room to send. `ENOBUFS` (device queue full) does not wake
    /// `poll`, so each wait is at most 1 ms and the caller retries.
    fn wait_writable(&self) {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, 1) };
    }
}

/// The `PACKET_AUXDATA` control message of a received frame.
fn auxdata(msg: &libc::msghdr) -> Option<TpacketAuxdata> {
    // SAFETY: `msg` was filled in by recvmsg; CMSG_FIRSTHDR/NXTHDR stay within msg_control.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !cmsg.is_null() {
        // SAFETY: `cmsg` is non-null and lies within the control buffer.
        let c = unsafe { &*cmsg };
        if c.cmsg_level == SOL_PACKET
            && c.cmsg_type == PACKET_AUXDATA
            && c.cmsg_len as usize
                // SAFETY: CMSG_LEN only computes a length.
                >= unsafe { libc::CMSG_LEN(size_of::<TpacketAuxdata>() as u32) } as usize
        {
            // SAFETY: the data holds a whole tpacket_auxdata (length checked above);
            // read_unaligned copes with any alignment.
            return Some(unsafe {
                std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<TpacketAuxdata>())
            });
        }
        // SAFETY: as for CMSG_FIRSTHDR.
        cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
    }
    None
}
