//! Security building blocks shared by the admin APIs today and by enforcement later: SCRAM
//! credential derivation (`scram`) and ACL bindings with Kafka's filter semantics (`acl`).
//!
//! Nothing here authenticates or authorizes a request yet; the metadata image stores what these
//! types describe, and the SASL and authorizer work reads it from there.

pub mod acl;
pub mod scram;
