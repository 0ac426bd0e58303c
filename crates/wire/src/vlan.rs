//! The Ethernet header with at most one 802.1Q tag: the link layer as vmnap sees it on a
//! bridge port.
//!
//! smoltcp's `EthernetFrame` does not know VLAN tags, so this view reads the tag itself and
//! hands the payload on.

use smoltcp::wire::EthernetAddress;

/// The `TPID` of an 802.1Q tag.
pub const TPID_8021Q: u16 = 0x8100;

mod field {
    pub const DST: core::ops::Range<usize> = 0..6;
    pub const SRC: core::ops::Range<usize> = 6..12;
    pub const TYPE: core::ops::Range<usize> = 12..14;
    pub const TCI: core::ops::Range<usize> = 14..16;
    pub const INNER_TYPE: core::ops::Range<usize> = 16..18;
}

/// Errors from parsing an Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The frame is shorter than its header.
    #[error("frame of {0} bytes is shorter than its Ethernet header")]
    Truncated(usize),
}

/// A parsed Ethernet header, with its 802.1Q tag if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkRepr {
    /// Destination MAC.
    pub dst: EthernetAddress,
    /// Source MAC.
    pub src: EthernetAddress,
    /// The VLAN ID from an 802.1Q tag, or 0 for an untagged frame.
    pub vlan: u16,
    /// The top four bits of the tag's TCI (priority code point and drop eligibility), or
    /// `None` for an untagged frame. A tag with VLAN ID 0 (a priority tag) is still a tag.
    pub priority: Option<u8>,
    /// The ethertype of the payload (inside the tag, for a tagged frame).
    pub ethertype: u16,
}

impl LinkRepr {
    /// Parses the header at the start of `frame`.
    pub fn parse(frame: &[u8]) -> Result<Self, LinkError> {
        let truncated = || LinkError::Truncated(frame.len());
        let be16 = |r: core::ops::Range<usize>| {
            frame
                .get(r)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .ok_or_else(truncated)
        };
        let outer = be16(field::TYPE)?;
        let dst = EthernetAddress::from_bytes(&frame[field::DST]);
        let src = EthernetAddress::from_bytes(&frame[field::SRC]);
        if outer == TPID_8021Q {
            let tci = be16(field::TCI)?;
            Ok(Self {
                dst,
                src,
                vlan: tci & 0x0fff,
                priority: Some((tci >> 12) as u8),
                ethertype: be16(field::INNER_TYPE)?,
            })
        } else {
            Ok(Self {
                dst,
                src,
                vlan: 0,
                priority: None,
                ethertype: outer,
            })
        }
    }

    /// An untagged header, or one tagged with `vlan` (priority 0) if `vlan` is not 0.
    pub fn new(dst: EthernetAddress, src: EthernetAddress, vlan: u16, ethertype: u16) -> Self {
        let priority = (vlan != 0).then_some(0);
        Self {
            dst,
            src,
            vlan,
            priority,
            ethertype,
        }
    }

    /// The length of this header: 14 bytes, or 18 with a tag.
    pub fn header_len(&self) -> usize {
        if self.priority.is_some() || self.vlan != 0 {
            18
        } else {
            14
        }
    }

    /// Writes the header into the start of `out`; returns its length.
    ///
    /// # Panics
    /// If `out` is shorter than [`Self::header_len`].
    pub fn emit(&self, out: &mut [u8]) -> usize {
        out[field::DST].copy_from_slice(self.dst.as_bytes());
        out[field::SRC].copy_from_slice(self.src.as_bytes());
        if self.header_len() == 18 {
            out[field::TYPE].copy_from_slice(&TPID_8021Q.to_be_bytes());
            let tci = (u16::from(self.priority.unwrap_or(0) & 0x0f) << 12) | (self.vlan & 0x0fff);
            out[field::TCI].copy_from_slice(&tci.to_be_bytes());
            out[field::INNER_TYPE].copy_from_slice(&self.ethertype.to_be_bytes());
            18
        } else {
            out[field::TYPE].copy_from_slice(&self.ethertype.to_be_bytes());
            14
        }
    }

    /// The header of a reply: source and destination swapped, same VLAN and priority.
    pub fn reply(&self, ethertype: u16) -> Self {
        Self {
            dst: self.src,
            src: self.dst,
            ethertype,
            ..*self
        }
    }
}

