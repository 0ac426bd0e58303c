//! The seed set of the `handle_frame` fuzz target (`fuzz/seeds/handle_frame/`), run through
//! the target's own harness as ordinary tests, so that CI checks the seeds without nightly or
//! libFuzzer. The harness is `fuzz/harness/handle_frame.rs`, included here word for word.

use std::path::{Path, PathBuf};

mod harness {
    include!("../../../fuzz/harness/handle_frame.rs");
}

mod support;
use support::pcap;

/// What the crates' seed tests share (the other helpers are for targets with a corpus).
#[allow(dead_code)]
mod seed_files {
    include!("../../../fuzz/harness/seed_files.rs");
}

fn seeds_dir() -> PathBuf {
    seed_files::fuzz_dir("seeds", "handle_frame")
}

/// Every seed file, name and contents, in name order.
fn seeds() -> Vec<(String, Vec<u8>)> {
    seed_files::files(&seeds_dir())
}

#[test]
fn every_handle_frame_seed_passes_the_fuzz_harness() {
    let seeds = seeds();
    assert!(!seeds.is_empty(), "no seeds in {}", seeds_dir().display());
    for (name, data) in &seeds {
        let result = std::panic::catch_unwind(|| harness::run(data));
        assert!(result.is_ok(), "seed {name} breaks the harness");
    }
}

#[test]
fn every_prefix_of_every_seed_passes_the_fuzz_harness() {
    // Truncated frames are the commonest malformed input; this walks all of them.
    for (name, data) in seeds() {
        for len in 0..data.len() {
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
fn every_captured_fixture_frame_is_a_seed() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let seeds: Vec<Vec<u8>> = seeds()
        .into_iter()
        .map(|(_, data)| data[1..].to_vec())
        .collect();
    let mut count = 0;
    for entry in std::fs::read_dir(&fixtures).expect("fixtures directory") {
        let path = entry.expect("a readable directory").path();
        if path.extension().is_none_or(|e| e != "pcap") {
            continue;
        }
        let records = pcap::read(&std::fs::read(&path).expect("readable")).expect("pcap");
        for (i, record) in records.iter().enumerate() {
            assert!(
                seeds.contains(&record.bytes),
                "frame {i} of {} is missing from {}",
                path.display(),
                seeds_dir().display()
            );
            count += 1;
        }
    }
    assert!(count >= 12, "only {count} fixture frames found");
}

#[test]
fn the_fixture_syn_through_the_harness_reaches_the_reset_responder() {
    // The harness is only worth its seeds if they get past the MAC lookup: the captured SYN
    // (with its offload mark) must be answered.
    let data = std::fs::read(seeds_dir().join("tcp_syn-0-syn")).expect("the SYN seed");
    let mut s = harness::surrogate();
    let mut out = vmnap_core::Recorder::default();
    let vnet = vmnap_core::VirtioNetHdr {
        flags: data[0],
        ..vmnap_core::VirtioNetHdr::NONE
    };
    s.handle_frame(
        vmnap_core::Instant::from_millis(1),
        vnet,
        &data[1..],
        &mut out,
    );
    assert_eq!(
        out.verdicts.iter().map(|v| v.1).collect::<Vec<_>>(),
        [vmnap_core::Verdict::Answered(
            vmnap_core::AnswerKind::TcpReset
        )]
    );
    assert_eq!(out.sent.len(), 1);
    let link = vmnap_wire::vlan::LinkRepr::parse(&out.sent[0]).expect("Ethernet");
    assert_eq!(link.src, harness::FIXTURE_GUEST_MAC);
}
