//! `Config::parse` and `Config::load` through the public API: what is accepted, the defaults,
//! and every refusal with its file, line, column and key.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;
use vmnap_config::{
    parse_duration, Answers, ApiConfig, AwakeWindows, BackendConfig, Builtin, Config, ConfigError,
    Discover, DomainSettings, GuestConfig, GuestDefaults, HealthCheck, IdleConfig, LibvirtConfig,
    MulticastPolicy, OnRestart, OnStop, PortRule, SleepMode, StateConfig, SurrogateConfig,
    Transport, WakeConfig, DEFAULT_LIBVIRT_URI, DEFAULT_SOCKET, DEFAULT_SOCKET_MODE,
    DEFAULT_STATE_DIR, EX_CONFIG, MAX_HEALTH_BODY_LEN,
};

const FILE: &str = "/etc/vmnap.toml";

/// A minimal valid guest. Line numbers: 1 `[[guest]]`, 2 name, 3 bridge, 4 interface, 5 mac,
/// 6 ipv4, 7 backend, 8 cgroup.
const BASE: &str = r#"[[guest]]
name = "web1"
bridge = "br0"
interface = "vg-web1"
mac = "02:00:00:00:01:01"
ipv4 = ["198.18.0.11"]
backend = "cgroup"
cgroup = "/sys/fs/cgroup/vmnap/web1"
"#;

/// A second valid guest that shares nothing with `BASE` but the bridge. Lines 9..=16 after
/// `BASE`: 9 `[[guest]]`, 10 name, 11 bridge, 12 interface, 13 mac, 14 ipv4, 15 backend,
/// 16 cgroup.
const SECOND: &str = r#"[[guest]]
name = "web2"
bridge = "br0"
interface = "vg-web2"
mac = "02:00:00:00:01:02"
ipv4 = ["198.18.0.12"]
backend = "cgroup"
cgroup = "/sys/fs/cgroup/vmnap/web2"
"#;

/// A minimal libvirt guest: MAC, bridge and tap come from the domain. Lines: 1 `[[guest]]`,
/// 2 name, 3 backend, 4 ipv4.
const LIBVIRT: &str = r#"[[guest]]
name = "web2"
backend = "libvirt"
ipv4 = ["198.18.0.12"]
"#;

/// A minimal QMP guest in mode `pause`. Lines: 1 `[[guest]]`, 2 name, 3 bridge, 4 interface,
/// 5 mac, 6 ipv4, 7 backend, 8 qmp.
const QMP: &str = r#"[[guest]]
name = "vm1"
bridge = "br0"
interface = "tap-vm1"
mac = "52:54:00:00:00:01"
ipv4 = ["198.18.0.21"]
backend = "qmp"
qmp = "/run/vmnap/vm1.qmp"
"#;

/// The keys `QMP` needs for mode `save`: lines 9 mode, 10 qemu_command, 11 state_file.
const SAVE: &str = r#"mode = "save"
qemu_command = ["qemu-system-x86_64", "-m", "256", "-qmp", "unix:/run/vmnap/vm1.qmp,server=on,wait=off"]
state_file = "/var/lib/vmnap/vm1.state"
"#;

/// A `[[guest.health]]` table for the guest above it, on port 8080. Lines after a guest of N
/// lines: N+1 `[[guest.health]]`, N+2 port, N+3 path.
const HEALTH: &str = r#"[[guest.health]]
port = 8080
path = "/healthz"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new(FILE))
}

fn ok(text: &str) -> Config {
    match parse(text) {
        Ok(c) => c,
        Err(e) => panic!("refused: {e}\n--- text ---\n{text}"),
    }
}

/// `text` with the line starting `key =` replaced by `line` (left blank if `line` is empty, so
/// that the lines after it keep their numbers).
fn set(text: &str, key: &str, line: &str) -> String {
    let prefix = format!("{key} =");
    let mut found = false;
    let out: Vec<&str> = text
        .lines()
        .map(|l| {
            if !found && l.starts_with(&prefix) {
                found = true;
                line
            } else {
                l
            }
        })
        .collect();
    assert!(found, "no `{key}` line");
    out.join("\n") + "\n"
}

/// `BASE` with the `key` line replaced.
fn base_with(key: &str, line: &str) -> String {
    set(BASE, key, line)
}

/// Asserts `text` is refused at `line`:`column` for `key`, with a message containing `needle`,
/// and that the rendering is `FILE:LINE:COL: KEY: MESSAGE`.
#[track_caller]
fn refused(text: &str, line: usize, column: usize, key: Option<&str>, needle: &str) -> ConfigError {
    let e = match parse(text) {
        Ok(c) => panic!("accepted: {c:?}\n--- text ---\n{text}"),
        Err(e) => e,
    };
    assert_eq!(e.file, PathBuf::from(FILE), "{e}");
    assert_eq!((e.line, e.column), (Some(line), Some(column)), "{e}");
    assert_eq!(e.key.as_deref(), key, "{e}");
    assert!(e.message.contains(needle), "{e}\nwant: {needle}");
    let prefix = match key {
        Some(k) => format!("{FILE}:{line}:{column}: {k}: "),
        None => format!("{FILE}:{line}:{column}: "),
    };
    assert_eq!(e.to_string(), format!("{prefix}{}", e.message));
    e
}

fn web1() -> GuestConfig {
    GuestConfig {
        name: "web1".into(),
        bridge: Some("br0".into()),
        interface: Some("vg-web1".into()),
        mac: Some([0x02, 0, 0, 0, 0x01, 0x01]),
        ipv4: vec![Ipv4Addr::new(198, 18, 0, 11)],
        ipv6: vec![],
        vlan: 0,
        backend: BackendConfig::Cgroup {
            dir: "/sys/fs/cgroup/vmnap/web1".into(),
        },
        wake_on: vec![],
        answer: Answers::DEFAULT,
        queue_frames: 4096,
        queue_bytes: 8_388_608,
        multicast: MulticastPolicy::Queue,
        multicast_frames: 256,
        idle_after: None,
        schedule: None,
        hooks: None,
        keep_awake_while_connected: vec![],
        health: vec![],
    }
}

// ---------------------------------------------------------------------------------------------
// Accepted files

#[test]
fn example_from_the_design_parses_to_the_expected_config() {
    let text = r#"
[api]
socket = "/run/vmnap/vmnap.sock"   # optional, this default

[[guest]]
name = "web1"
bridge = "br0"                 # the bridge the guest's port is on
interface = "vg-web1"          # the guest's port on that bridge (host side of its veth or tap)
mac = "02:00:00:00:01:01"
ipv4 = ["198.18.0.11"]         # optional, default []
ipv6 = ["2001:db8::11"]        # optional, default []
vlan = 0                       # optional; 0 or absent: untagged; 1..=4094 otherwise
backend = "cgroup"
cgroup = "/sys/fs/cgroup/unified/vmnap-test/web1"   # required when backend = "cgroup"
wake_on = ["tcp/80", "udp/9000"]   # optional, default []
answer = ["arp", "ndp", "icmp-echo", "tcp-echo", "udp-echo"]  # optional; default ["arp", "ndp", "icmp-echo"]
queue_frames = 4096            # optional, this default; >= 1
queue_bytes = 8388608          # optional, this default; >= 65600
multicast = "queue"            # optional: "queue" (default) or "drop"
multicast_frames = 256         # optional, this default
"#;
    let expected = Config {
        api: ApiConfig {
            socket: PathBuf::from("/run/vmnap/vmnap.sock"),
            ..ApiConfig::default()
        },
        guests: vec![GuestConfig {
            name: "web1".into(),
            bridge: Some("br0".into()),
            interface: Some("vg-web1".into()),
            mac: Some([0x02, 0x00, 0x00, 0x00, 0x01, 0x01]),
            ipv4: vec![Ipv4Addr::new(198, 18, 0, 11)],
            ipv6: vec![Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11)],
            vlan: 0,
            backend: BackendConfig::Cgroup {
                dir: PathBuf::from("/sys/fs/cgroup/unified/vmnap-test/web1"),
            },
            wake_on: vec![
                PortRule {
                    transport: Transport::Tcp,
                    port: 80,
                },
                PortRule {
                    transport: Transport::Udp,
                    port: 9000,
                },
            ],
            answer: Answers {
                arp: true,
                ndp: true,
                icmp_echo: true,
                tcp_echo: true,
                udp_echo: true,
            },
            queue_frames: 4096,
            queue_bytes: 8_388_608,
            multicast: MulticastPolicy::Queue,
            multicast_frames: 256,
            idle_after: None,
            schedule: None,
            hooks: None,
            keep_awake_while_connected: vec![],
            health: vec![],
        }],
        libvirt: LibvirtConfig::default(),
        idle: IdleConfig::default(),
        state: StateConfig::default(),
        surrogate: SurrogateConfig::default(),
        wake: WakeConfig::default(),
    };
    assert_eq!(ok(text), expected);
}

#[test]
fn example_file_parses() {
    let config = ok(include_str!("../example.toml"));
    assert_eq!(config.guests.len(), 4);
    assert_eq!(config.api.socket, PathBuf::from(DEFAULT_SOCKET));
    assert_eq!(config.libvirt.uri, DEFAULT_LIBVIRT_URI);
    assert_eq!(
        config.libvirt.discover,
        Some(Discover::Metadata("https://example.org/vmnap".into()))
    );
    assert_eq!(
        config.libvirt.defaults,
        GuestDefaults {
            wake_on: vec!["tcp/80".parse().unwrap()],
            ..GuestDefaults::default()
        }
    );
    assert_eq!(config.idle, IdleConfig::default());
    let web1 = config.guest("web1").expect("web1 is in example.toml");
    assert_eq!(
        web1.idle_after(&config.idle),
        Some(Duration::from_secs(1800))
    );
    assert_eq!(web1.health.len(), 1);
    let db1 = config.guest("db1").expect("db1 is in example.toml");
    assert_eq!(db1.vlan, 20);
    assert_eq!(db1.answer, Answers::DEFAULT);
    assert!(db1.ipv4.is_empty());
    let web2 = config.guest("web2").expect("web2 is in example.toml");
    assert_eq!(web2.backend.kind(), "libvirt");
    assert_eq!(web2.bridge, None);
    let vm1 = config.guest("vm1").expect("vm1 is in example.toml");
    assert_eq!(vm1.backend.mode(), Some(SleepMode::Save));
    assert_eq!(vm1.idle_after(&config.idle), None);
}

#[test]
fn optional_keys_take_their_defaults() {
    let config = ok(BASE);
    assert_eq!(config.api.socket, PathBuf::from(DEFAULT_SOCKET));
    assert_eq!(config.guests, vec![web1()]);
    let g = &config.guests[0];
    assert_eq!(
        g.answer,
        Answers {
            arp: true,
            ndp: true,
            icmp_echo: true,
            tcp_echo: false,
            udp_echo: false
        }
    );
    assert_eq!(g.multicast, MulticastPolicy::default());
}

#[test]
fn empty_file_is_a_config_with_no_guests() {
    assert_eq!(ok(""), Config::default());
    assert_eq!(ok("# nothing yet\n[api]\n"), Config::default());
    assert_eq!(
        ok("[api]\nsocket = \"/tmp/v.sock\"\n").api.socket,
        PathBuf::from("/tmp/v.sock")
    );
}

#[test]
fn explicit_empty_answer_answers_nothing() {
    let config = ok(&format!("{BASE}answer = []\n"));
    assert_eq!(config.guests[0].answer, Answers::default());
}

#[test]
fn ipv6_only_guest_is_accepted() {
    let config = ok(&base_with("ipv4", "ipv6 = [\"2001:db8::11\", \"fe80::1\"]"));
    assert!(config.guests[0].ipv4.is_empty());
    assert_eq!(config.guests[0].ipv6.len(), 2);
}

#[test]
fn guests_may_share_mac_and_addresses_on_different_vlans_or_bridges() {
    let second = set(
        &set(SECOND, "mac", "mac = \"02:00:00:00:01:01\""),
        "ipv4",
        "ipv4 = [\"198.18.0.11\"]",
    );
    let config = ok(&format!("{BASE}{second}vlan = 7\n"));
    assert_eq!(config.guests[1].vlan, 7);
    let other_bridge = set(&second, "bridge", "bridge = \"br1\"");
    ok(&format!("{BASE}{other_bridge}"));
}

#[test]
fn drop_policy_and_small_queues_are_accepted() {
    let text = format!(
        "{BASE}multicast = \"drop\"\nqueue_frames = 1\nqueue_bytes = 65600\nmulticast_frames = 0\n"
    );
    let g = &ok(&text).guests[0];
    assert_eq!(g.multicast, MulticastPolicy::Drop);
    assert_eq!(
        (g.queue_frames, g.queue_bytes, g.multicast_frames),
        (1, 65600, 0)
    );
}

