//! Packaging: the systemd unit in `dist/`, the man page generated from the CLI, the
//! `cargo deb` metadata and the package it builds, and `vmnap run --log-format`.
//!
//! Regenerate `dist/vmnap.1` after changing the CLI with
//! `VMNAP_BLESS=1 cargo test -p vmnap-cli --test packaging man_page`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const VMNAP: &str = env!("CARGO_BIN_EXE_vmnap");

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A fresh, empty directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmnap-pkg-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("cannot make a temporary directory");
    dir
}

fn unit() -> String {
    std::fs::read_to_string(root().join("dist/vmnap.service")).expect("dist/vmnap.service")
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    // Debian's `systemd` package; it need not be running.
    vmnap_lab::check_tools(&["systemd-analyze"]).unwrap_or_else(|e| panic!("{e}"));
    // `verify` checks that the ExecStart= program exists: point it at the binary under test.
    let dir = scratch("verify");
    let path = dir.join("vmnap.service");
    std::fs::write(
        &path,
        unit().replace("/usr/bin/vmnap ", &format!("{VMNAP} ")),
    )
    .expect("cannot write the unit");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("cannot run systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    // verify exits 0 on unknown keys and bad values, but says so: any output is a failure.
    assert!(
        out.status.success() && text(&out).trim().is_empty(),
        "systemd-analyze verify dist/vmnap.service: {}\n{}",
        out.status,
        text(&out)
    );
}

/// The unit's settings, as `key=value` lines, without comments.
fn unit_settings() -> Vec<String> {
    unit()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_unit_runs_vmnap_with_the_packaged_config_and_few_capabilities() {
    let settings = unit_settings();
    for wanted in [
        "Type=exec",
        "ExecStart=/usr/bin/vmnap run --config /etc/vmnap/vmnap.toml --log-format journald",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW",
        "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/run/vmnap /var/lib/vmnap /sys/fs/cgroup",
        "RuntimeDirectory=vmnap",
        "StateDirectory=vmnap",
    ] {
        assert!(
            settings.iter().any(|s| s == wanted),
            "dist/vmnap.service lacks `{wanted}`"
        );
    }
    // The cgroup backend writes /sys/fs/cgroup; QEMU restored by vmnap needs /dev/kvm.
    for forbidden in [
        "ProtectControlGroups=",
        "PrivateDevices=",
        "DeviceAllow=",
        "ProtectClock=",
    ] {
        assert!(
            !settings.iter().any(|s| s.starts_with(forbidden)),
            "dist/vmnap.service must not set {forbidden} (see its comments)"
        );
    }
}

#[test]
fn the_units_command_line_is_one_vmnap_accepts() {
    // The unit's arguments with a config that does not exist: a usage error exits 2, a
    // config error 64.
    let exec = unit_settings()
        .into_iter()
        .find_map(|s| s.strip_prefix("ExecStart=").map(str::to_owned))
        .expect("ExecStart=");
    let mut args: Vec<String> = exec.split_whitespace().skip(1).map(str::to_owned).collect();
    let config = args
        .iter()
        .position(|a| a == "--config")
        .expect("ExecStart= has --config");
    args[config + 1] = "/nonexistent/vmnap.toml".to_owned();
    let out = Command::new(VMNAP).args(&args).output().expect("vmnap");
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
}

#[test]
fn man_page_matches_the_cli() {
    let out = Command::new(VMNAP)
        .arg("man")
        .output()
        .expect("cannot run vmnap man");
    assert!(out.status.success(), "vmnap man: {}", text(&out));
    let generated = String::from_utf8(out.stdout).expect("the man page is UTF-8");
    assert!(
        generated.contains(".SH COMMANDS") && generated.contains("log\\-format"),
        "vmnap man printed no full page:\n{generated}"
    );
    let path = root().join("dist/vmnap.1");
    if std::env::var_os("VMNAP_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("cannot write dist/vmnap.1");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "dist/vmnap.1 differs from `vmnap man`: regenerate it with \
         `VMNAP_BLESS=1 cargo test -p vmnap-cli --test packaging man_page` and commit it"
    );
}

/// One asset: source (relative to crates/cli), destination, mode.
fn asset(value: &toml::Value) -> (String, String, String) {
    let parts: Vec<String> = value
        .as_array()
        .expect("an asset is [source, dest, mode]")
        .iter()
        .map(|v| v.as_str().expect("asset fields are strings").to_owned())
        .collect();
    assert_eq!(parts.len(), 3, "asset {value}");
    (parts[0].clone(), parts[1].clone(), parts[2].clone())
}

#[test]
fn the_deb_installs_the_binary_unit_config_man_page_and_readme() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest: toml::Table = std::fs::read_to_string(crate_dir.join("Cargo.toml"))
        .expect("Cargo.toml")
        .parse()
        .expect("Cargo.toml parses");
    let deb = &manifest["package"]["metadata"]["deb"];
    assert_eq!(deb["name"].as_str(), Some("vmnap"));
    let assets: Vec<_> = deb["assets"]
        .as_array()
        .expect("[package.metadata.deb] assets")
        .iter()
        .map(asset)
        .collect();
    let expected = [
        ("target/release/vmnap", "usr/bin/", "755"),
        ("../config/example.toml", "etc/vmnap/vmnap.toml", "644"),
        ("../../dist/vmnap.1", "usr/share/man/man1/vmnap.1", "644"),
        ("../../README.md", "usr/share/doc/vmnap/README.md", "644"),
        (
            "../../docs/design.md",
            "usr/share/doc/vmnap/design.md",
            "644",
        ),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(s, d, m)| ((*s).to_owned(), (*d).to_owned(), (*m).to_owned()))
        .collect();
    assert_eq!(assets, expected);
    for (source, _, _) in &assets {
        // cargo-deb builds target/release/vmnap itself (the same binary as this test's).
        if source.starts_with("target/release/") {
            continue;
        }
        assert!(
            crate_dir.join(source).is_file(),
            "asset {source} is missing"
        );
    }
    // The unit comes from systemd-units: dist/vmnap.service, installed but not enabled.
    let units = &deb["systemd-units"];
    assert_eq!(units["unit-scripts"].as_str(), Some("../../dist"));
    assert_eq!(units["unit-name"].as_str(), Some("vmnap"));
    assert_eq!(units["enable"].as_bool(), Some(false));
    assert_eq!(units["start"].as_bool(), Some(false));
    assert!(crate_dir.join("../../dist/vmnap.service").is_file());
    // The config the package installs is one vmnap accepts.
    let out = Command::new(VMNAP)
        .arg("check-config")
        .arg(crate_dir.join("../config/example.toml"))
        .output()
        .expect("vmnap check-config");
    assert!(out.status.success(), "{}", text(&out));
}

/// `cargo deb` really builds the package: it holds the binary, the unit, the config (as a
/// conffile) and the man page where the metadata says, and the binary in it runs.
#[test]
fn cargo_deb_builds_a_package_that_holds_and_runs_vmnap() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let has_deb = Command::new(&cargo)
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_deb,
        "cargo-deb is missing: `cargo install cargo-deb --locked` (README.md's test command \
         installs it)"
    );
    vmnap_lab::check_tools(&["dpkg-deb"]).unwrap_or_else(|e| panic!("{e}"));
    let out_dir = scratch("deb");
    let built = Command::new(&cargo)
        .current_dir(root())
        .args(["deb", "-p", "vmnap-cli", "--output"])
        .arg(&out_dir)
        .output()
        .expect("run cargo deb");
    assert!(built.status.success(), "cargo deb failed: {}", text(&built));
    let deb = std::fs::read_dir(&out_dir)
        .expect("the output directory")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .unwrap_or_else(|| panic!("no .deb in {}", out_dir.display()));
    let listing = Command::new("dpkg-deb")
        .arg("--contents")
        .arg(&deb)
        .output()
        .expect("dpkg-deb --contents");
    let listing = text(&listing);
    for path in [
        "./usr/bin/vmnap",
        "./etc/vmnap/vmnap.toml",
        "./usr/share/man/man1/vmnap.1.gz",
        "./usr/share/doc/vmnap/README.md",
        "./usr/share/doc/vmnap/design.md",
        "vmnap.service",
    ] {
        assert!(
            listing.contains(path),
            "{path} is not in the package:\n{listing}"
        );
    }
    let conffiles = Command::new("dpkg-deb")
        .arg("--info")
        .arg(&deb)
        .arg("conffiles")
        .output()
        .expect("dpkg-deb --info");
    assert!(
        text(&conffiles).contains("/etc/vmnap/vmnap.toml"),
        "the config is not a conffile: {}",
        text(&conffiles)
    );
    // Unpacked, its binary runs and accepts the config it installs.
    let root_dir = out_dir.join("root");
    let x = Command::new("dpkg-deb")
        .arg("--extract")
        .arg(&deb)
        .arg(&root_dir)
        .output()
        .expect("dpkg-deb --extract");
    assert!(x.status.success(), "{}", text(&x));
    let check = Command::new(root_dir.join("usr/bin/vmnap"))
        .arg("check-config")
        .arg(root_dir.join("etc/vmnap/vmnap.toml"))
        .output()
        .expect("the packaged vmnap runs");
    assert!(check.status.success(), "{}", text(&check));
    // The release profile leaves the debuginfo out (36 MB with it): neither the binary cargo
    // built for the package nor the packaged one has a `.debug_info` section.
    let target = Path::new(env!("CARGO_BIN_EXE_vmnap"))
        .ancestors()
        .nth(2)
        .expect("the target directory above target/debug/vmnap");
    for binary in [target.join("release/vmnap"), root_dir.join("usr/bin/vmnap")] {
        let bytes = std::fs::read(&binary).expect("read the release binary");
        let sections = elf_section_names(&bytes);
        assert!(
            sections.iter().any(|s| s == ".text"),
            "{}: no .text among {sections:?}",
            binary.display()
        );
        assert!(
            !sections.iter().any(|s| s.starts_with(".debug_")),
            "{} ({} bytes) carries debuginfo: {sections:?}",
            binary.display(),
            bytes.len()
        );
    }
    let _ = std::fs::remove_dir_all(&out_dir);
}

