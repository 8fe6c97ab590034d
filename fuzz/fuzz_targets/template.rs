#![no_main]
//! Bytes in: must never panic (see `vane::fuzzing::template` for the invariants checked).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vane::fuzzing::template(data);
});
