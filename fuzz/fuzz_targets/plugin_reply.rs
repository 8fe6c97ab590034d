#![no_main]
//! Bytes in: must never panic (see `vane::fuzzing::plugin_reply` for the invariants checked).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vane::fuzzing::plugin_reply(data);
});
