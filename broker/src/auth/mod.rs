//! Security building blocks shared by the admin APIs today and by enforcement later: SCRAM
//! credential derivation (`scram`) and ACL bindings with Kafka's filter semantics (`acl`).
//!
//! Authentication: SASL mechanisms (`sasl`, `plain`, `scram_server`) and TLS (`tls`); the network
//! layer runs the exchanges.
//!
//! `authorizer` makes the ACL decision (`authorizer.class.name`, `super.users`,
//! `allow.everyone.if.no.acl.found`); `acl_authorizer` is the broker's service applying it to
//! the image's ACLs, which handlers ask through `api::authz`.

pub mod acl;
pub mod acl_authorizer;
pub mod authorizer;
pub mod plain;
pub mod sasl;
pub mod scram;
pub mod scram_server;
pub mod tls;
