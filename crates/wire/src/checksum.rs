//! Completing checksums the kernel left for hardware to fill in.
//!
//! A frame read from a veth or tap may carry a TCP or UDP checksum that was never computed
//! (`CHECKSUM_PARTIAL`): the checksum field holds only the pseudo-header sum, and the virtio
//! header says where the sum starts and where it goes. Such a frame, written into a guest's
//! port without the offload, is silently dropped by the guest; [`complete`] fills it in.

use crate::vnet::VirtioNetHdr;

/// Errors from completing a checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumError {
    /// The header points outside the frame.
    #[error("checksum offsets {start}+{offset} lie outside a frame of {len} bytes")]
    OutOfBounds {
        /// `csum_start`.
        start: usize,
        /// `csum_offset`.
        offset: usize,
        /// The frame's length.
        len: usize,
    },
}

/// The one's-complement sum of `data`, folded to 16 bits but not complemented.
pub fn ones_complement_sum(data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Fills in the checksum that `hdr` marks as not computed yet, and clears the mark.
///
/// Does nothing if `hdr` does not ask for a checksum.
pub fn complete(frame: &mut [u8], hdr: &mut VirtioNetHdr) -> Result<(), ChecksumError> {
    if !hdr.needs_checksum() {
        return Ok(());
    }
    let start = usize::from(hdr.csum_start);
    let offset = usize::from(hdr.csum_offset);
    let at = start + offset;
    if at + 2 > frame.len() {
        return Err(ChecksumError::OutOfBounds {
            start,
            offset,
            len: frame.len(),
        });
    }
    // The field holds the pseudo-header sum; summing over it includes it.
    let sum = !ones_complement_sum(&frame[start..]);
    // UDP sends a computed zero as 0xffff; for TCP the two are the same number.
    let sum = if sum == 0 { 0xffff } else { sum };
    frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    hdr.flags &= !VirtioNetHdr::F_NEEDS_CSUM;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{IpAddress, Ipv4Address, UdpPacket, UdpRepr};

    #[test]
    fn completed_partial_udp_checksum_verifies() {
        let src = Ipv4Address::new(198, 18, 0, 1);
        let dst = Ipv4Address::new(198, 18, 0, 11);
        let repr = UdpRepr {
            src_port: 4000,
            dst_port: 9000,
        };
        let payload = b"0000000042";
        let mut udp = vec![0u8; repr.header_len() + payload.len()];
        let mut packet = UdpPacket::new_unchecked(&mut udp[..]);
        repr.emit(
            &mut packet,
            &src.into(),
            &dst.into(),
            payload.len(),
            |p| p.copy_from_slice(payload),
            &ChecksumCapabilities::ignored(),
        );
        // What the kernel leaves for CHECKSUM_PARTIAL: the pseudo-header sum, uncomplemented.
        let len = udp.len() as u32;
        let pseudo = ones_complement_sum(
            &[
                &src.octets()[..],
                &dst.octets()[..],
                &[0, 17],
                &(len as u16).to_be_bytes(),
            ]
            .concat(),
        );
        udp[6..8].copy_from_slice(&pseudo.to_be_bytes());
        let mut hdr = VirtioNetHdr {
            flags: VirtioNetHdr::F_NEEDS_CSUM,
            csum_start: 0,
            csum_offset: 6,
            ..VirtioNetHdr::NONE
        };
        complete(&mut udp, &mut hdr).expect("offsets inside the datagram");
        assert!(!hdr.needs_checksum());
        let packet = UdpPacket::new_checked(&udp[..]).expect("valid UDP");
        assert!(packet.verify_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst)));
    }

    #[test]
    fn out_of_bounds_offsets_are_refused() {
        let mut hdr = VirtioNetHdr {
            flags: VirtioNetHdr::F_NEEDS_CSUM,
            csum_start: 10,
            csum_offset: 16,
            ..VirtioNetHdr::NONE
        };
        assert!(complete(&mut [0u8; 20], &mut hdr).is_err());
        assert!(hdr.needs_checksum());
    }

    #[test]
    fn frame_without_partial_checksum_is_left_alone() {
        let mut frame = [1u8, 2, 3];
        complete(&mut frame, &mut VirtioNetHdr::NONE.clone()).expect("nothing to do");
        assert_eq!(frame, [1, 2, 3]);
    }
}
