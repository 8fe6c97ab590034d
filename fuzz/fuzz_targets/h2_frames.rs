#![no_main]
//! Bytes in: must never panic (see `vane::fuzzing::h2_frames` for the invariants checked).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vane::fuzzing::h2_frames(data);
});
