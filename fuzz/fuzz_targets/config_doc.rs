#![no_main]
//! Bytes in: must never panic (see `vane::fuzzing::config` for the invariants checked).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vane::fuzzing::config(data);
});
