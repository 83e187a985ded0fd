//! Listeners and connections.

pub mod connection;
pub mod server;
