//! A whole local cluster: the control plane plus one real node (see [`crate::node`]).
//!
//! Order matters: the node's namespaces and link come first (the apiserver binds the host end of
//! the link, so pods reach it through the `kubernetes` Service), then the control plane, then
//! the node's components. `down` reverses it and leaves the host as it was.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::control_plane::{ControlPlane, Lifetime, Options};
use crate::node;

/// A running cluster: its control plane (kubeconfig, apiserver URL) and node address.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub control_plane: ControlPlane,
    pub node: node::NodeState,
}

impl Cluster {
    /// The address clients on the host use to reach node ports.
    pub fn node_address(&self) -> std::net::Ipv4Addr {
        self.node.link.node_ip()
    }

    /// The running cluster in `dir`, if its control plane is healthy and its node ready.
    pub fn find_running(dir: &Path) -> Option<Cluster> {
        let control_plane = ControlPlane::find_running(dir)?;
        if !node::is_running(dir) {
            return None;
        }
        Some(Cluster {
            control_plane,
            node: node::read_state(dir)?,
        })
    }

    /// Returns the running cluster in `dir` or starts a fresh one (detached: it runs until
    /// `down`). `images` are OCI archives imported into the node besides pause and CoreDNS.
    pub fn up(dir: &Path, images: &[PathBuf]) -> Result<Cluster> {
        if let Some(running) = Cluster::find_running(dir) {
            return Ok(running);
        }
        // Whatever a killed run left behind goes first.
        Cluster::down(dir).context("cleaning up an earlier cluster in the same directory")?;
        let mut state = node::create_namespaces(dir)?;
        let mut options = Options::new(dir.to_path_buf(), Lifetime::Detached);
        options.node_link = Some(state.link.host_ip());
        let started = (|| -> Result<ControlPlane> {
            let control_plane = ControlPlane::up(&options)?;
            node::start_components(dir, &mut state, &control_plane, images)?;
            Ok(control_plane)
        })();
        match started {
            Ok(control_plane) => Ok(Cluster {
                control_plane,
                node: state,
            }),
            Err(error) => {
                let report = node::log_report(dir, 30);
                let _ = Cluster::down(dir);
                Err(error.context(format!(
                    "starting the local cluster in {} failed; everything it started was stopped. \
                     Node logs:\n{report}",
                    dir.display()
                )))
            }
        }
    }

    /// Stops the node (pods included) and the control plane; removes their data, keeps logs.
    pub fn down(dir: &Path) -> Result<Vec<String>> {
        let mut stopped = node::stop(dir)?;
        stopped.extend(ControlPlane::down(dir)?);
        Ok(stopped)
    }

    /// Component log tails for a failure report.
    pub fn log_report(&self, lines: usize) -> String {
        format!(
            "{}{}",
            self.control_plane.log_report(lines),
            node::log_report(&self.control_plane.dir, lines)
        )
    }
}
