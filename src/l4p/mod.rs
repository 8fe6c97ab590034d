//! L4+: carriers inspected without terminating them (TLS ClientHello, plaintext HTTP head),
//! then routed by a resolver flow.

pub mod clienthello;
pub mod fuzzing;
pub mod http_head;
pub mod proxy_protocol;
pub mod quic;
pub mod route;
