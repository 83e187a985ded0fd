//! `crdgen [DIR]`: writes the CRDs as YAML into DIR; without DIR into the repository's `crds/`
//! and the Helm chart's copy, `charts/fjord-operator/files/crds/` (rendered by its templates).

fn main() -> std::io::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dirs = match std::env::args().nth(1) {
        Some(dir) => vec![std::path::PathBuf::from(dir)],
        None => vec![
            root.join("crds"),
            root.join(fjord_operator::crd::CHART_CRD_DIR),
        ],
    };
    for dir in dirs {
        std::fs::create_dir_all(&dir)?;
        for (file, yaml) in fjord_operator::crd::all_crd_yaml() {
            std::fs::write(dir.join(file), yaml)?;
            println!("wrote {}", dir.join(file).display());
        }
    }
    Ok(())
}
