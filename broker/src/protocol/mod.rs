//! The Kafka wire protocol: frames, error codes, the request context and the chunked response
//! buffer that lets Fetch responses reference log bytes (foundations every layer may use), and
//! the request path's front: version negotiation, the API table and dispatch (see
//! `docs/architecture.md` for which is which).

pub mod apis;
pub mod chunked;
pub mod context;
pub mod dispatch;
pub mod errors;
pub mod frame;
pub mod versions;
