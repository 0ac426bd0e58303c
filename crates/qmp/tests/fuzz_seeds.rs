//! The seed set of the `qmp_reader` fuzz target (`fuzz/seeds/qmp_reader/`) and the corpus it
//! grew (`fuzz/corpus/qmp_reader/`), run through the target's own harness as ordinary tests,
//! so that CI checks them without nightly or libFuzzer. The harness is
//! `fuzz/harness/qmp_reader.rs`, included here word for word.

use vmnap_qmp::wire::{parse_message, Message};

mod seed_files {
    include!("../../../fuzz/harness/seed_files.rs");
}

mod harness {
    include!("../../../fuzz/harness/qmp_reader.rs");
}

#[test]
fn every_qmp_reader_seed_and_each_of_its_prefixes_passes_the_fuzz_harness() {
    seed_files::seeds_and_prefixes_pass("qmp_reader", 5, harness::run);
}

#[test]
fn every_qmp_reader_corpus_file_passes_the_fuzz_harness() {
    seed_files::corpus_passes("qmp_reader", harness::run);
}

#[test]
fn after_any_seed_a_line_past_the_limit_is_refused_and_leaves_nothing_behind() {
    // Once per seed, not per prefix: each pushes 16 MiB.
    for (name, data) in seed_files::files(&seed_files::fuzz_dir("seeds", "qmp_reader")) {
        let result = std::panic::catch_unwind(|| harness::overlong(&data));
        assert!(result.is_ok(), "seed {name} then an endless line");
    }
}

#[test]
fn every_line_of_the_seeds_is_a_qmp_message() {
    // A seed is only worth its bytes if its lines get past the JSON layer.
    let mut greetings = 0;
    for (name, data) in seed_files::files(&seed_files::fuzz_dir("seeds", "qmp_reader")) {
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
