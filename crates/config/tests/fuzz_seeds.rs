//! The seed set of the `config` fuzz target (`fuzz/seeds/config/`) and the corpus it grew
//! (`fuzz/corpus/config/`), run through the target's own harness as ordinary tests, so that
//! CI checks them without nightly or libFuzzer. The harness is `fuzz/harness/config.rs`,
//! included here word for word.

use std::path::Path;

mod seed_files {
    include!("../../../fuzz/harness/seed_files.rs");
}

mod harness {
    include!("../../../fuzz/harness/config.rs");
}

#[test]
fn every_config_seed_and_each_of_its_prefixes_passes_the_fuzz_harness() {
    seed_files::seeds_and_prefixes_pass("config", 5, harness::run);
}

#[test]
fn every_config_corpus_file_passes_the_fuzz_harness() {
    seed_files::corpus_passes("config", harness::run);
}

#[test]
fn the_seeds_are_accepted_but_for_the_refused_ones() {
    // A seed is only worth its bytes if it gets past the TOML layer into validation.
    for (name, data) in seed_files::files(&seed_files::fuzz_dir("seeds", "config")) {
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
