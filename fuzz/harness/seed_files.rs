// What the crates' `tests/fuzz_seeds.rs` share: the seed and corpus files of a fuzz target,
// and running them through its harness. Included by those tests (`include!`), not by the
// fuzz targets; `CARGO_MANIFEST_DIR` is then the including crate's, two levels below the
// repository.

use std::path::{Path, PathBuf};

/// `fuzz/KIND/TARGET` (`KIND`: `seeds` or `corpus`).
pub fn fuzz_dir(kind: &str, target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz")
        .join(kind)
        .join(target)
}

/// Every file of `dir`, name and contents, in name order; none if `dir` is missing.
pub fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
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

/// Runs every seed of `target` (at least `min` of them), and every prefix of each, through
/// `run`, the target's harness: none may panic.
pub fn seeds_and_prefixes_pass(target: &str, min: usize, run: fn(&[u8])) {
    let seeds = files(&fuzz_dir("seeds", target));
    assert!(seeds.len() >= min, "only {} seeds", seeds.len());
    for (name, data) in &seeds {
        for len in 0..=data.len() {
            let prefix = &data[..len];
            let result = std::panic::catch_unwind(|| run(prefix));
            assert!(
                result.is_ok(),
                "seed {name} cut to {len} bytes breaks the harness"
            );
        }
    }
}

/// Runs every corpus file of `target`, whole, through `run`: none may panic.
pub fn corpus_passes(target: &str, run: fn(&[u8])) {
    for (name, data) in files(&fuzz_dir("corpus", target)) {
        let result = std::panic::catch_unwind(|| run(&data));
        assert!(result.is_ok(), "corpus file {name} breaks the harness");
    }
}
