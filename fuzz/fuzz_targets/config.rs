//! Fuzzes `Config::parse`: config text in, a config or a refusal naming the file out.
#![no_main]

mod harness {
    include!("../harness/config.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
