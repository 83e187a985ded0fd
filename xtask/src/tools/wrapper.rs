//! The Go wrapper module that builds the Kubernetes components: `main.go` and a go.mod generated
//! from `xtask/k8s/go.mod.in` plus the pinned release's own go.mod. Both are written into the
//! cache, never into the repository.

use anyhow::{bail, Context, Result};
use fjord_e2e::tools::{ETCD_VERSION, KUBERNETES_VERSION};

/// The multi-call entry point (`xtask/k8s/main.go`).
pub const MAIN_GO: &str = include_str!("../../k8s/main.go");
const GO_MOD_TEMPLATE: &str = include_str!("../../k8s/go.mod.in");

/// `v1.36.4` -> `v0.36.4`: the staging modules (k8s.io/api, k8s.io/client-go, ...) are published
/// as v0.<minor>.<patch> of the Kubernetes release they belong to.
pub fn staging_version(kubernetes_version: &str) -> Result<String> {
    match kubernetes_version.strip_prefix("v1.") {
        Some(rest) if rest.split('.').count() == 2 => Ok(format!("v0.{rest}")),
        _ => bail!(
            "unexpected Kubernetes version {kubernetes_version:?}, expected v1.<minor>.<patch>"
        ),
    }
}

/// The modules upstream's go.mod replaces with `./staging/...` directories.
pub fn staging_modules(upstream_go_mod: &str) -> Vec<String> {
    upstream_go_mod
        .lines()
        .map(|line| line.trim().trim_start_matches("replace").trim())
        .filter_map(|line| {
            let (module, target) = line.split_once("=>")?;
            target
                .trim()
                .starts_with("./staging/")
                .then(|| module.trim().to_string())
        })
        .collect()
}

/// The wrapper's go.mod for the pinned release, given the release's own go.mod.
pub fn generate_go_mod(upstream_go_mod: &str) -> Result<String> {
    let staging = staging_version(KUBERNETES_VERSION)?;
    let modules = staging_modules(upstream_go_mod);
    if modules.is_empty() {
        bail!("k8s.io/kubernetes@{KUBERNETES_VERSION}'s go.mod has no ./staging replace lines; has its layout changed?");
    }
    let replaces: Vec<String> = modules
        .iter()
        .map(|m| format!("\t{m} => {m} {staging}"))
        .collect();
    let go_version = upstream_go_mod
        .lines()
        .find_map(|l| l.strip_prefix("go "))
        .context("upstream go.mod has no `go` line")?
        .trim();
    // Upstream's godebug defaults change runtime behaviour; they only take effect in the main
    // module, so carry them over.
    let godebug: Vec<&str> = upstream_go_mod
        .lines()
        .filter(|l| l.starts_with("godebug "))
        .collect();
    Ok(GO_MOD_TEMPLATE
        .replace("{{GO_VERSION}}", go_version)
        .replace("{{GODEBUG}}", &godebug.join("\n"))
        .replace("{{KUBERNETES_VERSION}}", KUBERNETES_VERSION)
        .replace("{{ETCD_VERSION}}", ETCD_VERSION)
        .replace("{{STAGING_REPLACES}}", &replaces.join("\n")))
}

/// Linker flags that stamp the upstream version into the binaries, the way Kubernetes' own
/// build does (hack/lib/version.sh), so `/version` and `kubectl version` report the release.
/// The module zip carries no git commit, so that field stays empty.
pub fn ldflags(release_time: &str) -> Result<String> {
    let minor = KUBERNETES_VERSION
        .split('.')
        .nth(1)
        .context("version has no minor part")?;
    let mut flags = vec!["-s".to_string(), "-w".to_string()];
    for package in [
        "k8s.io/component-base/version",
        "k8s.io/client-go/pkg/version",
    ] {
        for (name, value) in [
            ("gitVersion", KUBERNETES_VERSION),
            ("gitMajor", "1"),
            ("gitMinor", minor),
            ("gitCommit", ""),
            ("gitTreeState", "archive"),
            ("buildDate", release_time),
        ] {
            flags.push(format!("-X {package}.{name}={value}"));
        }
    }
    Ok(flags.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_version_follows_the_release() {
        assert_eq!(staging_version("v1.36.4").unwrap(), "v0.36.4");
        assert!(staging_version("v2.0.0").is_err());
    }

    #[test]
    fn generated_go_mod_pins_every_staging_module() {
        let upstream = "module k8s.io/kubernetes\n\ngo 1.26.0\n\ngodebug default=go1.26\n\n\
            require (\n\tk8s.io/api v0.0.0\n)\n\nreplace (\n\
            \tk8s.io/api => ./staging/src/k8s.io/api\n\
            \tk8s.io/client-go => ./staging/src/k8s.io/client-go\n)\n\
            replace example.com/other => example.com/other v1.0.0\n";
        assert_eq!(
            staging_modules(upstream),
            ["k8s.io/api", "k8s.io/client-go"]
        );
        let go_mod = generate_go_mod(upstream).unwrap();
        let staging = staging_version(KUBERNETES_VERSION).unwrap();
        assert!(go_mod.contains(&format!("\tk8s.io/api => k8s.io/api {staging}\n")));
        assert!(go_mod.contains(&format!("k8s.io/kubernetes {KUBERNETES_VERSION}")));
        assert!(go_mod.contains("\ngo 1.26.0\n"));
        assert!(go_mod.contains("\ngodebug default=go1.26\n"));
        assert!(!go_mod.contains("{{"));
        assert!(!go_mod.contains("example.com/other"));
    }
}