/// Inserts an 802.1Q tag with `tci` after the MACs of an untagged `frame`, in place.
///
/// The kernel hands frames to `AF_PACKET` sockets with the tag stripped into
/// `PACKET_AUXDATA`; this puts it back. `frame` must have room for 4 more bytes after `len`.
/// Returns the new length, or `None` if the frame is too short or the buffer too small.
pub fn insert_tag(buf: &mut [u8], len: usize, tpid: u16, tci: u16) -> Option<usize> {
    if len < 12 || buf.len() < len + 4 {
        return None;
    }
    buf.copy_within(12..len, 16);
    buf[12..14].copy_from_slice(&tpid.to_be_bytes());
    buf[14..16].copy_from_slice(&tci.to_be_bytes());
    Some(len + 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    // An ARP request on VLAN 10, priority 0, captured on a bridge port.
    static TAGGED: [u8; 18] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst
        0x02, 0x00, 0x00, 0x00, 0x00, 0x63, // src
        0x81, 0x00, 0x00, 0x0a, // 802.1Q, VID 10
        0x08, 0x06, // ARP
    ];

    fn tagged_repr() -> LinkRepr {
        LinkRepr {
            dst: EthernetAddress::BROADCAST,
            src: EthernetAddress([0x02, 0, 0, 0, 0, 0x63]),
            vlan: 10,
            priority: Some(0),
            ethertype: 0x0806,
        }
    }

    #[test]
    fn deconstruct_tagged_header() {
        assert_eq!(u16::from_be_bytes([TAGGED[12], TAGGED[13]]), TPID_8021Q);
        assert_eq!(u16::from_be_bytes([TAGGED[14], TAGGED[15]]) & 0xfff, 10);
    }

    #[test]
    fn construct_tagged_header() {
        let mut out = [0u8; 18];
        out[0..6].copy_from_slice(&[0xff; 6]);
        out[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x63]);
        out[12..14].copy_from_slice(&TPID_8021Q.to_be_bytes());
        out[14..16].copy_from_slice(&10u16.to_be_bytes());
        out[16..18].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(out, TAGGED);
    }

    #[test]
    fn parse_tagged_header() {
        assert_eq!(LinkRepr::parse(&TAGGED), Ok(tagged_repr()));
        assert_eq!(tagged_repr().header_len(), 18);
    }

    #[test]
    fn emit_tagged_header() {
        let mut out = [0u8; 18];
        assert_eq!(tagged_repr().emit(&mut out), 18);
        assert_eq!(out, TAGGED);
    }

    #[test]
    fn untagged_header_round_trips() {
        let repr = LinkRepr {
            vlan: 0,
            priority: None,
            ..tagged_repr()
        };
        let mut out = [0u8; 14];
        assert_eq!(repr.emit(&mut out), 14);
        assert_eq!(LinkRepr::parse(&out), Ok(repr));
    }

    #[test]
    fn priority_tag_with_vlan_0_keeps_its_tag_and_drop_eligible_bit() {
        let mut frame = TAGGED;
        frame[14..16].copy_from_slice(&0x1000u16.to_be_bytes()); // DEI set, VID 0
        let repr = LinkRepr::parse(&frame).expect("tagged");
        assert_eq!(
            (repr.vlan, repr.priority, repr.header_len()),
            (0, Some(1), 18)
        );
        let mut out = [0u8; 18];
        assert_eq!(repr.emit(&mut out), 18);
        assert_eq!(out, frame);
    }

    #[test]
    fn truncated_tag_is_refused() {
        assert_eq!(
            LinkRepr::parse(&TAGGED[..15]),
            Err(LinkError::Truncated(15))
        );
        assert_eq!(
            LinkRepr::parse(&TAGGED[..13]),
            Err(LinkError::Truncated(13))
        );
    }

    #[test]
    fn insert_tag_restores_stripped_tag() {
        let mut buf = [0u8; 32];
        buf[..12].copy_from_slice(&TAGGED[..12]);
        buf[12..14].copy_from_slice(&[0x08, 0x06]);
        let len = insert_tag(&mut buf, 14, TPID_8021Q, 10).expect("room for the tag");
        assert_eq!(&buf[..len], &TAGGED[..]);
        assert_eq!(
            insert_tag(&mut buf, 14, TPID_8021Q, 10).map(|_| ()),
            Some(())
        );
        assert_eq!(insert_tag(&mut [0u8; 16], 14, TPID_8021Q, 10), None);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..40)) {
            let _ = LinkRepr::parse(&bytes);
        }
    }
}
