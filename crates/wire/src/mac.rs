//! MAC addresses as people and Linux write them: six pairs of hex digits joined by colons,
//! `02:00:00:00:01:01`. The one place vmnap formats and parses them (smoltcp's
//! [`crate::MacAddr`], used on the wire, writes them with hyphens).

use core::fmt;
use core::str::FromStr;

/// A MAC address, written `02:00:00:00:01:01`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// True for a group (multicast or broadcast) address: the low bit of the first octet.
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 == 1
    }

    /// True for `00:00:00:00:00:00`.
    pub fn is_zero(self) -> bool {
        self.0 == [0; 6]
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// Text that is not six colon-separated pairs of hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a MAC address (want six hex pairs like 02:00:00:00:01:01)")]
pub struct NotAMac;

impl FromStr for Mac {
    type Err = NotAMac;

    /// Six pairs of hex digits, either case, joined by colons; nothing else.
    fn from_str(s: &str) -> Result<Mac, NotAMac> {
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for octet in &mut mac {
            let part = parts.next().ok_or(NotAMac)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(NotAMac);
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| NotAMac)?;
        }
        match parts.next() {
            None => Ok(Mac(mac)),
            Some(_) => Err(NotAMac),
        }
    }
}

impl From<[u8; 6]> for Mac {
    fn from(octets: [u8; 6]) -> Mac {
        Mac(octets)
    }
}

impl From<Mac> for [u8; 6] {
    fn from(mac: Mac) -> [u8; 6] {
        mac.0
    }
}

impl From<crate::MacAddr> for Mac {
    fn from(mac: crate::MacAddr) -> Mac {
        Mac(mac.0)
    }
}

impl From<Mac> for crate::MacAddr {
    fn from(mac: Mac) -> crate::MacAddr {
        crate::MacAddr(mac.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn written_with_colons_in_lower_case() {
        assert_eq!(
            Mac([0x02, 0xab, 0xcd, 0, 1, 0xff]).to_string(),
            "02:ab:cd:00:01:ff"
        );
    }

    #[test]
    fn read_in_either_case() {
        assert_eq!(
            "02:AB:cd:00:01:ff".parse(),
            Ok(Mac([0x02, 0xab, 0xcd, 0, 1, 0xff]))
        );
    }

    #[test]
    fn anything_but_six_pairs_is_refused() {
        for bad in [
            "",
            "02:00:00:00:01",
            "02:00:00:00:01:01:01",
            "2:0:0:0:1:1",
            "02-00-00-00-01-01",
            "02:00:00:00:01:0g",
            "02:00:00:00:01:+1",
            "02:00:00:00:01:01:",
            " 02:00:00:00:01:01",
        ] {
            assert_eq!(bad.parse::<Mac>(), Err(NotAMac), "{bad:?}");
        }
    }

    #[test]
    fn group_and_zero_addresses_are_told() {
        assert!(Mac([0x01, 0, 0x5e, 0, 0, 1]).is_multicast());
        assert!(Mac([0xff; 6]).is_multicast());
        assert!(!Mac([0x02, 0, 0, 0, 1, 1]).is_multicast());
        assert!(Mac([0; 6]).is_zero());
    }

    proptest! {
        #[test]
        fn what_is_written_reads_back(octets in any::<[u8; 6]>()) {
            let mac = Mac(octets);
            prop_assert_eq!(mac.to_string().parse::<Mac>(), Ok(mac));
        }

        #[test]
        fn no_text_panics(s in "\\PC{0,24}") {
            let _ = s.parse::<Mac>();
        }
    }
}
