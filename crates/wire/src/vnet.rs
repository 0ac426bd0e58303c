//! The virtio-net header (`struct virtio_net_hdr`, 10 bytes) that Linux prepends to every
//! frame read from or written to an `AF_PACKET` socket with `PACKET_VNET_HDR` set.
//!
//! It carries the offloads a frame had inside the kernel: a checksum not yet computed
//! (`CHECKSUM_PARTIAL`, flag [`VirtioNetHdr::F_NEEDS_CSUM`]) and GSO segmentation of frames
//! larger than the MTU. The fields are in the host's byte order (legacy virtio on a
//! little-endian host).

/// Errors from parsing a virtio-net header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VnetError {
    /// Fewer than [`VirtioNetHdr::LEN`] bytes were given.
    #[error("virtio-net header truncated: {0} bytes")]
    Truncated(usize),
}

/// A parsed virtio-net header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct VirtioNetHdr {
    /// `VIRTIO_NET_HDR_F_*` flags.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*` type.
    pub gso_type: u8,
    /// Length of the headers in front of the GSO payload.
    pub hdr_len: u16,
    /// Segment size for GSO.
    pub gso_size: u16,
    /// Offset from the frame's start where checksumming starts.
    pub csum_start: u16,
    /// Offset from `csum_start` where the checksum is stored.
    pub csum_offset: u16,
}

impl VirtioNetHdr {
    /// The header's length on the wire.
    pub const LEN: usize = 10;
    /// The frame's transport checksum has not been computed yet.
    pub const F_NEEDS_CSUM: u8 = 1;
    /// The frame's checksum was verified by the kernel.
    pub const F_DATA_VALID: u8 = 2;
    /// No segmentation.
    pub const GSO_NONE: u8 = 0;
    /// TCP over IPv4 segmentation.
    pub const GSO_TCPV4: u8 = 1;
    /// UDP fragmentation.
    pub const GSO_UDP: u8 = 3;
    /// TCP over IPv6 segmentation.
    pub const GSO_TCPV6: u8 = 4;
    /// UDP segmentation (`UDP_L4`).
    pub const GSO_UDP_L4: u8 = 5;

    /// A header that asks for nothing: a complete frame with its checksums filled in.
    pub const NONE: Self = Self {
        flags: 0,
        gso_type: 0,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    /// Parses the first [`Self::LEN`] bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, VnetError> {
        let b = bytes
            .get(..Self::LEN)
            .ok_or(VnetError::Truncated(bytes.len()))?;
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Ok(Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    /// Writes the header into the first [`Self::LEN`] bytes of `out`.
    ///
    /// # Panics
    /// If `out` is shorter than [`Self::LEN`]; callers size their buffers with it.
    pub fn emit(&self, out: &mut [u8]) {
        out[0] = self.flags;
        out[1] = self.gso_type;
        out[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        out[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        out[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        out[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
    }

    /// The frame's transport checksum is not filled in yet and must not be verified.
    pub fn needs_checksum(&self) -> bool {
        self.flags & Self::F_NEEDS_CSUM != 0
    }

    /// The frame is a GSO frame that the kernel will segment on its way out.
    pub fn is_gso(&self) -> bool {
        self.gso_type & 0x7f != Self::GSO_NONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A TCPv4 GSO frame as read from a veth: NEEDS_CSUM, TCPV4, 66 header bytes, MSS 1448,
    // checksum at 34 + 16.
    #[cfg(target_endian = "little")]
    static BYTES: [u8; 10] = [0x01, 0x01, 0x42, 0x00, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00];

    #[cfg(target_endian = "little")]
    fn repr() -> VirtioNetHdr {
        VirtioNetHdr {
            flags: VirtioNetHdr::F_NEEDS_CSUM,
            gso_type: VirtioNetHdr::GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        }
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn parse_gso_header() {
        let hdr = VirtioNetHdr::parse(&BYTES).expect("10 bytes");
        assert_eq!(hdr, repr());
        assert!(hdr.needs_checksum());
        assert!(hdr.is_gso());
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn emit_gso_header() {
        let mut out = [0u8; 10];
        repr().emit(&mut out);
        assert_eq!(out, BYTES);
    }

    #[test]
    fn truncated_header_is_refused() {
        assert_eq!(VirtioNetHdr::parse(&[0; 9]), Err(VnetError::Truncated(9)));
    }

    #[test]
    fn none_asks_for_nothing() {
        assert!(!VirtioNetHdr::NONE.needs_checksum());
        assert!(!VirtioNetHdr::NONE.is_gso());
    }
}
