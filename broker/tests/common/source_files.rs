//! The broker's own source files, for tests that check rules over the code itself
//! (`architecture.rs`, `house_rules.rs`). Include with
//! `#[path = "common/source_files.rs"] mod source_files;`.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `broker/src`, sorted.
pub fn broker_sources() -> Vec<PathBuf> {
    let mut out = Vec::new();
    collect(&src_dir(), &mut out);
    out.sort();
    out
}

/// `broker/src`.
pub fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read broker/src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}
