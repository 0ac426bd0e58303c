// The harness of the `config` fuzz target, shared with `crates/config/tests/fuzz_seeds.rs`
// (both `include!` this file).
//
// Input: the text of a config file (bytes that are not UTF-8 are replaced by U+FFFD). It goes
// through `Config::parse`, as for a build with every backend, and through `Config::parse_for`
// as for a build without libvirt.
//
// Invariants checked besides "does not panic":
// - a refusal names the file first, then points inside the text (line and column from 1,
//   no line past the last), and says something;
// - a build without libvirt accepts no more than a full one, and what it accepts reads the
//   same;
// - an accepted config keeps the promises `vmnap_config`'s docs make about its values (guest
//   names unique and well formed, an address per guest, VLAN ids, queue limits, health
//   checks, idle settings, the port of a guest whose backend cannot find it).
// The config cannot be printed back to TOML, so there is no round trip to check.

use std::path::Path;

use vmnap_config::{
    BackendConfig, Builtin, Config, GuestConfig, HealthCheck, PortRule, Transport,
    MAX_HEALTH_BODY_LEN, MAX_IFNAME_LEN, MAX_NAME_LEN, MAX_VLAN, MIN_IDLE_INTERVAL,
    MIN_QUEUE_BYTES,
};

/// The path the text is said to come from, which every refusal must name.
pub const FILE: &str = "/etc/vmnap/fuzz.toml";

/// Runs one input; panics if an invariant breaks.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let path = Path::new(FILE);
    let full = Config::parse(&text, path);
    if let Err(e) = &full {
        let shown = e.to_string();
        assert!(
            shown.starts_with(&format!("{FILE}:")),
            "a refusal that does not start with the file: {shown}"
        );
        assert!(!e.message.is_empty(), "a refusal without a message");
        let lines = text.split('\n').count();
        if let Some(line) = e.line {
            assert!(
                (1..=lines).contains(&line),
                "line {line} of {lines}: {shown}"
            );
        }
        assert!(e.column.is_none_or(|c| c >= 1), "column 0: {shown}");
        assert!(
            e.column.is_none() || e.line.is_some(),
            "a column without a line: {shown}"
        );
        assert!(
            e.key.as_ref().is_none_or(|k| !k.is_empty()),
            "an empty key: {shown}"
        );
    }
    let without_libvirt = Config::parse_for(&text, path, Builtin { libvirt: false });
    if let Ok(smaller) = &without_libvirt {
        assert_eq!(
            full.as_ref().ok(),
            Some(smaller),
            "a build without libvirt accepts what a full one reads otherwise"
        );
    }
    if let Ok(config) = &full {
        check(config);
    }
}

/// The promises of an accepted config.
fn check(config: &Config) {
    assert!(config.idle.interval >= MIN_IDLE_INTERVAL);
    assert!(config.idle.cpu_percent.is_finite() && config.idle.cpu_percent > 0.0);
    assert!(config.idle.idle_after.is_none_or(|d| !d.is_zero()));
    assert!(config.api.socket.is_absolute());
    assert_eq!(config.api.listen.is_some(), config.api.token_file.is_some());
    if let Some(addr) = config.api.listen {
        assert!(addr.ip().is_loopback() || config.api.insecure_listen_without_tls);
    }
    assert!(config.state.dir.is_absolute());
    let defaults = &config.libvirt.defaults;
    if config.libvirt.discover.is_none() {
        assert_eq!(*defaults, Default::default(), "defaults without discovery");
    }
    policy(
        "libvirt.defaults",
        &defaults.wake_on,
        &defaults.keep_awake_while_connected,
        &defaults.health,
        (
            defaults.queue_frames,
            defaults.queue_bytes,
            defaults.multicast_frames,
        ),
        defaults.idle_after,
    );
    for (i, g) in config.guests.iter().enumerate() {
        guest(g);
        assert!(
            config.guests[..i].iter().all(|h| h.name != g.name),
            "guest name `{}` twice",
            g.name
        );
        assert_eq!(config.guest(&g.name).map(|h| &h.name), Some(&g.name));
        policy(
            &g.name,
            &g.wake_on,
            &g.keep_awake_while_connected,
            &g.health,
            (g.queue_frames, g.queue_bytes, g.multicast_frames),
            g.idle_after,
        );
    }
}

