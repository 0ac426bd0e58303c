//! `Config::parse` and `Config::load` through the public API: what is accepted, the defaults,
//! and every refusal with its file, line, column and key.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use vmnap_config::{
    Answers, ApiConfig, BackendConfig, Config, ConfigError, GuestConfig, MulticastPolicy, PortRule,
    Transport, DEFAULT_SOCKET, EX_CONFIG,
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

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new(FILE))
}

fn ok(text: &str) -> Config {
    match parse(text) {
        Ok(c) => c,
        Err(e) => panic!("refused: {e}\n--- text ---\n{text}"),
    }
}

/// `text` with the line starting `key =` replaced by `line` (or removed if `line` is empty).
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
        bridge: "br0".into(),
        interface: "vg-web1".into(),
        mac: [0x02, 0, 0, 0, 0x01, 0x01],
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
        },
        guests: vec![GuestConfig {
            name: "web1".into(),
            bridge: "br0".into(),
            interface: "vg-web1".into(),
            mac: [0x02, 0x00, 0x00, 0x00, 0x01, 0x01],
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
        }],
    };
    assert_eq!(ok(text), expected);
}

#[test]
fn example_file_parses() {
    let config = ok(include_str!("../example.toml"));
    assert_eq!(config.guests.len(), 2);
    assert_eq!(config.api.socket, PathBuf::from(DEFAULT_SOCKET));
    let db1 = config.guest("db1").expect("db1 is in example.toml");
    assert_eq!(db1.vlan, 20);
    assert_eq!(db1.answer, Answers::DEFAULT);
    assert!(db1.ipv4.is_empty());
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
fn libvirt_and_qmp_backends_are_not_supported_yet() {
    let text = set(&base_with("backend", "backend = \"libvirt\""), "cgroup", "");
    refused(
        &text,
        7,
        11,
        Some("guest[0].backend"),
        "backend `libvirt` is not supported yet",
    );
    let text = set(&base_with("backend", "backend = \"qmp\""), "cgroup", "");
    refused(
        &text,
        7,
        11,
        Some("guest[0].backend"),
        "backend `qmp` is not supported yet",
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
        at in 0usize..2000,
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
