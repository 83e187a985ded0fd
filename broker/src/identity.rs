//! The data directory's identity (`meta.properties`): which cluster and node it belongs to.
//! An empty directory is formatted on first start; a directory of another cluster or node is
//! refused, because serving it would mix two clusters' data.

use std::path::Path;

use anyhow::{bail, Context};

/// Returns the cluster id, formatting the directory when it has none yet.
pub fn load_or_format(
    dir: &Path,
    node_id: i32,
    configured_cluster: Option<&str>,
) -> anyhow::Result<String> {
    let path = dir.join("meta.properties");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let props = crate::config::parse_properties(&text)?;
            let get = |k: &str| props.iter().find(|(pk, _)| pk == k).map(|(_, v)| v.clone());
            let cluster = get("cluster.id")
                .with_context(|| format!("{} has no cluster.id", path.display()))?;
            let stored_node: i32 = get("node.id")
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{} has no valid node.id", path.display()))?;
            if stored_node != node_id {
                bail!(
                    "{} belongs to node.id {stored_node}, but this broker is node.id {node_id}; \
                     use the right data directory or an empty one",
                    path.display()
                );
            }
            if let Some(c) = configured_cluster {
                if c != cluster {
                    bail!(
                        "{} belongs to cluster {cluster}, but cluster.id is configured as {c}; \
                         refusing to mix clusters",
                        path.display()
                    );
                }
            }
            Ok(cluster)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let cluster = configured_cluster
                .map(str::to_string)
                .unwrap_or_else(new_cluster_id);
            let text = format!("version=1\ncluster.id={cluster}\nnode.id={node_id}\n");
            crate::log::segment::write_atomically(&path, text.as_bytes())?;
            tracing::info!(cluster_id = %cluster, dir = %dir.display(), "formatted data directory");
            Ok(cluster)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// A Kafka-style cluster id: 16 random bytes, URL-safe base64 without padding (22 chars).
pub fn new_cluster_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = String::new();
    for b in bytes {
        bits = (bits << 8) | b as u32;
        nbits += 8;
        while nbits >= 6 {
            nbits -= 6;
            out.push(ALPHABET[((bits >> nbits) & 63) as usize] as char);
        }
    }
    if nbits > 0 {
        out.push(ALPHABET[((bits << (6 - nbits)) & 63) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_then_refuses_mismatch() {
        let d = tempfile::tempdir().unwrap();
        let id = load_or_format(d.path(), 1, None).unwrap();
        assert_eq!(id.len(), 22);
        assert_eq!(load_or_format(d.path(), 1, None).unwrap(), id);
        assert!(load_or_format(d.path(), 2, None)
            .unwrap_err()
            .to_string()
            .contains("node.id"));
        assert!(load_or_format(d.path(), 1, Some("other"))
            .unwrap_err()
            .to_string()
            .contains("cluster"));
    }
}
