//! QUIC Initial inspection, sans-IO: read long headers, derive the Initial keys from the
//! client's destination connection ID (RFC 9001 for v1, RFC 9369 for v2), remove header
//! protection, decrypt, collect CRYPTO frames across packets and datagrams, and read the
//! ClientHello; read QUIC-LB server IDs out of connection IDs (`lb.rs`). Nothing here touches a
//! socket.

pub mod inspect;
pub mod keys;
pub mod lb;
pub mod packet;

#[cfg(test)]
mod tests;