#[test]
fn default_multicast_frames_shrinks_to_a_small_queue() {
    let g = &ok(&format!("{BASE}queue_frames = 10\n")).guests[0];
    assert_eq!(g.multicast_frames, 10);
}

#[test]
fn vlan_limits_are_accepted() {
    assert_eq!(ok(&format!("{BASE}vlan = 1\n")).guests[0].vlan, 1);
    assert_eq!(ok(&format!("{BASE}vlan = 4094\n")).guests[0].vlan, 4094);
}

#[test]
fn load_reads_the_file() {
    let path = std::env::temp_dir().join(format!("vmnap-config-test-{}.toml", std::process::id()));
    std::fs::write(&path, BASE).unwrap();
    let loaded = Config::load(&path);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(loaded.unwrap(), ok(BASE));
}

// ---------------------------------------------------------------------------------------------
// Refused: reading, syntax, shape

#[test]
fn unreadable_file_is_refused_without_a_location() {
    let path = Path::new("/nonexistent/vmnap-config-test.toml");
    let e = Config::load(path).unwrap_err();
    assert_eq!(e.file, path);
    assert_eq!((e.line, e.column, e.key.as_deref()), (None, None, None));
    assert!(
        e.to_string()
            .starts_with("/nonexistent/vmnap-config-test.toml: cannot read: "),
        "{e}"
    );
}

#[test]
fn toml_syntax_error_has_line_and_column() {
    let text = format!("{BASE}vlan = \n");
    let e = parse(&text).unwrap_err();
    assert_eq!(e.file, PathBuf::from(FILE));
    assert_eq!(e.line, Some(9), "{e}");
    assert!(e.column.is_some(), "{e}");
    assert!(e.to_string().starts_with("/etc/vmnap.toml:9:"), "{e}");
    assert!(!e.message.contains('\n'), "one line: {e:?}");
}

#[test]
fn duplicate_key_is_refused() {
    let e = parse(&format!("{BASE}name = \"again\"\n")).unwrap_err();
    assert_eq!(e.line, Some(9), "{e}");
    assert!(e.message.contains("duplicate key"), "{e}");
}

#[test]
fn unknown_key_in_a_guest_names_the_guest() {
    let text = format!("{BASE}{SECOND}queu_frames = 10\n");
    let e = refused(
        &text,
        17,
        1,
        Some("guest[1]"),
        "unknown key `queu_frames`; expected one of",
    );
    assert!(e.message.contains("`queue_frames`"), "{e}");
}

#[test]
fn unknown_top_level_key_is_refused() {
    refused(
        &format!("{BASE}[metrics]\nlisten = 1\n"),
        9,
        2,
        None,
        "unknown key `metrics`",
    );
}

#[test]
fn unknown_key_in_api_names_api() {
    refused(
        "[api]\nsockett = \"/x\"\n",
        2,
        1,
        Some("api"),
        "unknown key `sockett`",
    );
}

#[test]
fn unknown_key_in_an_inline_guest_is_refused() {
    let text = "guest = [{ name = \"a\", colour = \"red\" }]\n";
    refused(text, 1, 24, Some("guest[0]"), "unknown key `colour`");
}

#[test]
fn wrong_type_names_the_key() {
    refused(
        &format!("{BASE}vlan = \"ten\"\n"),
        9,
        8,
        Some("guest[0].vlan"),
        "invalid type: string \"ten\", expected an integer",
    );
    refused(
        &base_with("ipv4", "ipv4 = [\"198.18.0.11\", 5]"),
        6,
        24,
        Some("guest[0].ipv4[1]"),
        "invalid type",
    );
    refused("guest = 3\n", 1, 9, Some("guest"), "expected an array");
}

#[test]
fn missing_required_key_names_the_guest() {
    let text = format!("{BASE}{}", set(SECOND, "mac", ""));
    refused(&text, 9, 1, Some("guest[1]"), "missing key `mac`");
}

// ---------------------------------------------------------------------------------------------
// Refused: name

#[test]
fn empty_name_is_refused() {
    refused(
        &base_with("name", "name = \"\""),
        2,
        8,
        Some("guest[0].name"),
        "empty",
    );
}

#[test]
fn name_with_a_space_is_refused() {
    refused(
        &base_with("name", "name = \"web 1\""),
        2,
        8,
        Some("guest[0].name"),
        "contains ' '",
    );
}

#[test]
fn name_longer_than_64_is_refused() {
    let long = "a".repeat(65);
    refused(
        &base_with("name", &format!("name = \"{long}\"")),
        2,
        8,
        Some("guest[0].name"),
        "longer than 64",
    );
    ok(&base_with(
        "name",
        &format!("name = \"{}\"", "a".repeat(64)),
    ));
}

#[test]
fn dot_dot_name_is_refused() {
    refused(
        &base_with("name", "name = \"..\""),
        2,
        8,
        Some("guest[0].name"),
        "not a usable",
    );
}

#[test]
fn duplicate_name_is_refused() {
    let text = format!("{BASE}{}", set(SECOND, "name", "name = \"web1\""));
    refused(
        &text,
        10,
        8,
        Some("guest[1].name"),
        "`web1` is already the name of guest[0]",
    );
}

// ---------------------------------------------------------------------------------------------
// Refused: bridge and interface

#[test]
fn bridge_name_longer_than_15_bytes_is_refused() {
    refused(
        &base_with("bridge", "bridge = \"br-0123456789abc\""),
        3,
        10,
        Some("guest[0].bridge"),
        "longer than 15 bytes",
    );
}

#[test]
fn bridge_name_dot_is_refused() {
    refused(
        &base_with("bridge", "bridge = \".\""),
        3,
        10,
        Some("guest[0].bridge"),
        "not a valid",
    );
}

#[test]
fn interface_with_slash_is_refused() {
    refused(
        &base_with("interface", "interface = \"vg/web1\""),
        4,
        13,
        Some("guest[0].interface"),
        "contains '/'",
    );
}

#[test]
fn interface_with_whitespace_is_refused() {
    refused(
        &base_with("interface", "interface = \"vg web1\""),
        4,
        13,
        Some("guest[0].interface"),
        "contains ' '",
    );
}

#[test]
fn interface_that_is_the_bridge_is_refused() {
    refused(
        &base_with("interface", "interface = \"br0\""),
        4,
        13,
        Some("guest[0].interface"),
        "the bridge itself",
    );
}

#[test]
fn interface_of_two_guests_is_refused() {
    let text = format!(
        "{BASE}{}",
        set(SECOND, "interface", "interface = \"vg-web1\"")
    );
    refused(
        &text,
        12,
        13,
        Some("guest[1].interface"),
        "already the interface of guest[0]",
    );
}

// ---------------------------------------------------------------------------------------------
// Refused: mac

#[test]
fn short_mac_is_refused_with_the_documented_message() {
    // Two comment lines put `mac` on line 7, as in the documented example.
    let text = format!("# a\n# b\n{}", base_with("mac", "mac = \"02:00:00:00:01\""));
    let e = refused(&text, 7, 7, Some("guest[0].mac"), "is not a MAC address");
    assert_eq!(
        e.to_string(),
        "/etc/vmnap.toml:7:7: guest[0].mac: `02:00:00:00:01` is not a MAC address \
         (want six hex pairs like 02:00:00:00:01:01)"
    );
}

#[test]
fn mac_with_dashes_is_refused() {
    refused(
        &base_with("mac", "mac = \"02-00-00-00-01-01\""),
        5,
        7,
        Some("guest[0].mac"),
        "not a MAC address",
    );
}

#[test]
fn multicast_mac_is_refused() {
    refused(
        &base_with("mac", "mac = \"03:00:00:00:01:01\""),
        5,
        7,
        Some("guest[0].mac"),
        "multicast MAC",
    );
}

#[test]
fn all_zeros_mac_is_refused() {
    refused(
        &base_with("mac", "mac = \"00:00:00:00:00:00\""),
        5,
        7,
        Some("guest[0].mac"),
        "all-zeros",
    );
}

#[test]
fn duplicate_mac_on_the_same_bridge_and_vlan_is_refused() {
    let text = format!(
        "{BASE}{}",
        set(SECOND, "mac", "mac = \"02:00:00:00:01:01\"")
    );
    refused(
        &text,
        13,
        7,
        Some("guest[1].mac"),
        "02:00:00:00:01:01 is already the MAC address of guest[0] on bridge `br0` vlan 0",
    );
}

// ---------------------------------------------------------------------------------------------
// Refused: addresses

#[test]
fn bad_ipv4_is_refused() {
    refused(
        &base_with("ipv4", "ipv4 = [\"198.18.0.256\"]"),
        6,
        9,
        Some("guest[0].ipv4[0]"),
        "not an IPv4 address",
    );
}

#[test]
fn ipv6_in_the_ipv4_list_is_refused() {
    refused(
        &base_with("ipv4", "ipv4 = [\"2001:db8::1\"]"),
        6,
        9,
        Some("guest[0].ipv4[0]"),
        "not an IPv4 address",
    );
}

#[test]
fn unspecified_ipv4_is_refused() {
    refused(
        &base_with("ipv4", "ipv4 = [\"198.18.0.11\", \"0.0.0.0\"]"),
        6,
        24,
        Some("guest[0].ipv4[1]"),
        "unspecified",
    );
}

#[test]
fn multicast_ipv4_is_refused() {
    refused(
        &base_with("ipv4", "ipv4 = [\"224.0.0.1\"]"),
        6,
        9,
        Some("guest[0].ipv4[0]"),
        "multicast",
    );
}

#[test]
fn broadcast_ipv4_is_refused() {
    refused(
        &base_with("ipv4", "ipv4 = [\"255.255.255.255\"]"),
        6,
        9,
        Some("guest[0].ipv4[0]"),
        "broadcast",
    );
}

#[test]
fn bad_ipv6_is_refused() {
    refused(
        &format!("{BASE}ipv6 = [\"2001:db8::g\"]\n"),
        9,
        9,
        Some("guest[0].ipv6[0]"),
        "not an IPv6",
    );
}

#[test]
fn unspecified_ipv6_is_refused() {
    refused(
        &format!("{BASE}ipv6 = [\"::\"]\n"),
        9,
        9,
        Some("guest[0].ipv6[0]"),
        "unspecified",
    );
}

#[test]
fn multicast_ipv6_is_refused() {
    refused(
        &format!("{BASE}ipv6 = [\"ff02::1\"]\n"),
        9,
        9,
        Some("guest[0].ipv6[0]"),
        "multicast",
    );
}

#[test]
fn ipv4_of_another_guest_on_the_same_bridge_and_vlan_is_refused() {
    let text = format!("{BASE}{}", set(SECOND, "ipv4", "ipv4 = [\"198.18.0.11\"]"));
    refused(
        &text,
        14,
        9,
        Some("guest[1].ipv4[0]"),
        "`198.18.0.11` is already used by guest[0].ipv4[0] on bridge `br0` vlan 0",
    );
}

#[test]
fn ipv6_of_another_guest_is_refused_even_when_written_differently() {
    let text = format!("{BASE}ipv6 = [\"2001:db8::11\"]\n{SECOND}ipv6 = [\"2001:DB8:0::11\"]\n");
    refused(
        &text,
        18,
        9,
        Some("guest[1].ipv6[0]"),
        "already used by guest[0].ipv6[0]",
    );
}

#[test]
fn address_listed_twice_in_one_guest_is_refused() {
    refused(
        &base_with("ipv4", "ipv4 = [\"198.18.0.11\", \"198.18.0.11\"]"),
        6,
        24,
        Some("guest[0].ipv4[1]"),
        "already used by guest[0].ipv4[0]",
    );
}

#[test]
fn guest_without_an_address_is_refused() {
    let text = format!("{BASE}{}", set(SECOND, "ipv4", "ipv4 = []"));
    refused(&text, 9, 1, Some("guest[1]"), "guest `web2` has no address");
}

// ---------------------------------------------------------------------------------------------
// Refused: vlan

#[test]
fn vlan_4095_is_refused() {
    refused(
        &format!("{BASE}vlan = 4095\n"),
        9,
        8,
        Some("guest[0].vlan"),
        "not a VLAN id",
    );
}

#[test]
fn negative_vlan_is_refused() {
    refused(
        &format!("{BASE}vlan = -1\n"),
        9,
        8,
        Some("guest[0].vlan"),
        "not a VLAN id",
    );
}

// ---------------------------------------------------------------------------------------------
// Refused: wake_on

#[test]
fn wake_on_without_transport_is_refused() {
    refused(
        &format!("{BASE}wake_on = [\"tcp/80\", \"80\"]\n"),
        9,
        22,
        Some("guest[0].wake_on[1]"),
        "`80` is not a port rule",
    );
}

