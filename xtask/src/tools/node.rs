//! The node phase of `cargo xtask tools`: what a kubelet needs to run pods here — containerd (+ its
//! runc shim and `ctr`), runc, crictl, the CNI plugins, CoreDNS and the sandbox `pause` binary.
//!
//! Why build them: there is no container registry, Docker or distribution package for these pinned
//! versions on the test machines, but the Go module proxy is reachable, so they are built from the
//! pinned modules (`fjord_e2e::tools`), the way the Kubernetes components are. Each module is
//! downloaded (time-bounded, `GOPROXY` on), copied out of the read-only module cache and built
//! inside the copy with `GOPROXY=off`, so upstream's own go.mod — replace directives, vanity module
//! path (cri-tools is `sigs.k8s.io/cri-tools`) and all — is used as is. `pause` is upstream's
//! `pause.c` from the `k8s.io/kubernetes` module, compiled with `gcc -static`.
//!
//! The node tools have their own stamp (`bin/.node-complete`): its first line is the pins
//! (`fjord_e2e::tools::node_versions`, which `Tools::node_missing` checks), then one line per tool
//! recording its module, version and build recipe. When it matches, nothing runs (not even `go`);
//! when one pin or recipe changes, only that tool is rebuilt.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fjord_e2e::tools::{
    node_versions, Tools, CNI_PLUGINS_VERSION, CONTAINERD_VERSION, COREDNS_VERSION, CRICTL_VERSION,
    KUBERNETES_VERSION, NODE_COMPLETE_MARKER, RUNC_VERSION,
};

use super::go::{self, Go, Limits};
use super::{fnv1a, go_step, DOWNLOAD};

/// Records the tools built so far while the stamp is absent, so a failed run resumes after the last
/// tool that was built.
const PROGRESS_MARKER: &str = ".node-progress";

/// One node tool is at most a few minutes of compiling on 2 cores; `-v` logs every package, and
/// linking (the longest quiet part) takes about a minute.
const BUILD: Limits = Limits {
    total: Duration::from_secs(40 * 60),
    stall: Duration::from_secs(10 * 60),
};

/// `go` flags for the node builds: two compile jobs (two cores); the upstream go.sum is complete,
/// so the module graph must not change (`-mod=readonly`).
const GOFLAGS: &str = "-mod=readonly -buildvcs=false -p=2";

/// Where a built binary goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dest {
    /// `Tools::bin_dir()`
    Bin,
    /// `Tools::cni_bin_dir()`
    Cni,
}

/// One `go build` of one main package.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GoBuild {
    /// The package, relative to the module root (`./cmd/ctr`).
    package: &'static str,
    /// The binary's name.
    output: &'static str,
    tags: &'static str,
}

/// How one tool is built from one Go module, following upstream's Makefile.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Recipe {
    name: &'static str,
    /// The module path to download (`go mod download module@version`).
    module: &'static str,
    version: &'static str,
    cgo: bool,
    /// Extra `go build` flags.
    flags: &'static [&'static str],
    ldflags: String,
    dest: Dest,
    builds: Vec<GoBuild>,
}

fn go_build(package: &'static str, output: &'static str, tags: &'static str) -> GoBuild {
    GoBuild {
        package,
        output,
        tags,
    }
}

