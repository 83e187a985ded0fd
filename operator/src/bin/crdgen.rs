//! `crdgen [DIR]`: writes the CRDs as YAML into DIR (default `crds/` of the repository).

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds"));
    std::fs::create_dir_all(&dir)?;
    for (file, yaml) in fjord_operator::crd::all_crd_yaml() {
        std::fs::write(dir.join(file), yaml)?;
        println!("wrote {}", dir.join(file).display());
    }
    Ok(())
}