#[test]
fn wake_on_unknown_transport_is_refused() {
    refused(
        &format!("{BASE}wake_on = [\"sctp/80\"]\n"),
        9,
        12,
        Some("guest[0].wake_on[0]"),
        "not a port rule",
    );
}

#[test]
fn wake_on_port_zero_is_refused() {
    refused(
        &format!("{BASE}wake_on = [\"tcp/0\"]\n"),
        9,
        12,
        Some("guest[0].wake_on[0]"),
        "out of range",
    );
}

#[test]
fn wake_on_port_65536_is_refused() {
    refused(
        &format!("{BASE}wake_on = [\"udp/65536\"]\n"),
        9,
        12,
        Some("guest[0].wake_on[0]"),
        "out of range",
    );
    ok(&format!("{BASE}wake_on = [\"udp/65535\"]\n"));
}

#[test]
fn duplicate_wake_on_is_refused() {
    refused(
        &format!("{BASE}wake_on = [\"tcp/80\", \"udp/80\", \"tcp/80\"]\n"),
        9,
        32,
        Some("guest[0].wake_on[2]"),
        "`tcp/80` is already listed at guest[0].wake_on[0]",
    );
}

// ---------------------------------------------------------------------------------------------
// Refused: answer

#[test]
fn unknown_answer_is_refused() {
    refused(
        &format!("{BASE}answer = [\"arp\", \"dhcp\"]\n"),
        9,
        18,
        Some("guest[0].answer[1]"),
        "unknown answer `dhcp`; expected one of `arp`, `ndp`, `icmp-echo`, `tcp-echo`, `udp-echo`",
    );
}

#[test]
fn duplicate_answer_is_refused() {
    refused(
        &format!("{BASE}answer = [\"arp\", \"arp\"]\n"),
        9,
        18,
        Some("guest[0].answer[1]"),
        "`arp` is already listed at guest[0].answer[0]",
    );
}

#[test]
fn tcp_echo_with_wake_on_tcp_7_is_refused() {
    refused(
        &format!("{BASE}wake_on = [\"tcp/7\"]\nanswer = [\"tcp-echo\"]\n"),
        10,
        11,
        Some("guest[0].answer[0]"),
        "`tcp-echo` contradicts `tcp/7` in guest[0].wake_on[0]",
    );
}

#[test]
fn udp_echo_with_wake_on_udp_7_is_refused() {
    refused(
        &format!("{BASE}wake_on = [\"udp/7\"]\nanswer = [\"udp-echo\"]\n"),
        10,
        11,
        Some("guest[0].answer[0]"),
        "`udp-echo` contradicts `udp/7`",
    );
    // The other transport's port 7 is no contradiction.
    ok(&format!(
        "{BASE}wake_on = [\"tcp/7\"]\nanswer = [\"udp-echo\"]\n"
    ));
}

// ---------------------------------------------------------------------------------------------
// Refused: backend

#[test]
fn cgroup_backend_without_cgroup_is_refused() {
    refused(
        &base_with("cgroup", ""),
        7,
        11,
        Some("guest[0].backend"),
        "backend `cgroup` needs `cgroup`",
    );
}

#[test]
fn relative_cgroup_is_refused() {
    refused(
        &base_with("cgroup", "cgroup = \"vmnap/web1\""),
        8,
        10,
        Some("guest[0].cgroup"),
        "`vmnap/web1` is not an absolute path",
    );
}

#[test]
fn cgroup_with_another_backend_is_refused() {
    refused(
        &base_with("backend", "backend = \"libvirt\""),
        8,
        10,
        Some("guest[0].cgroup"),
        "`cgroup` is only for backend `cgroup`, not `libvirt`",
    );
}

#[test]
fn unknown_backend_is_refused() {
    let text = set(&base_with("backend", "backend = \"xen\""), "cgroup", "");
    refused(
        &text,
        7,
        11,
        Some("guest[0].backend"),
        "unknown backend `xen`",
    );
}

// ---------------------------------------------------------------------------------------------
// A build without the `libvirt` feature

const NO_LIBVIRT: Builtin = Builtin { libvirt: false };

#[test]
fn libvirt_guest_is_refused_by_a_build_without_libvirt_at_its_backend_key() {
    let text = format!("{BASE}{LIBVIRT}");
    let e = Config::parse_for(&text, Path::new(FILE), NO_LIBVIRT).expect_err("refused");
    assert_eq!((e.line, e.column), (Some(11), Some(11)), "{e}");
    assert_eq!(e.key.as_deref(), Some("guest[1].backend"), "{e}");
    assert!(
        e.message.contains("backend `libvirt` is not in this build")
            && e.message.contains("cargo feature `libvirt`")
            && e.message.contains("`backend = \"qmp\"`"),
        "{e}"
    );
    // The same text is fine for a build that has it, and so are other backends without it.
    assert!(Config::parse_for(&text, Path::new(FILE), Builtin::ALL).is_ok());
    assert!(Config::parse_for(&format!("{BASE}{QMP}"), Path::new(FILE), NO_LIBVIRT).is_ok());
}

