//! What the surrogate did with a frame: the events the daemon counts.

/// The surrogate's decision about one frame, for one guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Answered in the guest's name, not queued.
    Answered(AnswerKind),
    /// Held for the guest, to be replayed on wake.
    Queued,
    /// Dropped by a policy.
    Dropped(DropReason),
    /// Not the surrogate's business.
    Ignored(IgnoreReason),
}

/// Which responder answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnswerKind {
    /// ARP reply.
    Arp,
    /// Neighbour advertisement.
    Ndp,
    /// ICMP echo reply.
    IcmpEcho,
    /// ICMPv6 echo reply.
    Icmpv6Echo,
    /// RST/ACK for a SYN to a port the guest does not serve.
    TcpReset,
    /// RST for a segment of a connection the guest does not have (data, a FIN, an ACK),
    /// which must not wake it.
    ConnectionReset,
    /// A segment of the TCP echo service.
    TcpEcho,
    /// UDP echo reply.
    UdpEcho,
    /// ACK answering a TCP keepalive probe.
    TcpKeepalive,
    /// A segment of an HTTP health check connection.
    HealthCheck,
}

impl AnswerKind {
    /// A label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerKind::Arp => "arp",
            AnswerKind::Ndp => "ndp",
            AnswerKind::IcmpEcho => "icmp-echo",
            AnswerKind::Icmpv6Echo => "icmpv6-echo",
            AnswerKind::TcpReset => "tcp-reset",
            AnswerKind::ConnectionReset => "connection-reset",
            AnswerKind::TcpEcho => "tcp-echo",
            AnswerKind::UdpEcho => "udp-echo",
            AnswerKind::TcpKeepalive => "tcp-keepalive",
            AnswerKind::HealthCheck => "health-check",
        }
    }
}

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The frame could not be parsed.
    Malformed,
    /// The guest's queue was full (frames or bytes).
    QueueFull,
    /// The guest's share of held broadcast and multicast frames was used up.
    MulticastQueueFull,
    /// The guest's policy drops broadcast and multicast while it sleeps.
    MulticastPolicy,
    /// A checksum the sender computed does not verify.
    BadChecksum,
    /// The TCP echo service has too many connections, or none for this segment.
    EchoRefused,
    /// The guest's health checks have too many connections open.
    HealthRefused,
    /// A RST for a connection the guest does not have.
    UnknownConnection,
    /// A fragment whose first fragment the guest was not sent.
    OrphanFragment,
    /// Unicast to the guest's MAC, for an IP address that is not the guest's.
    ForeignAddress,
    /// The bytes held for all guests together reached their budget.
    HoldBudget,
}

impl DropReason {
    /// A label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::QueueFull => "queue-full",
            DropReason::MulticastQueueFull => "multicast-queue-full",
            DropReason::MulticastPolicy => "multicast-policy",
            DropReason::EchoRefused => "echo-refused",
            DropReason::HealthRefused => "health-refused",
            DropReason::BadChecksum => "bad-checksum",
            DropReason::UnknownConnection => "unknown-connection",
            DropReason::OrphanFragment => "orphan-fragment",
            DropReason::ForeignAddress => "foreign-address",
            DropReason::HoldBudget => "hold-budget",
        }
    }
}

/// Why a frame was left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IgnoreReason {
    /// It is addressed to no guest that the surrogate stands in for now.
    NotForSleepingGuest,
    /// The guest's own port still gets (or again gets) this frame directly.
    GuestReceivesDirectly,
    /// The frame is one the surrogate sent (it came back through the bridge).
    OwnFrame,
}

/// Why a guest is being woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WakeCause {
    /// A TCP SYN to a port in `wake_on`.
    TcpSyn {
        /// The port.
        port: u16,
    },
    /// A UDP datagram to a port in `wake_on`.
    Udp {
        /// The port.
        port: u16,
    },
    /// A TCP segment carrying data or a FIN, on a connection the guest had.
    TcpData {
        /// The guest's port.
        port: u16,
    },
    /// An ARP request or neighbour solicitation the guest's policy does not let the
    /// surrogate answer.
    Resolution,
    /// Stopped, the guest still held work: a request its kernel took in just before, or an
    /// answer not acknowledged yet. It is woken again at once.
    InFlight,
    /// An operator asked.
    Requested,
    /// It had slept for its `max_sleep`: woken for its own upkeep (updates, backups), it may
    /// fall asleep again once idle.
    MaxSleep,
    /// One of its awake windows (`awake_during`) began.
    Window,
}

impl WakeCause {
    /// A label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            WakeCause::TcpSyn { .. } => "tcp-syn",
            WakeCause::Udp { .. } => "udp",
            WakeCause::TcpData { .. } => "tcp-data",
            WakeCause::Resolution => "resolution",
            WakeCause::InFlight => "in-flight",
            WakeCause::Requested => "requested",
            WakeCause::MaxSleep => "max-sleep",
            WakeCause::Window => "awake-window",
        }
    }
}