/// Runs `vmnap run --log-format FORMAT` with no guests and a socket in a temporary
/// directory until its socket answers, ends it with SIGTERM, and returns its stderr.
fn run_daemon(format: &str) -> String {
    let dir = scratch(&format!("run-{format}"));
    let socket = dir.join("vmnap.sock");
    let config = dir.join("vmnap.toml");
    std::fs::write(
        &config,
        format!(
            "[api]\nsocket = \"{}\"\n\n[idle]\nidle_after = \"off\"\n",
            socket.display()
        ),
    )
    .expect("cannot write the config");
    let mut child = Command::new(VMNAP)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .args(["--log-format", format])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start vmnap run");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
            panic!("vmnap run exited early ({status}): {err}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vmnap run did not open {} in 20 s", socket.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
    // SAFETY: kill(2) on our own child's pid, which has not been waited for yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr is piped")
        .read_to_string(&mut stderr)
        .expect("stderr is UTF-8");
    let status = child.wait().expect("cannot wait for vmnap run");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        status.success(),
        "vmnap run after SIGTERM: {status}\n{stderr}"
    );
    stderr
}

#[test]
fn run_logs_json_objects_with_level_and_message() {
    let stderr = run_daemon("json");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "too few log lines:\n{stderr}");
    for line in &lines {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\nall of stderr:\n{stderr}"));
        assert!(value.is_object(), "not an object: {line}");
        assert!(value["level"].is_string(), "no level: {line}");
        assert!(value["message"].is_string(), "no message: {line}");
    }
    let messages: Vec<String> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["message"].as_str().map(str::to_owned))
        .collect();
    assert!(
        messages.iter().any(|m| m == "vmnap is running")
            && messages.iter().any(|m| m == "vmnap stopped"),
        "no start and stop messages:\n{stderr}"
    );
}

