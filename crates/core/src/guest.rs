//! What the surrogate must know about a guest to stand in for it.

use core::fmt;
use core::str::FromStr;
use std::net::{Ipv4Addr, Ipv6Addr};

use vmnap_wire::MacAddr;

/// A guest's handle within one [`Surrogate`](crate::Surrogate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GuestId(pub(crate) u32);

impl GuestId {
    /// The number behind the handle.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Transport {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A port the guest serves, written `tcp/80` or `udp/9000`: a SYN or datagram to it wakes the
/// guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRule {
    /// TCP or UDP.
    pub transport: Transport,
    /// The port.
    pub port: u16,
}

impl fmt::Display for PortRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.transport, self.port)
    }
}

/// Why a string is not a [`PortRule`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParsePortRuleError {
    /// Not `tcp/N` or `udp/N`.
    #[error("`{0}` is not a port rule (want `tcp/N` or `udp/N`, like tcp/80)")]
    Syntax(String),
    /// The port is not in 1..=65535.
    #[error("port `{0}` is out of range (want 1..=65535)")]
    Port(String),
}

impl FromStr for PortRule {
    type Err = ParsePortRuleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || ParsePortRuleError::Syntax(s.to_string());
        let (transport, port) = s.split_once('/').ok_or_else(syntax)?;
        let transport = match transport {
            "tcp" => Transport::Tcp,
            "udp" => Transport::Udp,
            _ => return Err(syntax()),
        };
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax());
        }
        let port = match port.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(ParsePortRuleError::Port(port.to_string())),
        };
        Ok(PortRule { transport, port })
    }
}

/// Which requests the surrogate answers itself while the guest sleeps. `Default` answers
/// nothing; [`Answers::DEFAULT`] is what a guest gets when its config does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Answers {
    /// ARP requests for the guest's IPv4 addresses.
    pub arp: bool,
    /// Neighbour solicitations for the guest's IPv6 addresses.
    pub ndp: bool,
    /// ICMP and ICMPv6 echo requests.
    pub icmp_echo: bool,
    /// TCP echo on port 7.
    pub tcp_echo: bool,
    /// UDP echo on port 7.
    pub udp_echo: bool,
}

impl Answers {
    /// ARP, NDP and ping: what keeps a host looking alive.
    pub const DEFAULT: Self = Self {
        arp: true,
        ndp: true,
        icmp_echo: true,
        tcp_echo: false,
        udp_echo: false,
    };

    /// Every name accepted in a config's `answer` list, in the order of the fields.
    pub const NAMES: [&'static str; 5] = ["arp", "ndp", "icmp-echo", "tcp-echo", "udp-echo"];

    /// The flag for a name from [`Answers::NAMES`], or `None` for any other string.
    pub fn flag_mut(&mut self, name: &str) -> Option<&mut bool> {
        match name {
            "arp" => Some(&mut self.arp),
            "ndp" => Some(&mut self.ndp),
            "icmp-echo" => Some(&mut self.icmp_echo),
            "tcp-echo" => Some(&mut self.tcp_echo),
            "udp-echo" => Some(&mut self.udp_echo),
            _ => None,
        }
    }
}

/// What happens to broadcast and multicast frames while the guest sleeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MulticastPolicy {
    /// Hold them (up to [`QueueLimits::multicast_frames`]) and replay them on wake.
    #[default]
    Queue,
    /// Drop and count them.
    Drop,
}

/// How much of a guest's traffic the surrogate holds while it sleeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueueLimits {
    /// Frames held at most; past it the newest is dropped and the guest woken.
    pub frames: usize,
    /// Bytes held at most, counted as the frames' lengths.
    pub bytes: usize,
    /// Broadcast and multicast frames held at most; past it they are dropped, and they never
    /// wake the guest.
    pub multicast_frames: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            frames: 4096,
            bytes: 8 << 20,
            multicast_frames: 256,
        }
    }
}

/// An HTTP health check the surrogate answers while the guest sleeps, over a real TCP
/// connection and without waking the guest: `GET` or `HEAD` of `path` on TCP `port` gets
/// `status` and `body` as `text/plain`; another path gets `404 Not Found`, another method
/// `405 Method Not Allowed`, and the connection is closed after each answer.
///
/// The core takes the values as they are; the config layer checks them (a port in 1..=65535
/// and not also in `wake_on`, a path of visible ASCII starting with `/`, a status in
/// 100..=599, a short body).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    /// The TCP port the check arrives on.
    pub port: u16,
    /// The request path, like `/healthz`. A query string, in the request or here, is not
    /// part of the comparison.
    pub path: String,
    /// The HTTP status code of the answer, like 200.
    pub status: u16,
    /// The body of the answer.
    pub body: String,
}

/// A guest as the surrogate sees it: its addresses on one VLAN of one bridge, and its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestSpec {
    /// The guest's name, for logs.
    pub name: String,
    /// The guest's MAC.
    pub mac: MacAddr,
    /// The VLAN the guest is on (0: untagged).
    pub vlan: u16,
    /// The guest's IPv4 addresses.
    pub ipv4: Vec<Ipv4Addr>,
    /// The guest's IPv6 addresses.
    pub ipv6: Vec<Ipv6Addr>,
    /// The ports whose traffic wakes the guest.
    pub wake_on: Vec<PortRule>,
    /// What the surrogate answers itself.
    pub answers: Answers,
    /// What happens to broadcast and multicast.
    pub multicast: MulticastPolicy,
    /// Queue limits.
    pub limits: QueueLimits,
    /// HTTP health checks the surrogate answers while the guest sleeps, at most one per port.
    /// A TCP port is served by the first of: the echo service (port 7, when
    /// [`Answers::tcp_echo`]), a health check, [`GuestSpec::wake_on`].
    pub health: Vec<HealthCheck>,
}

impl GuestSpec {
    /// A guest with one IPv4 address and the default policy, for tests and examples.
    pub fn new(name: &str, mac: MacAddr, ipv4: Ipv4Addr) -> Self {
        Self {
            name: name.to_owned(),
            mac,
            vlan: 0,
            ipv4: vec![ipv4],
            ipv6: Vec::new(),
            wake_on: Vec::new(),
            answers: Answers::DEFAULT,
            multicast: MulticastPolicy::Queue,
            limits: QueueLimits::default(),
            health: Vec::new(),
        }
    }

    pub(crate) fn wakes_on(&self, transport: Transport, port: u16) -> bool {
        self.wake_on
            .iter()
            .any(|r| r.transport == transport && r.port == port)
    }
}
