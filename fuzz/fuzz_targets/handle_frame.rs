//! Fuzzes `Surrogate::handle_frame` with a few guests in different states.
#![no_main]

mod harness {
    include!("../harness/handle_frame.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