#[test]
fn run_logs_journald_priority_prefixes_without_timestamps() {
    let stderr = run_daemon("journald");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "too few log lines:\n{stderr}");
    for line in &lines {
        let rest = line
            .strip_prefix('<')
            .and_then(|l| l.split_once('>'))
            .filter(|(p, _)| matches!(*p, "3" | "4" | "6" | "7"));
        let Some((_, message)) = rest else {
            panic!("no <N> priority prefix: {line}\nall of stderr:\n{stderr}");
        };
        assert!(
            !message.starts_with(|c: char| c.is_ascii_digit()) && !message.contains('\x1b'),
            "a timestamp or colour in: {line}"
        );
    }
    assert!(
        lines.iter().any(|l| l.starts_with("<6>vmnap is running")),
        "no `<6>vmnap is running`:\n{stderr}"
    );
}

/// The section names of a 64-bit little-endian ELF file (what `readelf -S` lists).
fn elf_section_names(elf: &[u8]) -> Vec<String> {
    assert_eq!(
        &elf[..6],
        b"\x7fELF\x02\x01",
        "not a 64-bit little-endian ELF file"
    );
    let u16_at = |at: usize| usize::from(u16::from_le_bytes([elf[at], elf[at + 1]]));
    let u32_at = |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| {
        usize::try_from(u64::from_le_bytes(
            elf[at..at + 8].try_into().expect("8 bytes"),
        ))
        .expect("an offset that fits")
    };
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    let header = |i: usize| shoff + i * shentsize;
    let strtab = u64_at(header(shstrndx) + 0x18);
    (0..shnum)
        .map(|i| {
            let start = strtab + u32_at(header(i)) as usize;
            let end = start + elf[start..].iter().position(|&b| b == 0).expect("a NUL");
            String::from_utf8_lossy(&elf[start..end]).into_owned()
        })
        .collect()
}
