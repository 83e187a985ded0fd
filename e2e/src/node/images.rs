//! The node's own images (the pod sandbox `pause` and CoreDNS), built from the binaries
//! `cargo xtask tools` compiled, and the import of any image archive into the node's containerd.
//!
//! There is no registry: every image a pod uses is imported before the kubelet needs it, and
//! pods use `imagePullPolicy: IfNotPresent`/`Never`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::config::{Layout, PAUSE_IMAGE};
use crate::oci::{self, ImageFile, ImageSpec};
use crate::tools::{Tools, COREDNS_VERSION};

/// CoreDNS, as the node's manifests name it.
pub const COREDNS_IMAGE: &str = concat!("localhost/coredns:", "v1.14.7");

/// Writes the pause and CoreDNS image archives (into the node directory) and returns them.
pub fn node_images(tools: &Tools, layout: &Layout) -> Result<Vec<PathBuf>> {
    debug_assert!(COREDNS_IMAGE.ends_with(COREDNS_VERSION));
    let dir = layout.path("images");
    std::fs::create_dir_all(&dir)?;

    let mut pause = ImageSpec::new(PAUSE_IMAGE);
    pause
        .files
        .push(ImageFile::host(tools.binary("pause"), "/pause", 0o755));
    pause.entrypoint = vec!["/pause".into()];
    pause.user = "65535:65535".into();
    let pause_archive = dir.join("pause.oci.tar");
    oci::write_archive(&pause, &pause_archive).context("writing the pause image")?;

    // CoreDNS is a static Go binary; it binds port 53, so it runs as root in its container.
    let mut coredns = ImageSpec::new(COREDNS_IMAGE);
    coredns.add_minimal_base();
    coredns
        .files
        .push(ImageFile::host(tools.binary("coredns"), "/coredns", 0o755));
    coredns.entrypoint = vec!["/coredns".into()];
    coredns.exposed_ports = vec!["53/udp".into(), "53/tcp".into()];
    let coredns_archive = dir.join("coredns.oci.tar");
    oci::write_archive(&coredns, &coredns_archive).context("writing the CoreDNS image")?;
    Ok(vec![pause_archive, coredns_archive])
}

/// Imports an archive into the node's containerd and checks the manifest digest it reports.
pub fn import(tools: &Tools, socket: &Path, archive: &Path) -> Result<()> {
    let opened = oci::open_archive(archive)?;
    oci::import(&tools.binary("ctr"), socket, archive, &opened.image)
        .with_context(|| format!("importing {} into the node", archive.display()))
}
