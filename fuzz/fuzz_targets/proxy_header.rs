#![no_main]
//! Bytes in, PROXY header out: must never panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vane::l4p::fuzzing::proxy_header(data);
});