/// The node tools' Go recipes, from the pins. `pause` is not Go; see [`build_pause`].
fn recipes() -> Vec<Recipe> {
    let containerd = "github.com/containerd/containerd/v2";
    vec![
        Recipe {
            name: "containerd",
            module: containerd,
            version: CONTAINERD_VERSION,
            cgo: false,
            flags: &[],
            // containerd's Makefile: VERSION is `git describe` (`v2.3.7`), PACKAGE the module path.
            ldflags: format!(
                "-s -w -X {containerd}/version.Version={CONTAINERD_VERSION} \
                 -X {containerd}/version.Package={containerd}"
            ),
            dest: Dest::Bin,
            builds: vec![
                go_build("./cmd/containerd", "containerd", "urfave_cli_no_docs"),
                // The Makefile builds the shim without gRPC (it only serves ttrpc).
                go_build(
                    "./cmd/containerd-shim-runc-v2",
                    "containerd-shim-runc-v2",
                    "urfave_cli_no_docs no_grpc",
                ),
                go_build("./cmd/ctr", "ctr", "urfave_cli_no_docs"),
            ],
        },
        Recipe {
            name: "runc",
            module: "github.com/opencontainers/runc",
            version: RUNC_VERSION,
            // libcontainer/nsenter is C, and seccomp goes through libseccomp.
            cgo: true,
            // The Makefile's default (dynamic PIE) build.
            flags: &["-buildmode=pie"],
            // runc's version comes from its VERSION file (go:embed), not from ldflags; the commit
            // is unknown in a module zip, so `main.gitCommit` stays unset.
            ldflags: "-s -w".into(),
            dest: Dest::Bin,
            // Upstream's default tags minus `libpathrs` (which needs the Rust libpathrs C library;
            // without it runc uses its Go implementation).
            builds: vec![go_build(".", "runc", "seccomp urfave_cli_no_docs")],
        },
        Recipe {
            name: "crictl",
            module: "github.com/kubernetes-sigs/cri-tools",
            version: CRICTL_VERSION,
            cgo: false,
            flags: &[],
            // The Makefile strips the `v` from `git describe`.
            ldflags: format!(
                "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version={}",
                CRICTL_VERSION.trim_start_matches('v')
            ),
            dest: Dest::Bin,
            builds: vec![go_build("./cmd/crictl", "crictl", "")],
        },
        Recipe {
            name: "cni-plugins",
            module: "github.com/containernetworking/plugins",
            version: CNI_PLUGINS_VERSION,
            cgo: false,
            flags: &[],
            // What the release script sets; `CNI_COMMAND=VERSION <plugin>` and `--help` show it.
            ldflags: format!(
                "-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion={CNI_PLUGINS_VERSION}"
            ),
            dest: Dest::Cni,
            builds: vec![
                go_build("./plugins/main/bridge", "bridge", ""),
                go_build("./plugins/ipam/host-local", "host-local", ""),
                go_build("./plugins/main/loopback", "loopback", ""),
                go_build("./plugins/meta/portmap", "portmap", ""),
            ],
        },
        Recipe {
            name: "coredns",
            module: "github.com/coredns/coredns",
            version: COREDNS_VERSION,
            cgo: false,
            flags: &[],
            // The version is a constant in coremain; GitCommit (unknown here) is the tag instead.
            ldflags: format!(
                "-s -w -X github.com/coredns/coredns/coremain.GitCommit={COREDNS_VERSION}"
            ),
            dest: Dest::Bin,
            builds: vec![go_build(".", "coredns", "")],
        },
    ]
}

/// `pause`'s stamp line: its source module and compiler flags.
fn pause_stamp_line() -> String {
    format!(
        "pause k8s.io/kubernetes@{KUBERNETES_VERSION} recipe={:016x}",
        fnv1a(PAUSE_CFLAGS.join(" ").as_bytes())
    )
}

/// gcc flags for `pause` (upstream: `-Os -Wall -Werror -static`, we were asked for `-O2`).
const PAUSE_CFLAGS: &[&str] = &["-static", "-O2", "-Wall", "-Werror"];

/// A tool's stamp line: module, version and a hash of the whole recipe (its `Debug` text: should
/// a Rust release print it differently, the tools are rebuilt once, which is harmless).
fn stamp_line(recipe: &Recipe) -> String {
    format!(
        "{} {}@{} recipe={:016x}",
        recipe.name,
        recipe.module,
        recipe.version,
        fnv1a(format!("{recipe:?}").as_bytes())
    )
}

/// The whole stamp for the current pins.
fn stamp(recipes: &[Recipe]) -> String {
    let mut lines = vec![node_versions()];
    lines.extend(recipes.iter().map(stamp_line));
    lines.push(pause_stamp_line());
    lines.join("\n") + "\n"
}

