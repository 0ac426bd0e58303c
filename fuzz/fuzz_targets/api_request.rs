//! Fuzzes the API's request reader, `read_request` and `read_request_admitted`, over a
//! connection that delivers the bytes in pieces.
#![no_main]

mod harness {
    include!("../harness/api_request.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
