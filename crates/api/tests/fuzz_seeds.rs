//! The seed set of the `api_request` fuzz target (`fuzz/seeds/api_request/`) and the corpus
//! it grew (`fuzz/corpus/api_request/`), run through the target's own harness as ordinary
//! tests, so that CI checks them without nightly or libFuzzer. The harness is
//! `fuzz/harness/api_request.rs`, included here word for word.

mod seed_files {
    include!("../../../fuzz/harness/seed_files.rs");
}

mod harness {
    include!("../../../fuzz/harness/api_request.rs");
}

#[test]
fn every_api_request_seed_and_each_of_its_prefixes_passes_the_fuzz_harness() {
    seed_files::seeds_and_prefixes_pass("api_request", 10, harness::run);
}

#[test]
fn every_api_request_corpus_file_passes_the_fuzz_harness() {
    seed_files::corpus_passes("api_request", harness::run);
}

#[test]
fn the_seeds_are_read_as_requests_but_for_the_refused_ones() {
    // A seed is only worth its bytes if it gets past httparse; those with the token get past
    // the token check too.
    for (name, data) in seed_files::files(&seed_files::fuzz_dir("seeds", "api_request")) {
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
