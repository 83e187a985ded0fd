//! The Kafka wire protocol: frames, request headers, version negotiation and dispatch.

pub mod apis;
pub mod dispatch;
pub mod errors;
pub mod frame;
pub mod versions;
