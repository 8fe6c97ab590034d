#![no_main]
//! Datagrams in, QUIC Initial inspection out: must never panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vane::l4p::fuzzing::quic_initial(data);
});
