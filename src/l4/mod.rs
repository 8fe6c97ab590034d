//! L4: TCP and UDP listeners, connection limits, the listener flow, and relays.

pub mod connect;
pub mod limits;
pub mod listener;
pub mod relay;
pub mod session;
pub mod shards;
pub mod tcp;
pub mod udp;
