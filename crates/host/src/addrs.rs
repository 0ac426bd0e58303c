//! The host's own IP addresses, by interface, with their prefixes (`getifaddrs(3)`): what
//! a guest's address must never be (the bridge's own is the guests' gateway), and the
//! networks a bridge's guests live in.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One address of one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAddr {
    /// The interface's name.
    pub interface: String,
    /// The address.
    pub addr: IpAddr,
    /// Its prefix length.
    pub prefix: u8,
}

impl HostAddr {
    /// Whether `other` lies in this address's network.
    pub fn contains(&self, other: IpAddr) -> bool {
        match (self.addr, other) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

/// Every IPv4 and IPv6 address of every interface of this network namespace.
pub fn host_addrs() -> io::Result<Vec<HostAddr>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list it allocated to `list`, freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut at = list;
    while !at.is_null() {
        // SAFETY: `at` is a node of the list getifaddrs made, alive until freeifaddrs.
        let ifa = unsafe { &*at };
        at = ifa.ifa_next;
        // SAFETY: the name is a NUL-terminated string of the node; the address and mask,
        // when not null, are sockaddrs of the family the address says.
        let (name, addr, mask) = unsafe {
            if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
                continue;
            }
            let name = std::ffi::CStr::from_ptr(ifa.ifa_name)
                .to_string_lossy()
                .into_owned();
            (
                name,
                sockaddr_ip(ifa.ifa_addr),
                sockaddr_ip(ifa.ifa_netmask),
            )
        };
        let Some(addr) = addr else { continue };
        let prefix = match mask {
            Some(IpAddr::V4(m)) => u32::from(m).count_ones() as u8,
            Some(IpAddr::V6(m)) => u128::from(m).count_ones() as u8,
            None => {
                if addr.is_ipv4() {
                    32
                } else {
                    128
                }
            }
        };
        out.push(HostAddr {
            interface: name,
            addr,
            prefix,
        });
    }
    // SAFETY: the list getifaddrs made, freed once.
    unsafe { libc::freeifaddrs(list) };
    Ok(out)
}

/// The address of an `AF_INET` or `AF_INET6` sockaddr.
///
/// # Safety
/// `sa` is null or points to a sockaddr whose storage is as large as its family's.
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: the caller's promise; the family field is common to every sockaddr.
    match i32::from(unsafe { (*sa).sa_family }) {
        libc::AF_INET => {
            // SAFETY: an AF_INET sockaddr is a sockaddr_in.
            let sin = unsafe { &*(sa as *const libc::sockaddr_in) };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 => {
            // SAFETY: an AF_INET6 sockaddr is a sockaddr_in6.
            let sin6 = unsafe { &*(sa as *const libc::sockaddr_in6) };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_among_the_hosts_addresses_with_its_prefix() {
        let all = host_addrs().expect("getifaddrs");
        let lo = all
            .iter()
            .find(|a| a.addr == IpAddr::V4(Ipv4Addr::LOCALHOST))
            .expect("127.0.0.1");
        assert_eq!((lo.interface.as_str(), lo.prefix), ("lo", 8));
        assert!(lo.contains("127.1.2.3".parse().expect("ip")));
        assert!(!lo.contains("198.18.0.1".parse().expect("ip")));
    }

    #[test]
    fn networks_hold_the_addresses_of_their_prefix_only() {
        let net = |addr: &str, prefix| HostAddr {
            interface: "br0".into(),
            addr: addr.parse().expect("ip"),
            prefix,
        };
        let v4 = net("198.18.0.1", 24);
        assert!(v4.contains("198.18.0.200".parse().expect("ip")));
        assert!(!v4.contains("198.18.1.1".parse().expect("ip")));
        assert!(!v4.contains("2001:db8::1".parse().expect("ip")));
        let v6 = net("2001:db8::1", 64);
        assert!(v6.contains("2001:db8::abcd".parse().expect("ip")));
        assert!(!v6.contains("2001:db8:0:1::1".parse().expect("ip")));
        assert!(net("198.18.0.1", 0).contains("198.19.200.9".parse().expect("ip")));
    }
}
