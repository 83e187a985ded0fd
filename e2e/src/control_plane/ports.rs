//! Loopback ports for the control plane.
//!
//! By default every port is picked by the kernel (bind to port 0), so two control planes on one
//! machine never ask for the same port. A port named by the user is checked before anything
//! starts, so "already in use" is reported up front instead of as a crashed component.

use std::net::TcpListener;

use anyhow::{bail, Result};

/// The ports one control plane listens on, all on 127.0.0.1.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Ports {
    pub apiserver: u16,
    pub etcd_client: u16,
    pub etcd_peer: u16,
    pub controller_manager: u16,
    /// kube-scheduler's secure port (only used when a node runs).
    #[serde(default)]
    pub scheduler: u16,
}

/// A port the user asked for, with the flag that chose it (for the error message).
#[derive(Debug, Clone, Copy)]
pub struct Requested {
    pub port: Option<u16>,
    pub flag: &'static str,
}

impl Ports {
    /// Checks the requested ports are free and picks free ones for the rest.
    pub fn choose(apiserver: Requested, etcd_client: Requested) -> Result<Ports> {
        for (what, requested) in [("kube-apiserver", apiserver), ("etcd", etcd_client)] {
            if let Some(port) = requested.port {
                ensure_free(port, what, requested.flag)?;
            }
        }
        // Hold every listener until all are chosen so the kernel cannot hand out one port twice.
        let mut held = Vec::new();
        let mut pick = |requested: Option<u16>| -> Result<u16> {
            if let Some(port) = requested {
                return Ok(port);
            }
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let port = listener.local_addr()?.port();
            held.push(listener);
            Ok(port)
        };
        Ok(Ports {
            apiserver: pick(apiserver.port)?,
            etcd_client: pick(etcd_client.port)?,
            etcd_peer: pick(None)?,
            controller_manager: pick(None)?,
            scheduler: pick(None)?,
        })
    }
}

fn ensure_free(port: u16, what: &str, flag: &str) -> Result<()> {
    if TcpListener::bind(("127.0.0.1", port)).is_err() {
        bail!(
            "port 127.0.0.1:{port} for {what} is already in use: stop whatever listens there \
             (`ss -ltnp 'sport = :{port}'`) or pass another {flag}, or leave {flag} out to get a free port"
        );
    }
    Ok(())
}
