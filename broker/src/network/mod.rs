//! Listeners and connections: shared listener state (`listener`), connection limits (`limits`),
//! accept loops with TLS (`server`), one task per connection (`connection`) and the
//! connection's authentication state (`session`). The settings they run with are parsed in
//! `config` (`config::security` per listener, `config::limits`).

pub mod connection;
pub mod limits;
pub mod listener;
pub mod server;
pub mod session;