#[test]
fn libvirt_discovery_is_refused_by_a_build_without_libvirt() {
    let text = "[libvirt]\ndiscover = \"all\"\n";
    let e = Config::parse_for(text, Path::new(FILE), NO_LIBVIRT).expect_err("refused");
    assert_eq!((e.line, e.column), (Some(2), Some(12)), "{e}");
    assert_eq!(e.key.as_deref(), Some("libvirt.discover"), "{e}");
    assert!(
        e.message.contains("cannot discover libvirt domains")
            && e.message.contains("cargo feature `libvirt`"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// Refused: queues and multicast

#[test]
fn zero_queue_frames_is_refused() {
    refused(
        &format!("{BASE}queue_frames = 0\n"),
        9,
        16,
        Some("guest[0].queue_frames"),
        "want at least 1",
    );
}

#[test]
fn queue_bytes_below_one_gso_frame_is_refused() {
    refused(
        &format!("{BASE}queue_bytes = 65599\n"),
        9,
        15,
        Some("guest[0].queue_bytes"),
        "want at least 65600",
    );
}

#[test]
fn multicast_frames_above_queue_frames_is_refused() {
    refused(
        &format!("{BASE}queue_frames = 100\nmulticast_frames = 101\n"),
        10,
        20,
        Some("guest[0].multicast_frames"),
        "101 is more than queue_frames (100)",
    );
}

#[test]
fn negative_multicast_frames_is_refused() {
    refused(
        &format!("{BASE}multicast_frames = -1\n"),
        9,
        20,
        Some("guest[0].multicast_frames"),
        "too small",
    );
}

#[test]
fn unknown_multicast_policy_is_refused() {
    refused(
        &format!("{BASE}multicast = \"flood\"\n"),
        9,
        13,
        Some("guest[0].multicast"),
        "unknown multicast policy `flood`; expected `queue` or `drop`",
    );
}

// ---------------------------------------------------------------------------------------------
// Refused: api

#[test]
fn relative_api_socket_is_refused() {
    refused(
        "[api]\nsocket = \"vmnap.sock\"\n",
        2,
        10,
        Some("api.socket"),
        "`vmnap.sock` is not an absolute path",
    );
}

#[test]
fn api_socket_too_long_for_bind_is_refused() {
    let long = format!("/{}", "s".repeat(107));
    refused(
        &format!("[api]\nsocket = \"{long}\"\n"),
        2,
        10,
        Some("api.socket"),
        "longer than 107 bytes",
    );
}

#[test]
fn api_listen_with_token_file_and_socket_mode_are_read() {
    let config = ok("[api]\nsocket = \"/run/v.sock\"\nsocket_mode = \"0660\"\n\
                     listen = \"127.0.0.1:7070\"\ntoken_file = \"/etc/vmnap/token\"\n");
    assert_eq!(
        config.api,
        ApiConfig {
            socket: PathBuf::from("/run/v.sock"),
            socket_mode: 0o660,
            listen: Some("127.0.0.1:7070".parse().unwrap()),
            token_file: Some(PathBuf::from("/etc/vmnap/token")),
            insecure_listen_without_tls: false,
            tls: None,
        }
    );
    // A port alone is on 127.0.0.1.
    assert_eq!(
        ok("[api]\nlisten = \"7070\"\ntoken_file = \"/t\"\n")
            .api
            .listen,
        Some("127.0.0.1:7070".parse().unwrap())
    );
    assert_eq!(
        ok("[api]\nlisten = \"[::1]:7070\"\ntoken_file = \"/t\"\n")
            .api
            .listen,
        Some("[::1]:7070".parse().unwrap())
    );
}

#[test]
fn api_defaults_to_the_socket_alone_mode_0600() {
    let api = ok("").api;
    assert_eq!(api.socket_mode, DEFAULT_SOCKET_MODE);
    assert_eq!(api.socket_mode, 0o600);
    assert_eq!((api.listen, api.token_file), (None, None));
}

#[test]
fn api_listen_beyond_loopback_needs_the_insecure_opt_out() {
    for addr in [
        "0.0.0.0:7070",
        "198.18.0.1:7070",
        "[::]:7070",
        "[2001:db8::1]:7070",
    ] {
        refused(
            &format!("[api]\nlisten = \"{addr}\"\ntoken_file = \"/t\"\n"),
            2,
            10,
            Some("api.listen"),
            "is not a loopback address: set tls_cert and tls_key",
        );
    }
    let api = ok("[api]\nlisten = \"0.0.0.0:7070\"\ntoken_file = \"/t\"\n\
                  insecure_listen_without_tls = true\n")
    .api;
    assert_eq!(api.listen, Some("0.0.0.0:7070".parse().unwrap()));
    assert!(api.insecure_listen_without_tls);
    // false is no opt-out.
    refused(
        "[api]\nlisten = \"0.0.0.0:7070\"\ntoken_file = \"/t\"\ninsecure_listen_without_tls = false\n",
        2,
        10,
        Some("api.listen"),
        "not a loopback address",
    );
}

#[test]
fn api_listen_without_token_file_is_refused() {
    refused(
        "[api]\nlisten = \"127.0.0.1:7070\"\n",
        2,
        10,
        Some("api.listen"),
        "`listen` needs `token_file`",
    );
}

#[test]
fn api_token_file_without_listen_is_refused() {
    refused(
        "[api]\ntoken_file = \"/etc/vmnap/token\"\n",
        2,
        14,
        Some("api.token_file"),
        "used only with `listen`",
    );
}

#[test]
fn api_relative_token_file_is_refused() {
    refused(
        "[api]\nlisten = \"127.0.0.1:7070\"\ntoken_file = \"token\"\n",
        3,
        14,
        Some("api.token_file"),
        "`token` is not an absolute path",
    );
}

#[test]
fn api_listen_that_is_not_an_address_and_port_is_refused() {
    for bad in [
        "127.0.0.1",
        "localhost:7070",
        "127.0.0.1:http",
        "127.0.0.1:70000",
        "",
    ] {
        refused(
            &format!("[api]\nlisten = \"{bad}\"\ntoken_file = \"/t\"\n"),
            2,
            10,
            Some("api.listen"),
            "is not an address and port",
        );
    }
    refused(
        "[api]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"/t\"\n",
        2,
        10,
        Some("api.listen"),
        "port 0",
    );
}

#[test]
fn api_socket_mode_must_be_octal_owner_rw_and_closed_to_others() {
    for bad in ["rw", "0800", "600 ", "", "01777", "7777"] {
        refused(
            &format!("[api]\nsocket_mode = \"{bad}\"\n"),
            2,
            15,
            Some("api.socket_mode"),
            "is not a permission mode",
        );
    }
    refused(
        "[api]\nsocket_mode = \"0400\"\n",
        2,
        15,
        Some("api.socket_mode"),
        "read and write",
    );
    refused(
        "[api]\nsocket_mode = \"0666\"\n",
        2,
        15,
        Some("api.socket_mode"),
        "every user",
    );
    refused(
        "[api]\nsocket_mode = 384\n",
        2,
        15,
        Some("api.socket_mode"),
        "expected a string",
    );
    assert_eq!(ok("[api]\nsocket_mode = \"640\"\n").api.socket_mode, 0o640);
    assert_eq!(
        ok("[api]\nsocket_mode = \"0o600\"\n").api.socket_mode,
        0o600
    );
}

// ---------------------------------------------------------------------------------------------
// [state]

#[test]
fn state_defaults_when_absent() {
    let state = ok("").state;
    assert_eq!(
        state,
        StateConfig {
            dir: PathBuf::from(DEFAULT_STATE_DIR),
            on_restart: OnRestart::StandIn,
            on_stop: OnStop::Wake,
        }
    );
    assert_eq!(state.dir, PathBuf::from("/var/lib/vmnap"));
    assert_eq!(ok("[state]\n").state, StateConfig::default());
}

#[test]
fn state_keys_are_read() {
    let state =
        ok("[state]\ndir = \"/srv/vmnap\"\non_restart = \"wake\"\non_stop = \"keep-asleep\"\n")
            .state;
    assert_eq!(
        state,
        StateConfig {
            dir: PathBuf::from("/srv/vmnap"),
            on_restart: OnRestart::Wake,
            on_stop: OnStop::KeepAsleep,
        }
    );
    assert_eq!(state.on_restart.as_str(), "wake");
    assert_eq!(state.on_stop.as_str(), "keep-asleep");
    let state = ok("[state]\non_restart = \"stand-in\"\non_stop = \"wake\"\n").state;
    assert_eq!(
        (state.on_restart, state.on_stop),
        (OnRestart::StandIn, OnStop::Wake)
    );
}

#[test]
fn state_relative_dir_is_refused() {
    refused(
        "[state]\ndir = \"state\"\n",
        2,
        7,
        Some("state.dir"),
        "`state` is not an absolute path",
    );
}

#[test]
fn state_unknown_actions_are_refused() {
    refused(
        "[state]\non_restart = \"sleep\"\n",
        2,
        14,
        Some("state.on_restart"),
        "unknown action `sleep`; expected `stand-in` or `wake`",
    );
    refused(
        "[state]\non_stop = \"stand-in\"\n",
        2,
        11,
        Some("state.on_stop"),
        "unknown action `stand-in`; expected `wake` or `keep-asleep`",
    );
}

#[test]
fn state_unknown_key_names_state() {
    refused(
        "[state]\non_crash = \"wake\"\n",
        2,
        1,
        Some("state"),
        "unknown key `on_crash`",
    );
}

#[test]
fn surrogate_in_kernel_defaults_to_true_and_is_read() {
    assert!(ok("").surrogate.in_kernel);
    assert!(ok("[surrogate]\n").surrogate.in_kernel);
    assert!(!ok("[surrogate]\nin_kernel = false\n").surrogate.in_kernel);
    assert!(ok(include_str!("../example.toml")).surrogate.in_kernel);
}

#[test]
fn surrogate_in_kernel_at_every_port_is_off_by_default_and_needs_in_kernel() {
    assert!(!ok("").surrogate.in_kernel_at_every_port);
    assert!(
        !ok(include_str!("../example.toml"))
            .surrogate
            .in_kernel_at_every_port
    );
    assert!(
        ok("[surrogate]
in_kernel_at_every_port = true
")
        .surrogate
        .in_kernel_at_every_port
    );
    refused(
        "[surrogate]
in_kernel = false
in_kernel_at_every_port = true
",
        3,
        27,
        Some("surrogate.in_kernel_at_every_port"),
        "needs `in_kernel = true`",
    );
}

#[test]
fn surrogate_bad_keys_are_refused() {
    refused(
        "[surrogate]\nin_kernel = \"yes\"\n",
        2,
        13,
        Some("surrogate.in_kernel"),
        "invalid type: string \"yes\", expected a boolean",
    );
    refused(
        "[surrogate]\nxdp = true\n",
        2,
        1,
        Some("surrogate"),
        "unknown key `xdp`",
    );
}

// ---------------------------------------------------------------------------------------------
// Libvirt and QMP guests, idleness and health checks: accepted

#[test]
fn example_from_issue_3_parses_to_the_expected_config() {
    let text = r#"
[libvirt]
uri = "qemu:///system"

[idle]
interval = "5s"            # sampling interval
cpu_percent = 2.0          # below this share of one core counts as idle
idle_after = "10m"         # default for every guest

[[guest]]
name = "web2"
backend = "libvirt"
domain = "web2"            # libvirt domain name; MAC, bridge and tap come from its XML
mode = "pause"             # or "save"
ipv4 = ["198.18.0.12"]
wake_on = ["tcp/80", "tcp/22"]
answer = ["arp", "ndp", "icmp-echo"]
idle_after = "30s"
"#;
    let tcp = |port| PortRule {
        transport: Transport::Tcp,
        port,
    };
    let expected = Config {
        api: ApiConfig::default(),
        libvirt: LibvirtConfig {
            uri: "qemu:///system".into(),
            ..LibvirtConfig::default()
        },
        idle: IdleConfig {
            interval: Duration::from_secs(5),
            cpu_percent: 2.0,
            idle_after: Some(Duration::from_secs(600)),
            min_awake: Duration::ZERO,
            max_sleep: None,
            awake_during: AwakeWindows::default(),
            timezone: None,
        },
        state: StateConfig::default(),
        surrogate: SurrogateConfig::default(),
        wake: WakeConfig::default(),
        guests: vec![GuestConfig {
            name: "web2".into(),
            bridge: None,
            interface: None,
            mac: None,
            ipv4: vec![Ipv4Addr::new(198, 18, 0, 12)],
            ipv6: vec![],
            vlan: 0,
            backend: BackendConfig::Libvirt {
                domain: "web2".into(),
                mode: SleepMode::Pause,
            },
            wake_on: vec![tcp(80), tcp(22)],
            answer: Answers::DEFAULT,
            queue_frames: 4096,
            queue_bytes: 8_388_608,
            multicast: MulticastPolicy::Queue,
            multicast_frames: 256,
            idle_after: Some(Some(Duration::from_secs(30))),
            schedule: None,
            hooks: None,
            keep_awake_while_connected: vec![],
            health: vec![],
        }],
    };
    let config = ok(text);
    assert_eq!(config, expected);
    assert_eq!(
        config.guests[0].idle_after(&config.idle),
        Some(Duration::from_secs(30))
    );
}

#[test]
fn idle_and_libvirt_tables_take_their_defaults() {
    let config = ok(LIBVIRT);
    assert_eq!(config.libvirt.uri, DEFAULT_LIBVIRT_URI);
    assert_eq!(config.libvirt.uri, "qemu:///system");
    assert_eq!(
        config.idle,
        IdleConfig {
            interval: Duration::from_secs(5),
            cpu_percent: 2.0,
            idle_after: Some(Duration::from_secs(600)),
            min_awake: Duration::ZERO,
            max_sleep: None,
            awake_during: AwakeWindows::default(),
            timezone: None,
        }
    );
    assert_eq!(ok("[idle]\n[libvirt]\n"), Config::default());
    let g = &config.guests[0];
    assert_eq!(g.idle_after, None);
    assert_eq!(g.idle_after(&config.idle), Some(Duration::from_secs(600)));
    assert!(g.keep_awake_while_connected.is_empty());
    assert!(g.health.is_empty());
}

#[test]
fn libvirt_domain_defaults_to_the_guest_name_and_mode_to_pause() {
    let g = &ok(LIBVIRT).guests[0];
    assert_eq!(
        g.backend,
        BackendConfig::Libvirt {
            domain: "web2".into(),
            mode: SleepMode::Pause
        }
    );
    assert_eq!(g.backend.kind(), "libvirt");
    assert_eq!(g.backend.mode(), Some(SleepMode::Pause));
    assert_eq!((&g.bridge, &g.interface, g.mac), (&None, &None, None));
    let g = &ok(&format!("{LIBVIRT}domain = \"Web Two\"\nmode = \"save\"\n")).guests[0];
    assert_eq!(
        g.backend,
        BackendConfig::Libvirt {
            domain: "Web Two".into(),
            mode: SleepMode::Save
        }
    );
}

#[test]
fn libvirt_guest_may_give_its_port() {
    let text = format!(
        "{LIBVIRT}bridge = \"virbr0\"\ninterface = \"vnet0\"\nmac = \"52:54:00:00:00:02\"\n"
    );
    let g = &ok(&text).guests[0];
    assert_eq!(g.bridge.as_deref(), Some("virbr0"));
    assert_eq!(g.interface.as_deref(), Some("vnet0"));
    assert_eq!(g.mac, Some([0x52, 0x54, 0, 0, 0, 2]));
}

#[test]
fn idle_settings_are_read() {
    let text = format!(
        "[idle]\ninterval = \"100ms\"\ncpu_percent = 150\nidle_after = \"1h30m\"\n\
         min_awake = \"10m\"\nmax_sleep = \"24h\"\n{LIBVIRT}"
    );
    let config = ok(&text);
    assert_eq!(
        config.idle,
        IdleConfig {
            interval: Duration::from_millis(100),
            cpu_percent: 150.0,
            idle_after: Some(Duration::from_secs(5400)),
            min_awake: Duration::from_secs(600),
            max_sleep: Some(Duration::from_secs(86400)),
            awake_during: AwakeWindows::default(),
            timezone: None,
        }
    );
}

#[test]
fn idle_after_off_lets_guests_sleep_only_when_told() {
    let text = format!(
        "[idle]\nidle_after = \"off\"\n{LIBVIRT}{}",
        set(QMP, "name", "name = \"vm1\"") + "idle_after = \"2m\"\n"
    );
    let config = ok(&text);
    assert_eq!(config.idle.idle_after, None);
    let [web2, vm1] = &config.guests[..] else {
        panic!("two guests")
    };
    assert_eq!(web2.idle_after, None);
    assert_eq!(web2.idle_after(&config.idle), None);
    assert_eq!(vm1.idle_after, Some(Some(Duration::from_secs(120))));
    assert_eq!(vm1.idle_after(&config.idle), Some(Duration::from_secs(120)));

    // And the other way round: a default, and one guest that never sleeps by itself.
    let config = ok(&format!("{LIBVIRT}idle_after = \"off\"\n"));
    let g = &config.guests[0];
    assert_eq!(g.idle_after, Some(None));
    assert_eq!(g.idle_after(&config.idle), None);
}

#[test]
fn qmp_guest_in_pause_mode_is_accepted() {
    let g = &ok(QMP).guests[0];
    assert_eq!(
        g.backend,
        BackendConfig::Qmp {
            socket: "/run/vmnap/vm1.qmp".into(),
            mode: SleepMode::Pause,
            qemu_command: Box::default(),
            state_file: None,
            agent: None,
        }
    );
    assert_eq!(g.backend.kind(), "qmp");
    assert_eq!(g.mac, Some([0x52, 0x54, 0, 0, 0, 1]));
    ok(&format!("{QMP}mode = \"pause\"\n"));
    // Its guest agent's socket.
    let g = &ok(&format!("{QMP}agent = \"/run/vmnap/vm1.qga\"\n")).guests[0];
    assert!(
        matches!(&g.backend, BackendConfig::Qmp { agent: Some(a), .. } if **a == *std::path::Path::new("/run/vmnap/vm1.qga"))
    );
    refused(
        &format!("{LIBVIRT}agent = \"/run/vmnap/vm1.qga\"\n"),
        5,
        9,
        Some("guest[0].agent"),
        "`agent` is only for backend `qmp`, not `libvirt`",
    );
}

#[test]
fn qmp_guest_in_save_mode_is_accepted() {
    let g = &ok(&format!("{QMP}{SAVE}")).guests[0];
    assert_eq!(
        g.backend,
        BackendConfig::Qmp {
            socket: "/run/vmnap/vm1.qmp".into(),
            mode: SleepMode::Save,
            qemu_command: vec![
                "qemu-system-x86_64".into(),
                "-m".into(),
                "256".into(),
                "-qmp".into(),
                "unix:/run/vmnap/vm1.qmp,server=on,wait=off".into(),
            ]
            .into_boxed_slice(),
            state_file: Some(std::path::Path::new("/var/lib/vmnap/vm1.state").into()),
            agent: None,
        }
    );
    assert_eq!(g.backend.mode(), Some(SleepMode::Save));
    assert_eq!(SleepMode::Save.as_str(), "save");
    assert_eq!(SleepMode::default(), SleepMode::Pause);
}

#[test]
fn keep_awake_and_health_checks_are_read() {
    let text = format!(
        "{LIBVIRT}keep_awake_while_connected = [\"tcp/22\", \"tcp/5432\"]\n{HEALTH}\
         [[guest.health]]\nport = 9000\npath = \"/ready?full=1\"\nstatus = 204\nbody = \"\"\n"
    );
    let g = &ok(&text).guests[0];
    assert_eq!(
        g.keep_awake_while_connected,
        vec!["tcp/22".parse().unwrap(), "tcp/5432".parse().unwrap()]
    );
    assert_eq!(
        g.health,
        vec![
            HealthCheck {
                port: 8080,
                path: "/healthz".into(),
                status: 200,
                body: "ok".into(),
            },
            HealthCheck {
                port: 9000,
                path: "/ready?full=1".into(),
                status: 204,
                body: String::new(),
            },
        ]
    );
}

#[test]
fn health_checks_may_be_inline_tables() {
    let text = format!("{LIBVIRT}health = [{{ port = 8080, path = \"/\", status = 599 }}]\n");
    let g = &ok(&text).guests[0];
    assert_eq!(g.health[0].status, 599);
    assert_eq!(g.health[0].path, "/");
}

#[test]
fn health_check_on_a_udp_wake_port_or_a_keep_awake_port_is_accepted() {
    let text = format!(
        "{LIBVIRT}wake_on = [\"udp/8080\"]\nkeep_awake_while_connected = [\"tcp/8080\"]\n{HEALTH}"
    );
    ok(&text);
    // Port 7 is only taken when `tcp-echo` is answered.
    let text = format!(
        "{LIBVIRT}answer = [\"udp-echo\"]\n{}",
        set(HEALTH, "port", "port = 7")
    );
    ok(&text);
}

#[test]
fn libvirt_guests_without_a_bridge_are_not_compared_by_address_or_mac() {
    // Whether they share a bridge is only known from the domains' XML, which the daemon reads.
    let other = set(
        &set(LIBVIRT, "name", "name = \"web3\""),
        "ipv4",
        "ipv4 = [\"198.18.0.12\"]",
    );
    let mac = "mac = \"52:54:00:00:00:02\"\n";
    let config = ok(&format!("{LIBVIRT}{mac}{other}{mac}"));
    assert_eq!(config.guests.len(), 2);
}

#[test]
fn cpu_percent_may_be_an_integer() {
    assert_eq!(ok("[idle]\ncpu_percent = 5\n").idle.cpu_percent, 5.0);
}

#[test]
fn libvirt_uri_may_be_any_scheme() {
    for uri in [
        "test:///default",
        "qemu+ssh://root@host/system",
        "qemu:///session",
    ] {
        assert_eq!(
            ok(&format!("[libvirt]\nuri = \"{uri}\"\n")).libvirt.uri,
            uri
        );
    }
}

#[test]
fn parse_duration_is_public() {
    assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    let e = parse_duration("5").unwrap_err();
    assert!(e.contains("has no unit") && e.contains("`5s`"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Refused: [libvirt] and [idle]

#[test]
fn unknown_key_in_libvirt_or_idle_is_refused() {
    refused(
        "[libvirt]\nurl = \"qemu:///system\"\n",
        2,
        1,
        Some("libvirt"),
        "unknown key `url`; expected one of `uri`, `discover`, `defaults`",
    );
    refused(
        "[idle]\ninterval = \"5s\"\ncpu = 2\n",
        3,
        1,
        Some("idle"),
        "unknown key `cpu`",
    );
}

#[test]
fn libvirt_uri_without_a_scheme_is_refused() {
    refused(
        "[libvirt]\nuri = \"/var/run/libvirt\"\n",
        2,
        7,
        Some("libvirt.uri"),
        "is not a URI with a scheme; want one like qemu:///system",
    );
}

#[test]
fn empty_libvirt_uri_is_refused() {
    refused(
        "[libvirt]\nuri = \"\"\n",
        2,
        7,
        Some("libvirt.uri"),
        "the libvirt URI is empty",
    );
}

#[test]
fn libvirt_uri_with_a_space_is_refused() {
    refused(
        "[libvirt]\nuri = \"qemu:///system \"\n",
        2,
        7,
        Some("libvirt.uri"),
        "contains ' '",
    );
}

#[test]
fn idle_interval_without_a_unit_is_refused() {
    refused(
        "[idle]\ninterval = \"5\"\n",
        2,
        12,
        Some("idle.interval"),
        "`5` has no unit; write a duration like `500ms`, `5s`, `10m`, `1h` or `1h30m`",
    );
}

#[test]
fn idle_interval_with_a_fraction_is_refused() {
    refused(
        "[idle]\ninterval = \"1.5s\"\n",
        2,
        12,
        Some("idle.interval"),
        "`1.5s` is not a duration",
    );
}

#[test]
fn idle_interval_as_a_number_is_refused() {
    refused(
        "[idle]\ninterval = 5\n",
        2,
        12,
        Some("idle.interval"),
        "invalid type: integer `5`, expected a string",
    );
}

#[test]
fn idle_interval_below_100ms_is_refused() {
    refused(
        "[idle]\ninterval = \"99ms\"\n",
        2,
        12,
        Some("idle.interval"),
        "`99ms` is too short; the sampling interval is at least 100ms",
    );
    refused(
        "[idle]\ninterval = \"0s\"\n",
        2,
        12,
        Some("idle.interval"),
        "too short",
    );
}

#[test]
fn zero_cpu_percent_is_refused() {
    refused(
        "[idle]\ncpu_percent = 0.0\n",
        2,
        15,
        Some("idle.cpu_percent"),
        "0 is not a usable CPU threshold; want a number above 0",
    );
}

#[test]
fn negative_cpu_percent_is_refused() {
    refused(
        "[idle]\ncpu_percent = -1\n",
        2,
        15,
        Some("idle.cpu_percent"),
        "-1 is not a usable CPU threshold",
    );
}

#[test]
fn cpu_percent_that_is_not_finite_is_refused() {
    refused(
        "[idle]\ncpu_percent = nan\n",
        2,
        15,
        Some("idle.cpu_percent"),
        "NaN is not a usable CPU threshold",
    );
    refused(
        "[idle]\ncpu_percent = inf\n",
        2,
        15,
        Some("idle.cpu_percent"),
        "inf is not a usable CPU threshold",
    );
}

#[test]
fn cpu_percent_as_a_string_is_refused() {
    refused(
        "[idle]\ncpu_percent = \"2%\"\n",
        2,
        15,
        Some("idle.cpu_percent"),
        "invalid type: string \"2%\", expected a number",
    );
}

#[test]
fn zero_idle_after_is_refused() {
    refused(
        "[idle]\nidle_after = \"0m\"\n",
        2,
        14,
        Some("idle.idle_after"),
        "`0m` is zero; write `off` for a guest that sleeps only when told",
    );
}

#[test]
fn idle_after_with_an_unknown_unit_is_refused() {
    refused(
        "[idle]\nidle_after = \"1d\"\n",
        2,
        14,
        Some("idle.idle_after"),
        "`1d` has unknown unit `d` (the units are `h`, `m`, `s` and `ms`)",
    );
    let e = refused(
        "[idle]\nidle_after = \"never\"\n",
        2,
        14,
        Some("idle.idle_after"),
        "is not a duration",
    );
    assert!(e.message.ends_with("or `off`"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Refused: per-guest idleness

#[test]
fn guest_idle_after_that_is_not_a_duration_is_refused() {
    refused(
        &format!("{LIBVIRT}idle_after = \"30 s\"\n"),
        5,
        14,
        Some("guest[0].idle_after"),
        "`30 s` is not a duration",
    );
}

#[test]
fn min_awake_and_max_sleep_are_read_per_guest_over_idle_and_refused_when_wrong() {
    let text =
        format!("[idle]\nmin_awake = \"1m\"\n{LIBVIRT}min_awake = \"0s\"\nmax_sleep = \"12h\"\n");
    let config = ok(&text);
    let g = &config.guests[0];
    assert_eq!(g.min_awake(&config.idle), Duration::ZERO);
    assert_eq!(
        g.max_sleep(&config.idle),
        Some(Duration::from_secs(12 * 3600))
    );
    let config = ok(&format!(
        "[idle]\nmin_awake = \"1m\"\nmax_sleep = \"2h\"\n{LIBVIRT}max_sleep = \"off\"\n"
    ));
    let g = &config.guests[0];
    assert_eq!(g.min_awake(&config.idle), Duration::from_secs(60));
    assert_eq!(g.max_sleep(&config.idle), None);
    assert_eq!(ok(LIBVIRT).guests[0].max_sleep(&ok(LIBVIRT).idle), None);
    // A guest that overrides none of the schedule's keys holds nothing for them.
    assert_eq!(ok(LIBVIRT).guests[0].schedule, None);
    refused(
        &format!("{LIBVIRT}max_sleep = \"0s\"\n"),
        5,
        13,
        Some("guest[0].max_sleep"),
        "is zero; write `off` for a guest that sleeps until something wakes it",
    );
    refused(
        &format!("[idle]\nmin_awake = \"soon\"\n{LIBVIRT}"),
        2,
        13,
        Some("idle.min_awake"),
        "`soon` is not a duration",
    );
}

#[test]
fn awake_windows_and_time_zones_are_read_and_refused_when_wrong() {
    const H: u32 = 3600;
    let text = format!(
        "[idle]\nawake_during = [\"Mon-Fri 08:00-18:00\", \"Sat,Sun 22:00-06:30:15\"]\n\
         timezone = \"Europe/Berlin\"\n{LIBVIRT}"
    );
    let config = ok(&text);
    let g = &config.guests[0];
    let w = &g.awake_during(&config.idle).0;
    assert_eq!(w.len(), 2);
    assert_eq!((w[0].start, w[0].end), (8 * H, 18 * H));
    assert!((0..5).all(|d| w[0].days.has(d)) && !w[0].days.has(5) && !w[0].days.has(6));
    assert_eq!((w[1].start, w[1].end), (22 * H, 6 * H + 30 * 60 + 15));
    assert!(w[1].days.has(5) && w[1].days.has(6) && !w[1].days.has(0));
    assert_eq!(g.timezone(&config.idle), Some("Europe/Berlin"));
    // A guest's own list (empty: none) and zone win; `Fri-Mon` wraps; `daily` is every day.
    let config = ok(&format!(
        "{text}awake_during = [\"Fri-Mon 09:00-10:00\", \"daily 00:00-24:00\"]\ntimezone = \"UTC\"\n"
    ));
    let g = &config.guests[0];
    let w = &g.awake_during(&config.idle).0;
    assert!([4, 5, 6, 0].iter().all(|&d| w[0].days.has(d)) && !w[0].days.has(1));
    assert_eq!((w[1].start, w[1].end), (0, 24 * H));
    assert_eq!(g.timezone(&config.idle), Some("UTC"));
    let none = ok(&format!("{text}awake_during = []\n"));
    assert!(none.guests[0].awake_during(&none.idle).is_empty());
    refused(
        &format!("{LIBVIRT}awake_during = [\"Mon-Fri 08:00-18:00\", \"Funday 08:00-09:00\"]\n"),
        5,
        40,
        Some("guest[0].awake_during[1]"),
        "`Funday` is not a day",
    );
    refused(
        &format!("{LIBVIRT}awake_during = [\"Mon 25:00-26:00\"]\n"),
        5,
        17,
        Some("guest[0].awake_during[0]"),
        "`25:00` is not a time of day",
    );
    refused(
        &format!("{LIBVIRT}awake_during = [\"Mon 08:00-08:00\"]\n"),
        5,
        17,
        Some("guest[0].awake_during[0]"),
        "starts where it ends",
    );
    refused(
        &format!("[idle]\ntimezone = \"Mars/Olympus\"\n{LIBVIRT}"),
        2,
        12,
        Some("idle.timezone"),
        "`Mars/Olympus` is not a time zone",
    );
}

#[test]
fn hooks_are_read_and_refused_when_empty() {
    let config = ok(&format!(
        "{LIBVIRT}before_sleep = [\"/usr/local/bin/may-sleep\", \"web2\"]\n\
         after_wake = [\"logger\", \"awake\"]\nhook_timeout = \"30s\"\n"
    ));
    let hooks = config.guests[0]
        .hooks
        .as_deref()
        .expect("the guest's hooks");
    assert_eq!(hooks.before_sleep, ["/usr/local/bin/may-sleep", "web2"]);
    assert_eq!(hooks.after_wake, ["logger", "awake"]);
    assert_eq!(hooks.timeout, Duration::from_secs(30));
    // The timeout defaults to 10 s; a guest without hooks holds none.
    let one = ok(&format!("{LIBVIRT}after_wake = [\"logger\"]\n"));
    let hooks = one.guests[0].hooks.as_deref().expect("the guest's hook");
    assert!(hooks.before_sleep.is_empty());
    assert_eq!(hooks.timeout, Duration::from_secs(10));
    assert_eq!(ok(LIBVIRT).guests[0].hooks, None);
    // A timeout alone is kept (for the hooks a domain's metadata may add), and runs nothing.
    let alone = ok(&format!("{LIBVIRT}hook_timeout = \"5s\"\n"));
    let hooks = alone.guests[0].hooks.as_deref().expect("the timeout");
    assert!(!hooks.runs_before_sleep() && !hooks.runs_after_wake());
    assert_eq!(hooks.timeout, Duration::from_secs(5));
    refused(
        &format!("{LIBVIRT}before_sleep = []\n"),
        5,
        16,
        Some("guest[0].before_sleep"),
        "`before_sleep` is empty",
    );
    refused(
        &format!("{LIBVIRT}after_wake = [\"\", \"x\"]\n"),
        5,
        15,
        Some("guest[0].after_wake[0]"),
        "the program to run is empty",
    );
    refused(
        &format!("{LIBVIRT}hook_timeout = \"0s\"\n"),
        5,
        16,
        Some("guest[0].hook_timeout"),
        "a hook needs time to run",
    );
}

#[test]
fn hooks_in_the_guest_and_its_inhibit_file_are_read_and_refused_when_wrong() {
    let config = ok(&format!(
        "{LIBVIRT}guest_before_sleep = [\"/usr/local/bin/may-sleep\"]\n\
         guest_after_wake = [\"/bin/sync\"]\ninhibit_file = \"/run/vmnap-inhibit\"\n"
    ));
    let hooks = config.guests[0]
        .hooks
        .as_deref()
        .expect("the guest's hooks");
    assert_eq!(hooks.guest_before_sleep, ["/usr/local/bin/may-sleep"]);
    assert_eq!(hooks.guest_after_wake, ["/bin/sync"]);
    assert_eq!(hooks.inhibit_file.as_deref(), Some("/run/vmnap-inhibit"));
    assert!(hooks.before_sleep.is_empty() && hooks.runs_before_sleep());
    // An inhibit file alone is a hook before each sleep.
    let one = ok(&format!("{LIBVIRT}inhibit_file = \"/run/x\"\n"));
    assert!(one.guests[0]
        .hooks
        .as_deref()
        .is_some_and(|h| h.runs_before_sleep()));
    refused(
        &format!("{LIBVIRT}inhibit_file = \"run/x\"\n"),
        5,
        16,
        Some("guest[0].inhibit_file"),
        "`run/x` is not an absolute path (a file inside the guest)",
    );
    refused(
        &format!("{LIBVIRT}guest_before_sleep = []\n"),
        5,
        22,
        Some("guest[0].guest_before_sleep"),
        "`guest_before_sleep` is empty",
    );
}

#[test]
fn zero_guest_idle_after_is_refused() {
    refused(
        &format!("{LIBVIRT}idle_after = \"0s\"\n"),
        5,
        14,
        Some("guest[0].idle_after"),
        "is zero; write `off`",
    );
}

#[test]
fn keep_awake_that_is_not_a_port_rule_is_refused() {
    refused(
        &format!("{LIBVIRT}keep_awake_while_connected = [\"22\"]\n"),
        5,
        31,
        Some("guest[0].keep_awake_while_connected[0]"),
        "`22` is not a port rule",
    );
}

#[test]
fn keep_awake_on_udp_is_refused() {
    refused(
        &format!("{LIBVIRT}keep_awake_while_connected = [\"tcp/22\", \"udp/53\"]\n"),
        5,
        41,
        Some("guest[0].keep_awake_while_connected[1]"),
        "`udp/53` is not a TCP port; only TCP has connections that keep a guest awake",
    );
}

#[test]
fn duplicate_keep_awake_is_refused() {
    refused(
        &format!("{LIBVIRT}keep_awake_while_connected = [\"tcp/22\", \"tcp/22\"]\n"),
        5,
        41,
        Some("guest[0].keep_awake_while_connected[1]"),
        "`tcp/22` is already listed at guest[0].keep_awake_while_connected[0]",
    );
}

// ---------------------------------------------------------------------------------------------
// Refused: health checks (LIBVIRT is lines 1..=4, HEALTH lines 5..=7)

#[test]
fn unknown_key_in_a_health_check_is_refused() {
    refused(
        &format!("{LIBVIRT}{HEALTH}timeout = \"1s\"\n"),
        8,
        1,
        Some("guest[0].health[0]"),
        "unknown key `timeout`; expected one of `port`, `path`, `status`, `body`",
    );
}

#[test]
fn health_check_without_a_path_is_refused() {
    refused(
        &format!("{LIBVIRT}{}", set(HEALTH, "path", "")),
        5,
        1,
        Some("guest[0].health[0]"),
        "missing key `path`",
    );
}

#[test]
fn health_check_without_a_port_is_refused() {
    refused(
        &format!("{LIBVIRT}{}", set(HEALTH, "port", "")),
        5,
        1,
        Some("guest[0].health[0]"),
        "missing key `port`",
    );
}

#[test]
fn health_port_zero_is_refused() {
    refused(
        &format!("{LIBVIRT}{}", set(HEALTH, "port", "port = 0")),
        6,
        8,
        Some("guest[0].health[0].port"),
        "0 is not a TCP port (want 1..=65535)",
    );
}

#[test]
fn health_port_above_65535_is_refused() {
    refused(
        &format!("{LIBVIRT}{}", set(HEALTH, "port", "port = 65536")),
        6,
        8,
        Some("guest[0].health[0].port"),
        "65536 is not a TCP port",
    );
}

#[test]
fn health_port_checked_twice_is_refused() {
    refused(
        &format!(
            "{LIBVIRT}{HEALTH}{}",
            set(HEALTH, "path", "path = \"/ready\"")
        ),
        9,
        8,
        Some("guest[0].health[1].port"),
        "port 8080 already has a health check at guest[0].health[0]",
    );
}

#[test]
fn health_port_that_is_also_a_wake_port_is_refused() {
    refused(
        &format!("{LIBVIRT}wake_on = [\"tcp/80\", \"tcp/8080\"]\n{HEALTH}"),
        7,
        8,
        Some("guest[0].health[0].port"),
        "a health check on port 8080 contradicts `tcp/8080` in guest[0].wake_on[1]: a port \
         cannot be both answered and a reason to wake",
    );
}

#[test]
fn health_port_7_with_tcp_echo_is_refused() {
    refused(
        &format!(
            "{LIBVIRT}answer = [\"arp\", \"tcp-echo\"]\n{}",
            set(HEALTH, "port", "port = 7")
        ),
        7,
        8,
        Some("guest[0].health[0].port"),
        "a health check on port 7 contradicts `tcp-echo` in guest[0].answer[1]",
    );
}

#[test]
fn health_path_without_a_slash_is_refused() {
    refused(
        &format!("{LIBVIRT}{}", set(HEALTH, "path", "path = \"healthz\"")),
        7,
        8,
        Some("guest[0].health[0].path"),
        "`healthz` does not start with `/`",
    );
}

#[test]
fn health_path_with_a_space_is_refused() {
    refused(
        &format!("{LIBVIRT}{}", set(HEALTH, "path", "path = \"/health z\"")),
        7,
        8,
        Some("guest[0].health[0].path"),
        "contains ' '; a request path is visible ASCII",
    );
}

#[test]
fn health_status_out_of_range_is_refused() {
    refused(
        &format!("{LIBVIRT}{HEALTH}status = 99\n"),
        8,
        10,
        Some("guest[0].health[0].status"),
        "99 is not an HTTP status code (want 100..=599)",
    );
    refused(
        &format!("{LIBVIRT}{HEALTH}status = 600\n"),
        8,
        10,
        Some("guest[0].health[0].status"),
        "600 is not an HTTP status code",
    );
}

#[test]
fn health_body_too_long_is_refused() {
    let body = "x".repeat(MAX_HEALTH_BODY_LEN + 1);
    refused(
        &format!("{LIBVIRT}{HEALTH}body = \"{body}\"\n"),
        8,
        8,
        Some("guest[0].health[0].body"),
        "the body is 1025 bytes long; at most 1024 are answered",
    );
    ok(&format!("{LIBVIRT}{HEALTH}body = \"{}\"\n", &body[1..]));
}

#[test]
fn health_check_in_the_second_guest_is_named_by_its_index() {
    // BASE is lines 1..=8, LIBVIRT 9..=12, HEALTH 13..=15.
    refused(
        &format!("{BASE}{LIBVIRT}{}", set(HEALTH, "port", "port = -1")),
        14,
        8,
        Some("guest[1].health[0].port"),
        "-1 is not a TCP port",
    );
}

// ---------------------------------------------------------------------------------------------
// Refused: keys that belong to another backend

#[test]
fn domain_with_backend_cgroup_is_refused() {
    refused(
        &format!("{BASE}domain = \"web1\"\n"),
        9,
        10,
        Some("guest[0].domain"),
        "`domain` is only for backend `libvirt`, not `cgroup`",
    );
}

#[test]
fn mode_with_backend_cgroup_is_refused() {
    refused(
        &format!("{BASE}mode = \"pause\"\n"),
        9,
        8,
        Some("guest[0].mode"),
        "`mode` is only for backends `libvirt` and `qmp`, not `cgroup`",
    );
}

#[test]
fn qmp_with_backend_libvirt_is_refused() {
    refused(
        &format!("{LIBVIRT}qmp = \"/run/vmnap/web2.qmp\"\n"),
        5,
        7,
        Some("guest[0].qmp"),
        "`qmp` is only for backend `qmp`, not `libvirt`",
    );
}

#[test]
fn qemu_command_with_backend_libvirt_is_refused() {
    refused(
        &format!("{LIBVIRT}mode = \"save\"\nqemu_command = [\"qemu\"]\n"),
        6,
        16,
        Some("guest[0].qemu_command"),
        "`qemu_command` is only for backend `qmp`, not `libvirt`",
    );
}

#[test]
fn state_file_with_backend_cgroup_is_refused() {
    refused(
        &format!("{BASE}state_file = \"/var/lib/vmnap/web1\"\n"),
        9,
        14,
        Some("guest[0].state_file"),
        "`state_file` is only for backend `qmp`, not `cgroup`",
    );
}

#[test]
fn cgroup_with_backend_qmp_is_refused() {
    refused(
        &format!("{QMP}cgroup = \"/sys/fs/cgroup/vmnap/vm1\"\n"),
        9,
        10,
        Some("guest[0].cgroup"),
        "`cgroup` is only for backend `cgroup`, not `qmp`",
    );
}

#[test]
fn domain_with_backend_qmp_is_refused() {
    refused(
        &format!("{QMP}domain = \"vm1\"\n"),
        9,
        10,
        Some("guest[0].domain"),
        "`domain` is only for backend `libvirt`, not `qmp`",
    );
}

#[test]
fn the_first_stray_key_in_the_file_is_named() {
    let text = format!(
        "{}state_file = \"/x\"\ndomain = \"a\"\n",
        set(BASE, "cgroup", "qmp = \"/q\"")
    );
    refused(
        &text,
        8,
        7,
        Some("guest[0].qmp"),
        "`qmp` is only for backend `qmp`, not `cgroup`",
    );
}

// ---------------------------------------------------------------------------------------------
// Refused: libvirt guests

#[test]
fn unknown_mode_is_refused() {
    refused(
        &format!("{LIBVIRT}mode = \"hibernate\"\n"),
        5,
        8,
        Some("guest[0].mode"),
        "unknown mode `hibernate`; expected `pause`, `pageout` or `save`",
    );
}

#[test]
fn empty_domain_is_refused() {
    refused(
        &format!("{LIBVIRT}domain = \"\"\n"),
        5,
        10,
        Some("guest[0].domain"),
        "the domain name is empty",
    );
}

#[test]
fn domain_with_a_slash_is_refused() {
    refused(
        &format!("{LIBVIRT}domain = \"a/b\"\n"),
        5,
        10,
        Some("guest[0].domain"),
        "`a/b` contains '/', which libvirt refuses in a domain name",
    );
}

#[test]
fn libvirt_interface_that_is_the_bridge_is_refused() {
    refused(
        &format!("{LIBVIRT}bridge = \"virbr0\"\ninterface = \"virbr0\"\n"),
        6,
        13,
        Some("guest[0].interface"),
        "the bridge itself",
    );
}

#[test]
fn bad_libvirt_mac_is_refused() {
    refused(
        &format!("{LIBVIRT}mac = \"52:54:00\"\n"),
        5,
        7,
        Some("guest[0].mac"),
        "not a MAC address",
    );
}

#[test]
fn libvirt_domain_of_two_guests_is_refused() {
    let other = set(LIBVIRT, "name", "name = \"web3\"");
    let other = set(&other, "ipv4", "ipv4 = [\"198.18.0.13\"]");
    refused(
        &format!("{LIBVIRT}{other}domain = \"web2\"\n"),
        9,
        10,
        Some("guest[1].domain"),
        "`web2` is already the domain of guest[0]",
    );
}

#[test]
fn libvirt_default_domain_taken_by_another_guest_is_refused() {
    let first = format!(
        "{}domain = \"web2\"\n",
        set(LIBVIRT, "name", "name = \"web3\"")
    );
    let second = set(LIBVIRT, "ipv4", "ipv4 = [\"198.18.0.13\"]");
    refused(
        &format!("{first}{second}"),
        8,
        11,
        Some("guest[1].backend"),
        "`web2` is already the domain of guest[0] (by default the guest's name; give `domain`",
    );
}

#[test]
fn libvirt_guests_with_a_bridge_are_compared_by_mac() {
    let port = "bridge = \"virbr0\"\nmac = \"52:54:00:00:00:02\"\n";
    let other = set(LIBVIRT, "name", "name = \"web3\"");
    let other = set(&other, "ipv4", "ipv4 = [\"198.18.0.13\"]");
    refused(
        &format!("{LIBVIRT}{port}{other}{port}"),
        12,
        7,
        Some("guest[1].mac"),
        "52:54:00:00:00:02 is already the MAC address of guest[0] on bridge `virbr0` vlan 0",
    );
}

#[test]
fn libvirt_guests_with_a_bridge_are_compared_by_address() {
    let other = set(LIBVIRT, "name", "name = \"web3\"");
    refused(
        &format!("{LIBVIRT}bridge = \"virbr0\"\n{other}bridge = \"virbr0\"\n"),
        9,
        9,
        Some("guest[1].ipv4[0]"),
        "`198.18.0.12` is already used by guest[0].ipv4[0] on bridge `virbr0` vlan 0",
    );
}

#[test]
fn libvirt_interface_of_another_guest_is_refused() {
    let other = set(LIBVIRT, "name", "name = \"web3\"");
    let other = set(&other, "ipv4", "ipv4 = [\"198.18.0.13\"]");
    refused(
        &format!("{LIBVIRT}interface = \"vnet0\"\n{other}interface = \"vnet0\"\n"),
        10,
        13,
        Some("guest[1].interface"),
        "`vnet0` is already the interface of guest[0]",
    );
}

// ---------------------------------------------------------------------------------------------
// Refused: cgroup and QMP guests must give their port

#[test]
fn cgroup_guest_without_a_bridge_is_refused() {
    refused(
        &base_with("bridge", ""),
        1,
        1,
        Some("guest[0]"),
        "missing key `bridge`: backend `cgroup` needs it (only a libvirt guest may leave it out",
    );
}

#[test]
fn qmp_guest_without_an_interface_is_refused() {
    refused(
        &set(QMP, "interface", ""),
        1,
        1,
        Some("guest[0]"),
        "missing key `interface`: backend `qmp` needs it",
    );
}

#[test]
fn qmp_guest_without_a_mac_is_refused() {
    refused(
        &format!("{BASE}{}", set(QMP, "mac", "")),
        9,
        1,
        Some("guest[1]"),
        "missing key `mac`: backend `qmp` needs it",
    );
}

// ---------------------------------------------------------------------------------------------
// Refused: QMP guests

#[test]
fn qmp_guest_without_a_socket_is_refused() {
    refused(
        &set(QMP, "qmp", ""),
        7,
        11,
        Some("guest[0].backend"),
        "backend `qmp` needs `qmp`, the absolute path of the QEMU monitor's unix socket",
    );
}

#[test]
fn relative_qmp_socket_is_refused() {
    refused(
        &set(QMP, "qmp", "qmp = \"vm1.qmp\""),
        8,
        7,
        Some("guest[0].qmp"),
        "`vm1.qmp` is not an absolute path",
    );
}

#[test]
fn qmp_socket_too_long_for_connect_is_refused() {
    let long = format!("/{}", "q".repeat(107));
    refused(
        &set(QMP, "qmp", &format!("qmp = \"{long}\"")),
        8,
        7,
        Some("guest[0].qmp"),
        "longer than 107 bytes",
    );
}

#[test]
fn save_mode_without_qemu_command_is_refused() {
    refused(
        &format!("{QMP}{}", set(SAVE, "qemu_command", "")),
        9,
        8,
        Some("guest[0].mode"),
        "mode `save` needs `qemu_command`, the argv that starts the guest's QEMU",
    );
}

#[test]
fn save_mode_without_state_file_is_refused() {
    refused(
        &format!("{QMP}{}", set(SAVE, "state_file", "")),
        9,
        8,
        Some("guest[0].mode"),
        "mode `save` needs `state_file`",
    );
}

#[test]
fn empty_qemu_command_is_refused() {
    refused(
        &format!("{QMP}{}", set(SAVE, "qemu_command", "qemu_command = []")),
        10,
        16,
        Some("guest[0].qemu_command"),
        "`qemu_command` is empty",
    );
}

#[test]
fn qemu_command_with_an_empty_program_is_refused() {
    refused(
        &format!(
            "{QMP}{}",
            set(SAVE, "qemu_command", "qemu_command = [\"\", \"-m\"]")
        ),
        10,
        17,
        Some("guest[0].qemu_command[0]"),
        "the program to run is empty",
    );
}

#[test]
fn qemu_command_that_is_a_string_is_refused() {
    refused(
        &format!(
            "{QMP}{}",
            set(SAVE, "qemu_command", "qemu_command = \"qemu -m 256\"")
        ),
        10,
        16,
        Some("guest[0].qemu_command"),
        "expected an array",
    );
}

#[test]
fn relative_state_file_is_refused() {
    refused(
        &format!(
            "{QMP}{}",
            set(SAVE, "state_file", "state_file = \"vm1.state\"")
        ),
        11,
        14,
        Some("guest[0].state_file"),
        "`vm1.state` is not an absolute path",
    );
}

#[test]
fn qemu_command_in_pause_mode_is_refused() {
    refused(
        &format!("{QMP}{}", set(SAVE, "mode", "")),
        10,
        16,
        Some("guest[0].qemu_command"),
        "`qemu_command` is only for mode `save`, not `pause`",
    );
}

#[test]
fn a_qmp_guest_may_sleep_by_page_out_without_save_keys() {
    let c = ok(&format!("{QMP}mode = \"pageout\"\n"));
    match &c.guests[0].backend {
        BackendConfig::Qmp {
            mode,
            qemu_command,
            state_file,
            ..
        } => assert_eq!(
            (*mode, qemu_command.len(), state_file),
            (SleepMode::Pageout, 0, &None)
        ),
        other => panic!("{other:?}"),
    }
    refused(
        &format!("{QMP}mode = \"pageout\"\nstate_file = \"/var/lib/vmnap/vm1.state\"\n"),
        10,
        14,
        Some("guest[0].state_file"),
        "`state_file` is only for mode `save`, not `pageout`",
    );
}

#[test]
fn a_libvirt_domain_may_sleep_by_page_out() {
    let c = ok(&format!("{LIBVIRT}mode = \"pageout\"\n"));
    assert_eq!(c.guests[0].backend.mode(), Some(SleepMode::Pageout));
}

#[test]
fn state_file_in_pause_mode_is_refused() {
    refused(
        &format!("{QMP}mode = \"pause\"\nstate_file = \"/var/lib/vmnap/vm1.state\"\n"),
        10,
        14,
        Some("guest[0].state_file"),
        "`state_file` is only for mode `save`, not `pause`",
    );
}

#[test]
fn qmp_socket_of_two_guests_is_refused() {
    let other = set(QMP, "name", "name = \"vm2\"");
    let other = set(&other, "interface", "interface = \"tap-vm2\"");
    let other = set(&other, "mac", "mac = \"52:54:00:00:00:02\"");
    let other = set(&other, "ipv4", "ipv4 = [\"198.18.0.22\"]");
    refused(
        &format!("{QMP}{other}"),
        16,
        7,
        Some("guest[1].qmp"),
        "`/run/vmnap/vm1.qmp` is already the QMP socket of guest[0]",
    );
    let other = set(&other, "qmp", "qmp = \"/run/vmnap/vm2.qmp\"");
    ok(&format!("{QMP}{other}"));
}

#[test]
fn state_file_of_two_guests_is_refused() {
    let other = set(QMP, "name", "name = \"vm2\"");
    let other = set(&other, "interface", "interface = \"tap-vm2\"");
    let other = set(&other, "mac", "mac = \"52:54:00:00:00:02\"");
    let other = set(&other, "ipv4", "ipv4 = [\"198.18.0.22\"]");
    let other = set(&other, "qmp", "qmp = \"/run/vmnap/vm2.qmp\"");
    refused(
        &format!("{QMP}{SAVE}{other}{SAVE}"),
        22,
        14,
        Some("guest[1].state_file"),
        "`/var/lib/vmnap/vm1.state` is already the state file of guest[0]",
    );
}

#[test]
fn cgroup_of_two_guests_is_refused() {
    refused(
        &format!(
            "{BASE}{}",
            set(SECOND, "cgroup", "cgroup = \"/sys/fs/cgroup/vmnap/web1\"")
        ),
        16,
        10,
        Some("guest[1].cgroup"),
        "`/sys/fs/cgroup/vmnap/web1` is already the cgroup of guest[0]",
    );
}

// ---------------------------------------------------------------------------------------------
// Other API

#[test]
fn ex_config_is_ex_usage() {
    assert_eq!(EX_CONFIG, 64);
}

#[test]
fn port_rule_parses_and_displays() {
    let rule: PortRule = "udp/9000".parse().unwrap();
    assert_eq!(
        rule,
        PortRule {
            transport: Transport::Udp,
            port: 9000
        }
    );
    assert_eq!(rule.to_string(), "udp/9000");
    for bad in [
        "", "tcp", "tcp/", "tcp/+80", "TCP/80", "tcp/80/", "tcp/-1", " tcp/80",
    ] {
        assert!(bad.parse::<PortRule>().is_err(), "{bad:?}");
    }
}

proptest! {
    #[test]
    fn port_rule_display_round_trips(tcp in any::<bool>(), port in 1u16..) {
        let transport = if tcp { Transport::Tcp } else { Transport::Udp };
        let rule = PortRule { transport, port };
        prop_assert_eq!(rule.to_string().parse::<PortRule>(), Ok(rule));
    }

    #[test]
    fn parse_never_panics_on_any_string(text in any::<String>()) {
        let _ = parse(&text);
    }

    #[test]
    fn parse_never_panics_on_toml_like_text(text in "[\\[\\]a-z_=\"0-9:./, \n#{}-]{0,200}") {
        let _ = parse(&text);
    }

    /// Splices arbitrary text into a valid file, so that most cases get past the TOML parser
    /// into validation and the key locator.
    #[test]
    fn parse_never_panics_on_a_mutated_example(
        at in 0usize..include_str!("../example.toml").len() + 1,
        cut in 0usize..20,
        insert in "\\PC{0,12}",
    ) {
        let example = include_str!("../example.toml");
        let mut start = at.min(example.len());
        while !example.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (start + cut).min(example.len());
        while !example.is_char_boundary(end) {
            end -= 1;
        }
        let text = format!("{}{}{}", &example[..start], insert, &example[end..]);
        if let Err(e) = parse(&text) {
            // Whatever is wrong is reported with a location inside the text.
            let line = e.line.unwrap_or(1);
            prop_assert!(line >= 1 && line <= text.lines().count() + 1, "{}", e);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Discovered libvirt domains: `[libvirt] discover`, `[libvirt.defaults]`, per-domain settings

/// Discovery by metadata with defaults. Lines: 1 `[libvirt]`, 2 uri, 3 discover,
/// 4 `[libvirt.defaults]`, 5 mode, 6 wake_on, 7 idle_after, 8 `[[libvirt.defaults.health]]`,
/// 9 port, 10 path.
const DISCOVER: &str = r#"[libvirt]
uri = "qemu:///system"
discover = { metadata = "https://example.org/vmnap" }
[libvirt.defaults]
mode = "save"
wake_on = ["tcp/80", "tcp/22"]
idle_after = "30s"
[[libvirt.defaults.health]]
port = 8080
path = "/healthz"
"#;

#[test]
fn discover_all_and_by_metadata_are_read() {
    let all = ok("[libvirt]\ndiscover = \"all\"\n");
    assert_eq!(all.libvirt.discover, Some(Discover::All));
    assert_eq!(all.libvirt.defaults, GuestDefaults::default());
    let c = ok(DISCOVER);
    assert_eq!(
        c.libvirt.discover,
        Some(Discover::Metadata("https://example.org/vmnap".into()))
    );
    let d = &c.libvirt.defaults;
    assert_eq!(d.mode, SleepMode::Save);
    assert_eq!(d.wake_on.len(), 2);
    assert_eq!(d.idle_after, Some(Some(Duration::from_secs(30))));
    assert_eq!(d.health.len(), 1);
    assert_eq!(d.answer, Answers::DEFAULT);
    let urn = ok("[libvirt]\ndiscover = { metadata = \"urn:vmnap\" }\n");
    assert_eq!(
        urn.libvirt.discover,
        Some(Discover::Metadata("urn:vmnap".into()))
    );
    assert_eq!(ok("").libvirt.discover, None);
}

#[test]
fn discovered_guest_takes_the_defaults_and_the_domains_settings() {
    let c = ok(DISCOVER);
    let g = c
        .discovered_guest("web3", &DomainSettings::default())
        .expect("defaults alone");
    assert_eq!(g.name, "web3");
    assert_eq!(
        g.backend,
        BackendConfig::Libvirt {
            domain: "web3".into(),
            mode: SleepMode::Save
        }
    );
    assert!(g.ipv4.is_empty() && g.ipv6.is_empty(), "no address yet");
    assert_eq!(g.idle_after(&c.idle), Some(Duration::from_secs(30)));
    assert_eq!(g.health.len(), 1);
    let settings = DomainSettings {
        name: Some("web-three".into()),
        mode: Some("pause".into()),
        ipv4: vec!["198.18.0.40".into()],
        ipv6: vec!["2001:db8::40".into()],
        wake_on: Some(vec!["tcp/443".into()]),
        answer: Some(vec!["arp".into(), "tcp-echo".into()]),
        idle_after: Some("off".into()),
        keep_awake_while_connected: Some(vec!["tcp/22".into()]),
        min_awake: Some("10m".into()),
        max_sleep: Some("24h".into()),
        inhibit_file: Some("/run/vmnap-inhibit".into()),
    };
    let g = c.discovered_guest("web3", &settings).expect("settings");
    assert_eq!(g.min_awake(&c.idle), Duration::from_secs(600));
    assert_eq!(g.max_sleep(&c.idle), Some(Duration::from_secs(86_400)));
    let hooks = g.hooks.as_deref().expect("the inhibit file");
    assert_eq!(hooks.inhibit_file.as_deref(), Some("/run/vmnap-inhibit"));
    assert!(hooks.runs_before_sleep());
    assert_eq!(g.name, "web-three");
    assert_eq!(g.backend.mode(), Some(SleepMode::Pause));
    assert_eq!(g.ipv4, [Ipv4Addr::new(198, 18, 0, 40)]);
    assert_eq!(g.ipv6, ["2001:db8::40".parse::<Ipv6Addr>().unwrap()]);
    assert_eq!(g.wake_on.len(), 1);
    assert!(g.answer.arp && g.answer.tcp_echo && !g.answer.ndp);
    assert_eq!(g.idle_after(&c.idle), None);
    assert_eq!(g.keep_awake_while_connected.len(), 1);
}

#[test]
fn bad_domain_settings_are_refused_naming_the_attribute() {
    let c = ok(DISCOVER);
    let refuse = |s: DomainSettings, needle: &str| {
        let e = c.discovered_guest("web3", &s).expect_err("refused");
        assert!(e.contains(needle), "{e}");
    };
    refuse(
        DomainSettings {
            mode: Some("sleep".into()),
            ..Default::default()
        },
        "`mode`: unknown mode `sleep`",
    );
    refuse(
        DomainSettings {
            inhibit_file: Some("tmp/x".into()),
            ..Default::default()
        },
        "`inhibit_file`: `tmp/x` is not an absolute path",
    );
    refuse(
        DomainSettings {
            max_sleep: Some("0s".into()),
            ..Default::default()
        },
        "`max_sleep`: `0s` is zero",
    );
    refuse(
        DomainSettings {
            ipv4: vec!["2001:db8::1".into()],
            ..Default::default()
        },
        "`ipv4`: `2001:db8::1` is not an IPv4 address",
    );
    refuse(
        DomainSettings {
            wake_on: Some(vec!["tcp/80".into(), "tcp/80".into()]),
            ..Default::default()
        },
        "`wake_on`: `tcp/80` is listed twice",
    );
    refuse(
        DomainSettings {
            wake_on: Some(vec!["tcp/8080".into()]),
            ..Default::default()
        },
        "`wake_on` has `tcp/8080`, which the health check",
    );
    refuse(
        DomainSettings {
            answer: Some(vec!["smtp".into()]),
            ..Default::default()
        },
        "`answer`: unknown answer `smtp`",
    );
    refuse(
        DomainSettings {
            idle_after: Some("0s".into()),
            ..Default::default()
        },
        "`idle_after`:",
    );
    refuse(
        DomainSettings {
            keep_awake_while_connected: Some(vec!["udp/53".into()]),
            ..Default::default()
        },
        "`keep_awake_while_connected`: `udp/53` is not a TCP port",
    );
    let e = c
        .discovered_guest("my web", &DomainSettings::default())
        .expect_err("a domain name with a space");
    assert!(e.contains("give one in `name`"), "{e}");
}

#[test]
fn discover_as_a_table_header_is_read_as_the_inline_table() {
    let header = ok("[libvirt.discover]\nmetadata = \"urn:vmnap\"\n");
    let inline = ok("[libvirt]\ndiscover = { metadata = \"urn:vmnap\" }\n");
    assert_eq!(
        header.libvirt.discover,
        Some(Discover::Metadata("urn:vmnap".into()))
    );
    assert_eq!(header, inline);
}

#[test]
fn unknown_discover_selector_is_refused() {
    refused(
        "[libvirt]\ndiscover = \"some\"\n",
        2,
        12,
        Some("libvirt.discover"),
        "unknown selector `some`; want \"all\", or { metadata = \"URI\" }",
    );
}

#[test]
fn discover_of_the_wrong_type_is_refused() {
    refused(
        "[libvirt]\ndiscover = true\n",
        2,
        12,
        Some("libvirt.discover"),
        "invalid type: boolean",
    );
    refused(
        "[libvirt]\ndiscover = { metadata = 3 }\n",
        2,
        12,
        Some("libvirt.discover.metadata"),
        "invalid type: integer, expected a string",
    );
}

#[test]
fn discover_table_with_an_unknown_or_missing_key_is_refused() {
    refused(
        "[libvirt]\ndiscover = { namespace = \"urn:x\" }\n",
        2,
        12,
        Some("libvirt.discover"),
        "unknown key `namespace`; expected `metadata`",
    );
    refused(
        "[libvirt]\ndiscover = {}\n",
        2,
        12,
        Some("libvirt.discover"),
        "missing key `metadata`",
    );
}

#[test]
fn metadata_namespace_that_is_not_a_uri_is_refused() {
    refused(
        "[libvirt]\ndiscover = { metadata = \"vmnap\" }\n",
        2,
        12,
        Some("libvirt.discover.metadata"),
        "`vmnap` is not a URI with a scheme",
    );
    refused(
        "[libvirt]\ndiscover = { metadata = \"\" }\n",
        2,
        12,
        Some("libvirt.discover.metadata"),
        "the metadata namespace is empty",
    );
}

#[test]
fn defaults_without_discover_are_refused() {
    refused(
        "[libvirt]\n[libvirt.defaults]\nmode = \"save\"\n",
        2,
        1,
        Some("libvirt.defaults"),
        "`[libvirt.defaults]` applies only to discovered guests",
    );
}

#[test]
fn unknown_key_in_defaults_is_refused() {
    refused(
        &set(DISCOVER, "idle_after", "ipv4 = [\"198.18.0.40\"]"),
        7,
        1,
        Some("libvirt.defaults"),
        "unknown key `ipv4`",
    );
}

#[test]
fn bad_default_mode_is_refused() {
    refused(
        &set(DISCOVER, "mode", "mode = \"hibernate\""),
        5,
        8,
        Some("libvirt.defaults.mode"),
        "unknown mode `hibernate`; expected `pause`, `pageout` or `save`",
    );
}

#[test]
fn bad_default_wake_on_is_refused_with_its_index() {
    refused(
        &set(DISCOVER, "wake_on", "wake_on = [\"tcp/80\", \"tcp/80\"]"),
        6,
        22,
        Some("libvirt.defaults.wake_on[1]"),
        "`tcp/80` is already listed at libvirt.defaults.wake_on[0]",
    );
}

#[test]
fn bad_default_idle_after_is_refused() {
    refused(
        &set(DISCOVER, "idle_after", "idle_after = \"0s\""),
        7,
        14,
        Some("libvirt.defaults.idle_after"),
        "is zero",
    );
}

#[test]
fn default_health_check_on_a_wake_port_is_refused() {
    refused(
        &set(DISCOVER, "port", "port = 80"),
        9,
        8,
        Some("libvirt.defaults.health[0].port"),
        "contradicts `tcp/80` in libvirt.defaults.wake_on[0]",
    );
}

#[test]
fn bad_default_queue_limits_are_refused() {
    refused(
        &set(DISCOVER, "mode", "queue_frames = 0"),
        5,
        16,
        Some("libvirt.defaults.queue_frames"),
        "0 is too small; want at least 1",
    );
    refused(
        &set(DISCOVER, "mode", "multicast = \"flood\""),
        5,
        13,
        Some("libvirt.defaults.multicast"),
        "unknown multicast policy `flood`",
    );
}

#[test]
fn default_keep_awake_on_udp_is_refused() {
    refused(
        &set(
            DISCOVER,
            "idle_after",
            "keep_awake_while_connected = [\"udp/53\"]",
        ),
        7,
        31,
        Some("libvirt.defaults.keep_awake_while_connected[0]"),
        "`udp/53` is not a TCP port",
    );
}

#[test]
fn surrogate_learn_connections_for_defaults_to_an_hour_and_is_read() {
    use std::time::Duration;
    assert_eq!(
        ok("").surrogate.learn_connections_for,
        Duration::from_secs(3600)
    );
    assert_eq!(
        ok("[surrogate]\nlearn_connections_for = \"0s\"\n")
            .surrogate
            .learn_connections_for,
        Duration::ZERO
    );
    assert_eq!(
        ok(include_str!("../example.toml"))
            .surrogate
            .learn_connections_for,
        Duration::from_secs(3600)
    );
}

#[test]
fn surrogate_learn_connections_for_without_a_unit_is_refused() {
    refused(
        "[surrogate]\nlearn_connections_for = \"10\"\n",
        2,
        25,
        Some("surrogate.learn_connections_for"),
        "`10` has no unit",
    );
}

#[test]
fn wake_max_resuming_defaults_to_16_and_is_read() {
    assert_eq!(ok("").wake.max_resuming, 16);
    assert_eq!(ok("[wake]\nmax_resuming = 10\n").wake.max_resuming, 10);
    assert_eq!(ok(include_str!("../example.toml")).wake.max_resuming, 16);
}

#[test]
fn wake_max_resuming_of_zero_is_refused() {
    refused(
        "[wake]\nmax_resuming = 0\n",
        2,
        16,
        Some("wake.max_resuming"),
        "0 is out of range; want 1 to 4096",
    );
}

#[test]
fn surrogate_max_held_bytes_defaults_to_512_mib_and_is_read() {
    assert_eq!(ok("").surrogate.max_held_bytes, 512 << 20);
    assert_eq!(
        ok("[surrogate]\nmax_held_bytes = 70000\n")
            .surrogate
            .max_held_bytes,
        70_000
    );
    refused(
        "[surrogate]\nmax_held_bytes = 1000\n",
        2,
        18,
        Some("surrogate.max_held_bytes"),
        "1000 is too small; want at least 65600 bytes",
    );
}

#[test]
fn api_tls_lets_the_listener_leave_loopback_and_comes_whole() {
    let api = ok("[api]\nlisten = \"0.0.0.0:7070\"\ntoken_file = \"/t\"\n\
                  tls_cert = \"/etc/vmnap/cert.pem\"\ntls_key = \"/etc/vmnap/key.pem\"\n")
    .api;
    assert_eq!(
        api.tls,
        Some(vmnap_config::TlsFiles {
            cert: PathBuf::from("/etc/vmnap/cert.pem"),
            key: PathBuf::from("/etc/vmnap/key.pem"),
        })
    );
    assert!(!api.insecure_listen_without_tls);
    refused(
        "[api]\nlisten = \"7070\"\ntoken_file = \"/t\"\ntls_cert = \"/c.pem\"\n",
        4,
        12,
        Some("api.tls_cert"),
        "`tls_cert` needs `tls_key`",
    );
    refused(
        "[api]\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\n",
        2,
        12,
        Some("api.tls_cert"),
        "used only with `listen`",
    );
    refused(
        "[api]\nlisten = \"7070\"\ntoken_file = \"/t\"\ntls_cert = \"c.pem\"\ntls_key = \"/k.pem\"\n",
        4,
        12,
        Some("api.tls_cert"),
        "absolute",
    );
}

#[test]
fn wake_resume_memory_reserve_defaults_to_512_mib_and_is_read() {
    assert_eq!(ok("").wake.resume_memory_reserve, 512 << 20);
    assert_eq!(
        ok("[wake]\nresume_memory_reserve = 0\n")
            .wake
            .resume_memory_reserve,
        0
    );
    refused(
        "[wake]\nresume_memory_reserve = -1\n",
        2,
        25,
        Some("wake.resume_memory_reserve"),
        "-1 is negative",
    );
}
