//! README.md's two commands against what the code needs: the packages each installs are exactly
//! those of `vmnap_lab::tools::NEEDS`, every program the code asks for by name is in that table,
//! and the README points at nothing outside the repository. `.ci/run` runs the same two
//! commands, read by the same script, in a fresh Debian root, where a package missing here
//! fails as it would for a user; this test says which one before that.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use vmnap_lab::tools::{self, Source, NEEDS};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One of the README's commands, read by `.ci/readme-commands` as `.ci/run` reads it.
fn readme_command(which: &str) -> String {
    let out = Command::new("sh")
        .arg(root().join(".ci/readme-commands"))
        .arg(which)
        .output()
        .expect("run sh .ci/readme-commands");
    assert!(
        out.status.success(),
        ".ci/readme-commands {which}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .trim()
        .to_string()
}

/// The packages of every `apt-get install` in `command`.
fn apt_packages(command: &str) -> BTreeSet<String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let mut packages = BTreeSet::new();
    for (i, pair) in words.windows(2).enumerate() {
        if pair != ["apt-get", "install"] {
            continue;
        }
        for w in &words[i + 2..] {
            if w.starts_with("&&") || w.starts_with(';') || w.starts_with('|') {
                break;
            }
            if w.starts_with('-') {
                continue;
            }
            let end = w.ends_with(')') || w.ends_with(';');
            packages.insert(w.trim_end_matches([')', ';']).to_string());
            if end {
                break;
            }
        }
    }
    packages
}

/// Fails unless the `which` command of the README installs exactly `needed`; returns what it
/// installs.
fn assert_installs(which: &str, command: &str, needed: Vec<&str>) -> BTreeSet<String> {
    let installed = apt_packages(command);
    let needed: BTreeSet<String> = needed.into_iter().map(str::to_string).collect();
    assert!(
        installed == needed,
        "README.md's {which} command installs {installed:?} but needs {needed:?} (missing: \
         {:?}, extra: {:?}); fix the README or vmnap_lab::tools::NEEDS",
        needed.difference(&installed).collect::<Vec<_>>(),
        installed.difference(&needed).collect::<Vec<_>>()
    );
    installed
}

#[test]
fn the_demo_command_installs_exactly_what_the_demo_needs_and_runs_it() {
    let demo = readme_command("demo");
    assert_installs("demo", &demo, tools::demo_packages());
    assert!(demo.starts_with("apt-get update && "), "{demo}");
    assert!(
        demo.contains("cargo run --release -p vmnap-cli -- demo"),
        "{demo}"
    );
}

#[test]
fn the_test_command_installs_everything_the_tests_use_and_runs_every_test_binary() {
    let tests = readme_command("tests");
    let installed = assert_installs("tests", &tests, tools::test_packages());
    assert!(tests.starts_with("apt-get update && "), "{tests}");
    assert!(
        tests.contains("cargo install cargo-deb --locked"),
        "cargo-deb is not installed: {tests}"
    );
    // Plain `cargo test` stops at the first test binary that fails and hides the rest.
    assert!(
        tests.ends_with("cargo test --workspace --no-fail-fast"),
        "{tests}"
    );
    // The QEMU guests' and the lab libvirtd's own lists are part of it.
    for p in vmnap_lab::qemu::APT_PACKAGES
        .iter()
        .chain(vmnap_lab::libvirt::APT_PACKAGES)
    {
        assert!(installed.contains(*p), "{p} is not installed: {tests}");
    }
}

/// What the table calls "in every Debian" is priority `required`, which even a minimal
/// debootstrap has.
#[test]
fn packages_the_readme_leaves_out_are_in_every_debian() {
    let base: BTreeSet<&str> = NEEDS
        .iter()
        .filter(|n| n.source == Source::Base)
        .map(|n| n.package)
        .collect();
    for p in base {
        let out = Command::new("dpkg-query")
            .args(["-W", "-f=${Priority}", p])
            .output()
            .expect("run dpkg-query (Debian's dpkg)");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "required",
            "{p} is not a `required` package, so not on every Debian: the README must \
             install it ({})",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every program the code asks for by name (in `need(&[..])`, `check_tools(&[..])`,
/// `tool("..", ..)`, `find_tool("..")`, `MissingTool::of("..", ..)`) is in the table, so its
/// package is in the README.
#[test]
fn every_program_the_code_asks_for_is_in_the_table() {
    let mut files = Vec::new();
    rust_files(&root().join("crates"), &mut files);
    assert!(files.len() > 50, "found only {} source files", files.len());
    let mut asked = BTreeSet::new();
    // This file names the openers themselves.
    files.retain(|f| !f.ends_with("lab/tests/readme.rs"));
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read a source file");
        for (opener, list) in [
            ("need(&[", true),
            ("check_tools(&[", true),
            ("check_guest_tools(&[", true),
            ("tool(\"", false),
            ("find_tool(\"", false),
            ("MissingTool::of(\"", false),
        ] {
            for (at, _) in text.match_indices(opener) {
                let rest = &text[at + opener.len()..];
                let names = if list {
                    &rest[..rest.find(']').unwrap_or(0)]
                } else {
                    &rest[..rest.find('"').unwrap_or(0)]
                };
                for name in names.split(',').map(|n| n.trim().trim_matches('"')) {
                    let word = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
                    if !name.is_empty() && name.chars().all(word) {
                        asked.insert((name.to_string(), f.clone()));
                    }
                }
            }
        }
    }
    assert!(
        asked.iter().any(|(n, _)| n == "virsh"),
        "the scan found no `virsh`: {asked:?}"
    );
    let unknown: Vec<_> = asked
        .iter()
        .filter(|(n, _)| tools::lookup(n).is_none() && !n.starts_with("surely-not-"))
        .collect();
    assert!(
        unknown.is_empty(),
        "programs asked for by name but not in vmnap_lab::tools::NEEDS: {unknown:?}"
    );
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir)
        .expect("read a source directory")
        .flatten()
    {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// A user who clones vmnap has only the repository: the README links nothing outside it, and
/// every file it links exists.
#[test]
fn the_readme_points_at_nothing_outside_the_repository() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    assert!(
        !readme.contains("../"),
        "README.md points outside the repository"
    );
    let mut links = 0;
    for (at, _) in readme.match_indices("](") {
        let rest = &readme[at + 2..];
        let target = &rest[..rest.find(')').expect("a link ends")];
        assert!(
            !target.contains("://"),
            "README.md links {target}, outside the repository"
        );
        let path = target.split('#').next().unwrap_or_default();
        assert!(
            root().join(path).exists(),
            "README.md links {target}, which is not in the repository"
        );
        links += 1;
    }
    assert!(links > 0, "README.md links no file of the repository");
}
