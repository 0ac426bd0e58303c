//! The few `bpf(2)` commands the responder needs, each with its part of `union bpf_attr`
//! (`include/uapi/linux/bpf.h`) laid out here as a `repr(C)` struct.
//!
//! Each struct is a prefix of the kernel's union: the kernel reads the size passed and
//! treats the rest as zero.

use std::ffi::CStr;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::asm::Insn;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;

const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type`'s `BPF_XDP`.
const BPF_XDP: u32 = 37;
/// `BPF_TCX_INGRESS` (Linux 6.6).
const BPF_TCX_INGRESS: u32 = 46;
/// `BPF_TCX_EGRESS` (Linux 6.6).
const BPF_TCX_EGRESS: u32 = 47;
/// `BPF_ANY`: create or replace.
const BPF_ANY: u64 = 0;
/// Generic XDP, run on the socket buffer in `netif_receive_skb` (`XDP_FLAGS_SKB_MODE`).
pub(crate) const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// The verifier's log of its walk through the program, for a refused one.
const LOG_LEVEL_VERBOSE: u32 = 1;

#[repr(C)]
#[derive(Default)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct MapElem {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct TestRun {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreate {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// `bpf(cmd, attr, sizeof attr)`.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised `repr(C)` prefix of `union bpf_attr` for `cmd`,
    // and its size is passed with it; every pointer inside it points at memory that
    // outlives the call, of the size stated beside it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut T).cast::<libc::c_void>(),
            size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The descriptor a `bpf(2)` command returned, owned (the kernel opens them close-on-exec).
fn owned(rc: libc::c_long) -> OwnedFd {
    // SAFETY: the command returned a fresh descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(rc as libc::c_int) }
}

fn name16(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    let n = name.len().min(15);
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    fd.as_raw_fd() as u32
}

/// A hash map of `max_entries` entries, preallocated.
pub(crate) fn create_hash_map(
    name: &str,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> io::Result<OwnedFd> {
    let mut attr = MapCreate {
        map_type: BPF_MAP_TYPE_HASH,
        key_size,
        value_size,
        max_entries,
        map_name: name16(name),
        ..Default::default()
    };
    bpf(BPF_MAP_CREATE, &mut attr).map(owned)
}

/// Creates or replaces the entry of `key`.
pub(crate) fn map_update(map: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> io::Result<()> {
    let mut attr = MapElem {
        map_fd: fd_u32(map),
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        flags: BPF_ANY,
        ..Default::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// Copies the entry of `key` into `value`; `ENOENT` if there is none.
pub(crate) fn map_lookup(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> io::Result<()> {
    let mut attr = MapElem {
        map_fd: fd_u32(map),
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        ..Default::default()
    };
    bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).map(drop)
}

/// Deletes the entry of `key`; `ENOENT` if there is none.
pub(crate) fn map_delete(map: BorrowedFd<'_>, key: &[u8]) -> io::Result<()> {
    let mut attr = MapElem {
        map_fd: fd_u32(map),
        key: key.as_ptr() as u64,
        ..Default::default()
    };
    bpf(BPF_MAP_DELETE_ELEM, &mut attr).map(drop)
}

/// What a program is, for the kernel: its type and where it is meant to be attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `BPF_PROG_TYPE_XDP`, for `BPF_XDP`.
    Xdp,
    /// `BPF_PROG_TYPE_SCHED_CLS`, for `BPF_TCX_EGRESS` (Linux 6.6).
    TcxEgress,
    /// `BPF_PROG_TYPE_SCHED_CLS`, for `BPF_TCX_INGRESS` (Linux 6.6).
    TcxIngress,
}

impl Kind {
    fn prog_type(self) -> u32 {
        match self {
            Kind::Xdp => BPF_PROG_TYPE_XDP,
            Kind::TcxEgress | Kind::TcxIngress => BPF_PROG_TYPE_SCHED_CLS,
        }
    }

    fn attach_type(self) -> u32 {
        match self {
            Kind::Xdp => BPF_XDP,
            Kind::TcxEgress => BPF_TCX_EGRESS,
            Kind::TcxIngress => BPF_TCX_INGRESS,
        }
    }
}

/// Loads a program of `kind`. If `log` is given, the verifier writes its log there.
pub(crate) fn load(
    kind: Kind,
    name: &str,
    insns: &[Insn],
    license: &CStr,
    log: Option<&mut [u8]>,
) -> io::Result<OwnedFd> {
    let code: Vec<u64> = insns.iter().map(|i| i.encode()).collect();
    let (log_level, log_size, log_buf) = match log {
        Some(buf) => (
            LOG_LEVEL_VERBOSE,
            u32::try_from(buf.len()).unwrap_or(u32::MAX),
            buf.as_mut_ptr() as u64,
        ),
        None => (0, 0, 0),
    };
    let mut attr = ProgLoad {
        prog_type: kind.prog_type(),
        insn_cnt: u32::try_from(code.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?,
        insns: code.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        prog_name: name16(name),
        expected_attach_type: kind.attach_type(),
        ..Default::default()
    };
    bpf(BPF_PROG_LOAD, &mut attr).map(owned)
}

/// Attaches a program of `kind` to `ifindex` with a BPF link (`flags`: XDP's mode): it stays
/// attached while the link's descriptor is open, and no longer. A tcx program goes after
/// those already there.
pub(crate) fn link(
    kind: Kind,
    prog: BorrowedFd<'_>,
    ifindex: u32,
    flags: u32,
) -> io::Result<OwnedFd> {
    let mut attr = LinkCreate {
        prog_fd: fd_u32(prog),
        target_ifindex: ifindex,
        attach_type: kind.attach_type(),
        flags,
    };
    bpf(BPF_LINK_CREATE, &mut attr).map(owned)
}

/// Runs a program once on `frame` (`BPF_PROG_TEST_RUN`); returns its action and the
/// length of the frame it left in `out`.
pub(crate) fn test_run(
    prog: BorrowedFd<'_>,
    frame: &[u8],
    out: &mut [u8],
) -> io::Result<(u32, usize)> {
    let too_big = || io::Error::from_raw_os_error(libc::E2BIG);
    let mut attr = TestRun {
        prog_fd: fd_u32(prog),
        data_size_in: u32::try_from(frame.len()).map_err(|_| too_big())?,
        data_size_out: u32::try_from(out.len()).map_err(|_| too_big())?,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ..Default::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok((attr.retval, attr.data_size_out as usize))
}
