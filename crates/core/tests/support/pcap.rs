//! Just enough of the classic pcap format (the one `tcpdump -w` writes) to read the fixture
//! captures and write the surrogate's answers out for Wireshark: the 24-byte global header,
//! then a 16-byte header before each frame. Ethernet link type only.
//!
//! Shared by the test crates of `vmnap-core` and `vmnap-wire` through `#[path]`.

#![allow(dead_code)]

/// `LINKTYPE_ETHERNET`.
pub const LINKTYPE_ETHERNET: u32 = 1;

/// One captured frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Capture time, microseconds since the Unix epoch.
    pub micros: u64,
    /// The frame, as much of it as was captured.
    pub bytes: Vec<u8>,
    /// The frame's length on the wire.
    pub orig_len: u32,
}

/// Reads a classic pcap file of Ethernet frames, in either byte order, with microsecond or
/// nanosecond timestamps.
pub fn read(file: &[u8]) -> Result<Vec<Record>, String> {
    let header = file
        .get(..24)
        .ok_or("shorter than the pcap global header")?;
    let magic = [header[0], header[1], header[2], header[3]];
    let (big, nanos) = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => (false, false),
        [0xa1, 0xb2, 0xc3, 0xd4] => (true, false),
        [0x4d, 0x3c, 0xb2, 0xa1] => (false, true),
        [0xa1, 0xb2, 0x3c, 0x4d] => (true, true),
        _ => return Err(format!("not a pcap file: magic {magic:02x?}")),
    };
    let u32_at = |b: &[u8], at: usize| {
        let v = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if big {
            u32::from_be_bytes(v)
        } else {
            u32::from_le_bytes(v)
        }
    };
    let linktype = u32_at(header, 20) & 0x0fff_ffff;
    if linktype != LINKTYPE_ETHERNET {
        return Err(format!("link type {linktype}, not Ethernet"));
    }
    let mut records = Vec::new();
    let mut at = 24;
    while at < file.len() {
        let rec = file
            .get(at..at + 16)
            .ok_or_else(|| format!("record header at {at} truncated"))?;
        let (secs, frac) = (u64::from(u32_at(rec, 0)), u64::from(u32_at(rec, 4)));
        let incl = u32_at(rec, 8) as usize;
        let orig_len = u32_at(rec, 12);
        let bytes = file
            .get(at + 16..at + 16 + incl)
            .ok_or_else(|| format!("record at {at} truncated"))?
            .to_vec();
        let micros = secs * 1_000_000 + if nanos { frac / 1000 } else { frac };
        records.push(Record {
            micros,
            bytes,
            orig_len,
        });
        at += 16 + incl;
    }
    Ok(records)
}

/// Writes `frames` (time in microseconds, bytes) as a little-endian microsecond pcap file.
pub fn write<'a>(frames: impl IntoIterator<Item = (u64, &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes()); // thiszone
    out.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    out.extend_from_slice(&262_144u32.to_le_bytes()); // snaplen
    out.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    for (micros, bytes) in frames {
        let len = u32::try_from(bytes.len()).expect("frames are far below 4 GiB");
        out.extend_from_slice(&((micros / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((micros % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}