fn guest(g: &GuestConfig) {
    let name = &g.name;
    assert!(
        !name.is_empty() && name.len() <= MAX_NAME_LEN,
        "name `{name}`"
    );
    assert!(
        name.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')),
        "name `{name}`"
    );
    assert!(name != "." && name != "..");
    assert!(
        !(g.ipv4.is_empty() && g.ipv6.is_empty()),
        "{name} has no address"
    );
    assert!(g.vlan <= MAX_VLAN, "{name} on VLAN {}", g.vlan);
    for ifname in g.bridge.iter().chain(&g.interface) {
        assert!(
            !ifname.is_empty() && ifname.len() <= MAX_IFNAME_LEN,
            "`{ifname}`"
        );
    }
    if g.interface.is_some() {
        assert_ne!(g.interface, g.bridge, "{name}'s port is its bridge");
    }
    if let Some(mac) = g.mac {
        assert!(
            mac[0] & 1 == 0 && mac != [0; 6],
            "{name} has MAC {mac:02x?}"
        );
    }
    match &g.backend {
        BackendConfig::Libvirt { domain, .. } => assert!(!domain.is_empty()),
        BackendConfig::Cgroup { dir } => {
            assert!(dir.is_absolute());
            assert!(g.bridge.is_some() && g.interface.is_some() && g.mac.is_some());
        }
        BackendConfig::Qmp {
            socket,
            qemu_command,
            state_file,
            mode,
            agent,
        } => {
            assert!(socket.is_absolute());
            assert!(agent.as_ref().is_none_or(|a| a.is_absolute()));
            assert!(g.bridge.is_some() && g.interface.is_some() && g.mac.is_some());
            let save = *mode == vmnap_config::SleepMode::Save;
            assert_eq!(
                save,
                !qemu_command.is_empty(),
                "{name}: qemu_command and mode"
            );
            assert_eq!(save, state_file.is_some(), "{name}: state_file and mode");
        }
    }
}

/// The keys a guest and `[libvirt.defaults]` share.
fn policy(
    at: &str,
    wake_on: &[PortRule],
    keep_awake: &[PortRule],
    health: &[HealthCheck],
    (frames, bytes, multicast): (usize, usize, usize),
    idle_after: Option<Option<std::time::Duration>>,
) {
    assert!(frames >= 1, "{at}: queue_frames {frames}");
    assert!(bytes >= MIN_QUEUE_BYTES, "{at}: queue_bytes {bytes}");
    assert!(
        multicast <= frames,
        "{at}: multicast_frames {multicast} > {frames}"
    );
    assert!(
        idle_after.flatten().is_none_or(|d| !d.is_zero()),
        "{at}: idle_after 0"
    );
    for (list, rules) in [("wake_on", wake_on), ("keep_awake", keep_awake)] {
        for (j, r) in rules.iter().enumerate() {
            assert!(!rules[..j].contains(r), "{at}: {r} twice in {list}");
        }
    }
    assert!(keep_awake.iter().all(|r| r.transport == Transport::Tcp));
    for (j, h) in health.iter().enumerate() {
        assert!(
            h.port != 0 && (100..=599).contains(&h.status),
            "{at}: {h:?}"
        );
        assert!(h.path.starts_with('/') && h.body.len() <= MAX_HEALTH_BODY_LEN);
        assert!(
            health[..j].iter().all(|e| e.port != h.port),
            "{at}: port twice"
        );
        let rule = PortRule {
            transport: Transport::Tcp,
            port: h.port,
        };
        assert!(
            !wake_on.contains(&rule),
            "{at}: health check on a wake_on port"
        );
    }
}
