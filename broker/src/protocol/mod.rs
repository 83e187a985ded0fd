//! The Kafka wire protocol: frames, error codes and the request context (foundations every
//! layer may use), and the request path's front: version negotiation, the API table and
//! dispatch (see `docs/architecture.md` for which is which).

pub mod apis;
pub mod context;
pub mod dispatch;
pub mod errors;
pub mod frame;
pub mod versions;
