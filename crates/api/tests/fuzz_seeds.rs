//! The seed set of the `api_request` fuzz target (`fuzz/seeds/api_request/`) and the corpus
//! it grew (`fuzz/corpus/api_request/`), run through the target's own harness as ordinary
//! tests, so that CI checks them without nightly or libFuzzer. The harness is
//! `fuzz/harness/api_request.rs`, included here word for word.

use std::path::{Path, PathBuf};

mod harness {
    include!("../../../fuzz/harness/api_request.rs");
}

fn fuzz_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz")
        .join(kind)
        .join("api_request")
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
fn every_api_request_seed_and_each_of_its_prefixes_passes_the_fuzz_harness() {
    let seeds = files(&fuzz_dir("seeds"));
    assert!(seeds.len() >= 10, "only {} seeds", seeds.len());
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
fn every_api_request_corpus_file_passes_the_fuzz_harness() {
    for (name, data) in files(&fuzz_dir("corpus")) {
        let result = std::panic::catch_unwind(|| harness::run(&data));
        assert!(result.is_ok(), "corpus file {name} breaks the harness");
    }
}

#[test]
fn the_seeds_are_read_as_requests_but_for_the_refused_ones() {
    // A seed is only worth its bytes if it gets past httparse; those with the token get past
    // the token check too.
    for (name, data) in files(&fuzz_dir("seeds")) {
        let read = vmnap_api::http::read_request(&mut &data[1..]);
        if name.starts_with("refused-") {
            let refusal = read.expect_err("a refused seed").expect("an answer");
            assert!(refusal.status >= 400, "{name}: {}", refusal.status);
            continue;
        }
        let request = read.unwrap_or_else(|e| panic!("seed {name}: {e:?}"));
        assert!(request.path.starts_with("/"), "seed {name}");
        if request
            .header("authorization")
            .is_some_and(|a| a.starts_with("Bearer "))
        {
            assert!(
                harness::authorized(&request),
                "seed {name} has the wrong token"
            );
        }
    }
}
