//! Listeners and connections: security settings per listener (`security`), shared listener state
//! (`listener`), connection limits (`limits`), accept loops with TLS (`server`), one task per
//! connection (`connection`) and the connection's authentication state (`session`).

pub mod connection;
pub mod limits;
pub mod listener;
pub mod security;
pub mod server;
pub mod session;
