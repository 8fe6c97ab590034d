//! Built-in middleware logic, sans-IO: each takes resolved inputs and returns a decision.
//! (Terminators live with the layers that carry them out.)

pub mod detect;
pub mod external;
pub mod matcher;
pub mod ratelimit;
pub mod shared_limits;
