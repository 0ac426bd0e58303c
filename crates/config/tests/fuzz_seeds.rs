//! The seed set of the `config` fuzz target (`fuzz/seeds/config/`) and the corpus it grew
//! (`fuzz/corpus/config/`), run through the target's own harness as ordinary tests, so that
//! CI checks them without nightly or libFuzzer. The harness is `fuzz/harness/config.rs`,
//! included here word for word.

use std::path::{Path, PathBuf};

mod harness {
    include!("../../../fuzz/harness/config.rs");
}

fn fuzz_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz")
        .join(kind)
        .join("config")
}

/// Every file of `dir`, name and contents, in name order; none if `dir` is missing.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .map(|entry| {
            let path = entry.expect("a readable directory").path();
            let name = path
                .file_name()
                .expect("a file in the directory")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("a readable file"))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_config_seed_and_each_of_its_prefixes_passes_the_fuzz_harness() {
    let seeds = files(&fuzz_dir("seeds"));
    assert!(seeds.len() >= 5, "only {} seeds", seeds.len());
    for (name, data) in &seeds {
        for len in 0..=data.len() {
            let prefix = &data[..len];
            let result = std::panic::catch_unwind(|| harness::run(prefix));
            assert!(
                result.is_ok(),
                "seed {name} cut to {len} bytes breaks the harness"
            );
        }
    }
}

#[test]
fn every_config_corpus_file_passes_the_fuzz_harness() {
    for (name, data) in files(&fuzz_dir("corpus")) {
        let result = std::panic::catch_unwind(|| harness::run(&data));
        assert!(result.is_ok(), "corpus file {name} breaks the harness");
    }
}

#[test]
fn the_seeds_are_accepted_but_for_the_refused_ones() {
    // A seed is only worth its bytes if it gets past the TOML layer into validation.
    for (name, data) in files(&fuzz_dir("seeds")) {
        let text = String::from_utf8(data).expect("UTF-8 seeds");
        let parsed = vmnap_config::Config::parse(&text, Path::new(harness::FILE));
        if name.starts_with("refused-") {
            let e = parsed.expect_err("a refused seed");
            assert!(e.line.is_some() && e.key.is_some(), "{name}: {e}");
        } else {
            let config = parsed.unwrap_or_else(|e| panic!("seed {name}: {e}"));
            assert!(!config.guests.is_empty(), "seed {name} has no guest");
        }
    }
}

#[test]
fn the_example_config_passes_the_fuzz_harness() {
    // The seed `example-without-comments` is a snapshot of it, which may lag behind; the
    // example itself is checked here.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("example.toml");
    let example = std::fs::read(&path).expect("example.toml");
    harness::run(&example);
    let text = String::from_utf8(example).expect("UTF-8");
    let config = vmnap_config::Config::parse(&text, &path).expect("the example is accepted");
    assert!(config.guests.len() >= 4);
}