/// Whether `line` is recorded as built in the old stamp or the progress file.
fn recorded(previous: &str, line: &str) -> bool {
    previous.lines().any(|l| l == line)
}

fn outputs(tools: &Tools, recipe: &Recipe) -> Vec<PathBuf> {
    let dir = match recipe.dest {
        Dest::Bin => tools.bin_dir(),
        Dest::Cni => tools.cni_bin_dir(),
    };
    recipe.builds.iter().map(|b| dir.join(b.output)).collect()
}

pub fn run(tools: &Tools, force: bool) -> Result<()> {
    let started = Instant::now();
    let recipes = recipes();
    let stamp = stamp(&recipes);
    let bin = tools.bin_dir();
    let stamp_path = bin.join(NODE_COMPLETE_MARKER);
    let progress_path = bin.join(PROGRESS_MARKER);
    let old_stamp = std::fs::read_to_string(&stamp_path).unwrap_or_default();
    if !force && old_stamp == stamp && tools.node_missing().is_empty() {
        println!(
            "tools: node tools ({}) are ready in {} (cached)",
            node_versions(),
            bin.display()
        );
        return Ok(());
    }
    // What is already built for the current pins: the old stamp's lines (a pin change leaves the
    // other tools' lines as they were), plus the progress of an interrupted run.
    let previous = if force {
        String::new()
    } else {
        old_stamp + &std::fs::read_to_string(&progress_path).unwrap_or_default()
    };
    let todo: Vec<&Recipe> = recipes
        .iter()
        .filter(|r| {
            !recorded(&previous, &stamp_line(r)) || !outputs(tools, r).iter().all(|p| p.is_file())
        })
        .collect();
    let pause_todo = !recorded(&previous, &pause_stamp_line()) || !tools.binary("pause").is_file();

    crate::deps::ensure_system_packages()?;
    let go = Go::find()?;
    println!(
        "tools: provisioning node tools ({}) into {} with {}",
        node_versions(),
        tools.dir.display(),
        go.version
    );
    let src = tools.dir.join("node-src");
    for dir in [&src, &bin, &tools.cni_bin_dir(), &tools.dir.join("logs")] {
        std::fs::create_dir_all(dir)?;
    }
    // From here until the end the stamp is absent: the node tools are incomplete.
    let _ = std::fs::remove_file(&stamp_path);
    let mut progress: String = recipes
        .iter()
        .filter(|r| !todo.contains(r))
        .map(stamp_line)
        .chain((!pause_todo).then(pause_stamp_line))
        .map(|line| line + "\n")
        .collect();
    std::fs::write(&progress_path, &progress)?;

    for recipe in recipes.iter() {
        if !todo.contains(&recipe) {
            println!("tools: {} {} is current", recipe.name, recipe.version);
            continue;
        }
        let step = Instant::now();
        build_go_tool(&go, tools, &src, recipe)?;
        println!(
            "tools: built {} {} ({}) in {:.0?}",
            recipe.name,
            recipe.version,
            recipe
                .builds
                .iter()
                .map(|b| b.output)
                .collect::<Vec<_>>()
                .join(", "),
            step.elapsed()
        );
        progress += &(stamp_line(recipe) + "\n");
        std::fs::write(&progress_path, &progress)?;
    }
    if pause_todo {
        let step = Instant::now();
        build_pause(&go, tools, &src)?;
        println!(
            "tools: built pause (k8s.io/kubernetes@{KUBERNETES_VERSION} build/pause) in {:.0?}",
            step.elapsed()
        );
    } else {
        println!("tools: pause is current");
    }

    std::fs::write(&stamp_path, stamp)?;
    let _ = std::fs::remove_file(&progress_path);
    println!(
        "tools: node tools done in {:.0?}; binaries in {}, CNI plugins in {}",
        started.elapsed(),
        bin.display(),
        tools.cni_bin_dir().display()
    );
    Ok(())
}

