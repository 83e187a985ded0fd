//! Listeners and connections: shared listener state (`listener`), connection limits (`limits`),
//! accept loops with TLS (`server`), one task per connection (`connection`) over its stream
//! (`transport`: plain TCP with `sendfile`, or TLS) and the connection's authentication state
//! (`session`). The settings they run with are parsed in
//! `config` (`config::security` per listener, `config::limits`).

pub mod connection;
pub mod limits;
pub mod listener;
pub mod server;
pub mod session;
pub mod transport;
