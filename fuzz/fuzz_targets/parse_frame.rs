//! Fuzzes the packet views: `LinkRepr::parse` and smoltcp's views on the payload.
#![no_main]

mod harness {
    include!("../harness/parse_frame.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