/// Downloads `module@version` into the module cache (time-bounded) and returns its directory there.
fn download_module(
    go: &Go,
    cwd: &Path,
    module: &str,
    version: &str,
    log: &Path,
) -> Result<PathBuf> {
    let json = super::mod_download_json(go, cwd, &format!("{module}@{version}"), log)?;
    json.get("Dir")
        .and_then(|d| d.as_str())
        .map(PathBuf::from)
        .with_context(|| {
            format!(
                "`go mod download -json {module}@{version}` gave no Dir (see {})",
                log.display()
            )
        })
}

fn build_go_tool(go: &Go, tools: &Tools, src: &Path, recipe: &Recipe) -> Result<()> {
    let logs = tools.dir.join("logs");
    println!(
        "tools: building {} {} (logs: {})",
        recipe.name,
        recipe.version,
        logs.join(format!("node-{}-*.log", recipe.name)).display(),
    );
    let module_log = logs.join(format!("node-{}-module.log", recipe.name));
    let module_dir = download_module(go, src, recipe.module, recipe.version, &module_log)?;
    let copy = src.join(format!("{}@{}", recipe.name, recipe.version));
    copy_module(&module_dir, &copy)?;

    let cgo = if recipe.cgo { "1" } else { "0" };
    for build in &recipe.builds {
        // Resolving the import graph downloads every module the package needs (GOPROXY on).
        let download_log = logs.join(format!(
            "node-{}-{}-download.log",
            recipe.name, build.output
        ));
        go_step(
            go,
            go.command(&copy, GOFLAGS)
                .env("CGO_ENABLED", cgo)
                .args(["list", "-x", "-deps", "-tags", build.tags])
                .args(["-f", "{{.ImportPath}}", build.package]),
            &download_log,
            DOWNLOAD,
            &format!("downloading Go modules for {}", build.output),
        )?;
    }
    let dest = outputs(tools, recipe);
    for (build, dest) in recipe.builds.iter().zip(&dest) {
        let build_log = logs.join(format!("node-{}-{}-build.log", recipe.name, build.output));
        let tmp = dest.with_extension("tmp");
        go_step(
            go,
            go.command(&copy, GOFLAGS)
                .env("CGO_ENABLED", cgo)
                .env("GOPROXY", "off")
                .args(["build", "-v", "-trimpath"])
                .args(recipe.flags)
                .args(["-tags", build.tags, "-ldflags", &recipe.ldflags, "-o"])
                .arg(&tmp)
                .arg(build.package),
            &build_log,
            BUILD,
            &format!("building {} {}", build.output, recipe.version),
        )?;
        std::fs::rename(&tmp, dest)
            .with_context(|| format!("moving {} to {}", tmp.display(), dest.display()))?;
    }
    Ok(())
}

/// Copies a module out of the (read-only) module cache into `to`, writable, so `go` can run in it as
/// the main module. Skipped when an earlier run completed the copy.
fn copy_module(from: &Path, to: &Path) -> Result<()> {
    let done = to.join(".fjord-copied");
    if done.is_file() {
        return Ok(());
    }
    if to.exists() {
        std::fs::remove_dir_all(to).with_context(|| format!("removing {}", to.display()))?;
    }
    copy_tree(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    std::fs::write(done, "")?;
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            // std::fs::copy keeps the read-only mode of the module cache; make it writable.
            std::fs::write(&target, std::fs::read(entry.path())?)?;
        }
    }
    Ok(())
}

/// `TAG ?= 3.10.2` in `build/pause/Makefile`: the version upstream stamps into `pause`.
fn pause_tag(makefile: &str) -> Option<&str> {
    makefile.lines().find_map(|line| {
        let (name, value) = line.split_once("?=")?;
        (name.trim() == "TAG").then(|| value.trim())
    })
}

