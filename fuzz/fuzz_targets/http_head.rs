#![no_main]
//! Bytes in: must never panic (see `vane::fuzzing::http_head` for the invariants checked).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vane::fuzzing::http_head(data);
});
