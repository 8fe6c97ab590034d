#![no_main]
//! TLS records in, ClientHello facts out: must never panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vane::l4p::fuzzing::client_hello(data);
});