/// Compiles upstream's `pause.c` (from the `k8s.io/kubernetes` module) with `gcc -static`.
fn build_pause(go: &Go, tools: &Tools, src: &Path) -> Result<()> {
    let log = tools.dir.join("logs").join("node-pause.log");
    println!("tools: building pause (log: {})", log.display());
    let module = download_module(go, src, "k8s.io/kubernetes", KUBERNETES_VERSION, &log)?;
    let pause = module.join("build/pause");
    let makefile = std::fs::read_to_string(pause.join("Makefile"))
        .with_context(|| format!("reading {}", pause.join("Makefile").display()))?;
    let tag = pause_tag(&makefile).unwrap_or("unknown");
    let source = pause.join("linux/pause.c");
    let dest = tools.binary("pause");
    let tmp = dest.with_extension("tmp");
    let result = go::run_logged(
        Command::new("gcc")
            .args(PAUSE_CFLAGS)
            // As the Makefile's `-DVERSION=v$(TAG)-$(REV)`, with the release for the git revision.
            .arg(format!("-DVERSION=v{tag}-{KUBERNETES_VERSION}"))
            .arg("-o")
            .arg(&tmp)
            .arg(&source),
        &log,
        Limits {
            total: Duration::from_secs(5 * 60),
            stall: Duration::from_secs(5 * 60),
        },
        None,
    );
    if let Err(failure) = result {
        let detail = std::fs::read_to_string(&log)
            .map(|t| go::last_line(&t))
            .unwrap_or_default();
        bail!(
            "compiling {} with gcc {failure}: {detail} — pause needs gcc and a static libc \
             (Debian gcc, libc6-dev) (log: {})",
            source.display(),
            log.display()
        );
    }
    std::fs::rename(&tmp, &dest)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_line_changes_with_the_pin_and_the_recipe() {
        let recipe = recipes().into_iter().next().unwrap();
        let line = stamp_line(&recipe);
        assert!(line.starts_with(&format!(
            "containerd github.com/containerd/containerd/v2@{CONTAINERD_VERSION} recipe="
        )));
        let bumped = Recipe {
            version: "v9.9.9",
            ..recipe.clone()
        };
        assert_ne!(stamp_line(&bumped), line);
        let retagged = Recipe {
            ldflags: recipe.ldflags.clone() + " -X x.y=z",
            ..recipe.clone()
        };
        assert_ne!(stamp_line(&retagged), line);
        assert_eq!(stamp_line(&recipe.clone()), line, "stable");
    }

    #[test]
    fn stamp_starts_with_the_pins_and_covers_every_binary() {
        let recipes = recipes();
        let stamp = stamp(&recipes);
        assert_eq!(stamp.lines().next(), Some(node_versions().as_str()));
        assert_eq!(stamp.lines().count(), recipes.len() + 2);
        let built: Vec<&str> = recipes
            .iter()
            .filter(|r| r.dest == Dest::Bin)
            .flat_map(|r| r.builds.iter().map(|b| b.output))
            .chain(["pause"])
            .collect();
        let mut expected = fjord_e2e::tools::NODE_BINARIES.to_vec();
        expected.sort_unstable();
        let mut built_sorted = built.clone();
        built_sorted.sort_unstable();
        assert_eq!(built_sorted, expected);
        let cni: Vec<&str> = recipes
            .iter()
            .filter(|r| r.dest == Dest::Cni)
            .flat_map(|r| r.builds.iter().map(|b| b.output))
            .collect();
        assert_eq!(cni, fjord_e2e::tools::CNI_PLUGINS);
    }

    #[test]
    fn only_changed_tools_are_rebuilt() {
        let recipes = recipes();
        let old = stamp(&recipes);
        assert!(recipes.iter().all(|r| recorded(&old, &stamp_line(r))));
        let mut changed = recipes.clone();
        changed[1].version = "v0.0.1";
        let stale: Vec<&str> = changed
            .iter()
            .filter(|r| !recorded(&old, &stamp_line(r)))
            .map(|r| r.name)
            .collect();
        assert_eq!(stale, [changed[1].name]);
    }

    #[test]
    fn pause_tag_is_read_from_the_makefile() {
        let makefile = "REGISTRY ?= registry.k8s.io\nIMAGE = $(REGISTRY)/pause\n\nTAG ?= 3.10.2\nREV = $(shell git describe)\n";
        assert_eq!(pause_tag(makefile), Some("3.10.2"));
        assert_eq!(pause_tag("IMAGE = x\n"), None);
    }
}
