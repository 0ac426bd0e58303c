//! The seed set of the `qmp_reader` fuzz target (`fuzz/seeds/qmp_reader/`) and the corpus it
//! grew (`fuzz/corpus/qmp_reader/`), run through the target's own harness as ordinary tests,
//! so that CI checks them without nightly or libFuzzer. The harness is
//! `fuzz/harness/qmp_reader.rs`, included here word for word.

use std::path::{Path, PathBuf};

use vmnap_qmp::wire::{parse_message, Message};

mod harness {
    include!("../../../fuzz/harness/qmp_reader.rs");
}

fn fuzz_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz")
        .join(kind)
        .join("qmp_reader")
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
fn every_qmp_reader_seed_and_each_of_its_prefixes_passes_the_fuzz_harness() {
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
fn every_qmp_reader_corpus_file_passes_the_fuzz_harness() {
    for (name, data) in files(&fuzz_dir("corpus")) {
        let result = std::panic::catch_unwind(|| harness::run(&data));
        assert!(result.is_ok(), "corpus file {name} breaks the harness");
    }
}

#[test]
fn after_any_seed_a_line_past_the_limit_is_refused_and_leaves_nothing_behind() {
    // Once per seed, not per prefix: each pushes 16 MiB.
    for (name, data) in files(&fuzz_dir("seeds")) {
        let result = std::panic::catch_unwind(|| harness::overlong(&data));
        assert!(result.is_ok(), "seed {name} then an endless line");
    }
}

#[test]
fn every_line_of_the_seeds_is_a_qmp_message() {
    // A seed is only worth its bytes if its lines get past the JSON layer.
    let mut greetings = 0;
    for (name, data) in files(&fuzz_dir("seeds")) {
        for line in data[1..].split(|&b| b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let message = parse_message(line).unwrap_or_else(|e| panic!("seed {name}: {e}"));
            greetings += usize::from(matches!(message, Message::Greeting(_)));
        }
    }
    assert!(greetings >= 2, "only {greetings} greetings");
}
