//! The Kafka wire protocol: frames, request headers, version negotiation and dispatch, and
//! the chunked response buffer that lets Fetch responses reference log bytes (`chunked`).

pub mod apis;
pub mod chunked;
pub mod dispatch;
pub mod errors;
pub mod frame;
pub mod versions;
