//! The seed set of the `parse_frame` fuzz target (`fuzz/seeds/parse_frame/`), run through the
//! target's own harness as ordinary tests. The harness is `fuzz/harness/parse_frame.rs`,
//! included here word for word.

use std::path::Path;

mod harness {
    include!("../../../fuzz/harness/parse_frame.rs");
}

#[test]
fn every_parse_frame_seed_and_each_of_its_prefixes_passes_the_fuzz_harness() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/parse_frame");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a readable directory").path();
        let data = std::fs::read(&path).expect("a readable seed");
        for len in 0..=data.len() {
            let prefix = &data[..len];
            let result = std::panic::catch_unwind(|| harness::run(prefix));
            assert!(result.is_ok(), "{} cut to {len} bytes", path.display());
        }
        count += 1;
    }
    assert!(count >= 12, "only {count} seeds in {}", dir.display());
}
