//! Fuzzes the QMP reader: `LineBuffer` fed a stream in pieces, `parse_message` on each line.
#![no_main]

mod harness {
    include!("../harness/qmp_reader.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
