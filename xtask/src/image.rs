//! `cargo xtask image [--import SOCKET] [--ctr PATH] [--no-build] [--no-smoke]`: the broker and
//! operator as OCI image archives, built without Docker (see `fjord_e2e::oci` for why and how).
//!
//! Builds `fjord-broker` and `fjord-operator` in release mode, writes
//! `target/images/<component>-<version>.oci.tar` named `localhost/<component>:<version>` (the
//! name the operator uses as its default broker image), runs each entrypoint once in a chroot of
//! the image's own root filesystem (a missing shared library fails here, not in a pod), prints
//! the digests and, with `--import`, imports both into containerd's `k8s.io` namespace and checks
//! that containerd holds the manifest digests we wrote.
//!
//! `broker/Dockerfile` and `operator/Dockerfile` build the same images for people with Docker;
//! the tests below keep their entrypoint, user, ports and working directory equal to these.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use fjord_e2e::oci::{self, ImageDir, ImageFile, ImageSpec, WrittenImage};
use fjord_e2e::tools::Tools;

use crate::process::{self, cargo};
use crate::up::target_dir;

/// The workspace version (xtask shares it): the tag of every image.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Both images run as the non-root `fjord` user of `fjord_e2e::oci`'s minimal base.
pub const USER: &str = "65532:65532";

/// One image: what to build and how to run it.
pub struct Component {
    /// Cargo package, binary and image repository name.
    pub name: &'static str,
    /// Where the binary is in the image; the entrypoint.
    pub binary_path: &'static str,
    /// `EXPOSE`d ports, as the operator uses them.
    pub ports: &'static [&'static str],
    pub working_dir: Option<&'static str>,
    /// Directories the process writes to, owned by [`USER`].
    pub data_dirs: &'static [&'static str],
    /// The smoke run in a chroot: arguments, extra environment, text the output must contain.
    smoke_args: &'static [&'static str],
    smoke_env: &'static [(&'static str, &'static str)],
    smoke_expect: &'static str,
}

/// The broker: controller 9090, replication 9091, the client listener 9092 (the port of the
/// examples' `plain` listener; user listeners can use others) and admin/metrics 9644, as in
/// `fjord_operator::resources::{CONTROLLER_PORT, REPLICATION_PORT, ADMIN_PORT}`. Data volumes are
/// mounted under `/var/lib/fjord` (`DATA_ROOT`).
pub const BROKER: Component = Component {
    name: "fjord-broker",
    binary_path: "/usr/local/bin/fjord-broker",
    ports: &["9090/tcp", "9091/tcp", "9092/tcp", "9644/tcp"],
    working_dir: Some("/var/lib/fjord"),
    data_dirs: &["/var/lib/fjord"],
    smoke_args: &["--help"],
    smoke_env: &[],
    smoke_expect: "usage: fjord-broker",
};

/// The operator: HTTP (metrics, health) on 8080 (`HTTP_ADDR` default in operator/src/main.rs).
/// It takes no arguments; without a cluster it must stop at building the Kubernetes client.
pub const OPERATOR: Component = Component {
    name: "fjord-operator",
    binary_path: "/usr/local/bin/fjord-operator",
    ports: &["8080/tcp"],
    working_dir: None,
    data_dirs: &[],
    smoke_args: &[],
    smoke_env: &[
        ("HTTP_ADDR", "127.0.0.1:0"),
        ("KUBECONFIG", "/nonexistent/kubeconfig"),
    ],
    smoke_expect: "cannot build a Kubernetes client",
};

pub const COMPONENTS: [&Component; 2] = [&BROKER, &OPERATOR];

const USAGE: &str = "usage: cargo xtask image [--import SOCKET] [--ctr PATH] [--no-build] [--no-smoke]
  --import SOCKET  import both images into containerd at SOCKET (namespace k8s.io) and check the digests
  --ctr PATH       ctr binary for --import (default: the one `cargo xtask tools` builds)
  --no-build       use the release binaries already in target/release
  --no-smoke       skip running each entrypoint in a chroot of its image (needs root or user namespaces)";

pub fn run(args: &[String]) -> Result<()> {
    let mut import_socket: Option<PathBuf> = None;
    let mut ctr = Tools::location().binary("ctr");
    let mut build = true;
    let mut smoke = true;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (arg.as_str(), None),
        };
        let mut value = || -> Result<String> {
            inline
                .clone()
                .or_else(|| args.next().cloned())
                .with_context(|| format!("{name} needs a value\n{USAGE}"))
        };
        match name {
            // ctr reads a relative socket path as a URL with an authority: make it absolute.
            "--import" => import_socket = Some(std::path::absolute(value()?)?),
            "--ctr" => ctr = PathBuf::from(value()?),
            "--no-build" => build = false,
            "--no-smoke" => smoke = false,
            _ => bail!("unknown argument {arg:?}\n{USAGE}"),
        }
    }
    let written = build_images(build, smoke)?;
    if let Some(socket) = import_socket {
        for (archive, image) in &written {
            import(&ctr, &socket, archive, image)?;
        }
    }
    Ok(())
}

/// The release build of both binaries. Everything that needs a release broker (images, the
/// compatibility suite, the benchmark, `up --broker`) builds through here: building
/// `fjord-broker` alone would unify dependency features differently and compile it twice.
pub fn release_build() -> Result<()> {
    let mut command = cargo();
    command.args(["build", "--release"]);
    for component in COMPONENTS {
        command.args(["-p", component.name, "--bin", component.name]);
    }
    process::run(
        "build fjord-broker and fjord-operator (release)",
        &mut command,
    )
}

/// Builds the release binaries (unless `build` is false), writes both image archives, smoke-runs
/// them (unless `smoke` is false) and returns each archive with what was written.
pub fn build_images(build: bool, smoke: bool) -> Result<Vec<(PathBuf, WrittenImage)>> {
    if build {
        release_build()?;
    }
    let out_dir = target_dir().join("images");
    let mut written = Vec::new();
    for component in COMPONENTS {
        let binary = target_dir().join("release").join(component.name);
        let archive = out_dir.join(format!("{}-{VERSION}.oci.tar", component.name));
        let spec = image_spec(component, &binary)?;
        let image = oci::write_archive(&spec, &archive)
            .with_context(|| format!("writing {}", archive.display()))?;
        println!(
            "image: {} -> {} ({} MiB)\n  manifest {}\n  config   {}\n  layer    {}",
            image.name,
            archive.display(),
            image.size / (1 << 20),
            image.manifest_digest,
            image.config_digest,
            image.layer_digest
        );
        if smoke {
            oci::smoke_run(
                &archive,
                component.smoke_args,
                component.smoke_env,
                component.smoke_expect,
            )
            .with_context(|| format!("smoke run of {}", image.name))?;
            println!("  runs in its own root filesystem (chroot)");
        }
        written.push((archive, image));
    }
    Ok(written)
}

fn import(
    ctr: &std::path::Path,
    socket: &std::path::Path,
    archive: &std::path::Path,
    image: &WrittenImage,
) -> Result<()> {
    if !ctr.is_file() {
        bail!(
            "no ctr at {} (run `cargo xtask tools`, or pass --ctr PATH)",
            ctr.display()
        );
    }
    oci::import(ctr, socket, archive, image)
        .with_context(|| format!("importing {} into {}", image.name, socket.display()))?;
    println!(
        "imported {} into {} (namespace k8s.io) at {}",
        image.name,
        socket.display(),
        image.manifest_digest
    );
    Ok(())
}

/// The image of `component` with its release binary at `binary` (host path).
pub fn image_spec(component: &Component, binary: &std::path::Path) -> Result<ImageSpec> {
    if !binary.is_file() {
        bail!("{} is not built (run without --no-build)", binary.display());
    }
    let mut spec = ImageSpec::new(oci::fjord_image_name(component.name, VERSION));
    spec.add_minimal_base();
    spec.files
        .push(ImageFile::host(binary, component.binary_path, 0o755));
    oci::with_shared_libraries(&mut spec, binary)?;
    for dir in component.data_dirs {
        spec.dirs.push(ImageDir::new(
            *dir,
            0o755,
            oci::NONROOT_UID,
            oci::NONROOT_GID,
        ));
    }
    spec.entrypoint = vec![component.binary_path.to_string()];
    spec.user = USER.to_string();
    spec.exposed_ports = component.ports.iter().map(|p| p.to_string()).collect();
    spec.working_dir = component.working_dir.map(String::from);
    spec.labels = BTreeMap::from([
        (
            "org.opencontainers.image.title".to_string(),
            component.name.to_string(),
        ),
        (
            "org.opencontainers.image.version".to_string(),
            VERSION.to_string(),
        ),
        (
            "org.opencontainers.image.licenses".to_string(),
            "Apache-2.0".to_string(),
        ),
    ]);
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::repo_root;

    /// The final stage of a Dockerfile: its ENTRYPOINT, USER, EXPOSEd ports and WORKDIR.
    #[derive(Debug, Default)]
    struct FinalStage {
        entrypoint: Vec<String>,
        user: Option<String>,
        ports: Vec<String>,
        workdir: Option<String>,
    }

    fn final_stage(dockerfile: &str) -> FinalStage {
        // Join continuation lines, drop comments and blank lines.
        let mut lines = Vec::new();
        let mut current = String::new();
        for line in dockerfile.lines() {
            let trimmed = line.trim();
            if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
                continue;
            }
            match trimmed.strip_suffix('\\') {
                Some(part) => {
                    current.push_str(part);
                    current.push(' ');
                }
                None => {
                    current.push_str(trimmed);
                    lines.push(std::mem::take(&mut current));
                }
            }
        }
        let mut stage = FinalStage::default();
        for line in lines {
            let (instruction, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
            let rest = rest.trim();
            match instruction.to_ascii_uppercase().as_str() {
                "FROM" => stage = FinalStage::default(),
                "ENTRYPOINT" => {
                    stage.entrypoint = serde_json::from_str(rest)
                        .unwrap_or_else(|e| panic!("ENTRYPOINT must be exec form: {rest}: {e}"))
                }
                "USER" => stage.user = Some(rest.to_string()),
                "EXPOSE" => stage.ports.extend(rest.split_whitespace().map(|p| {
                    if p.contains('/') {
                        p.to_string()
                    } else {
                        format!("{p}/tcp")
                    }
                })),
                "WORKDIR" => stage.workdir = Some(rest.to_string()),
                _ => {}
            }
        }
        stage.ports.sort();
        stage
    }

    fn check_dockerfile(path: &str, component: &Component) {
        let text = std::fs::read_to_string(repo_root().join(path)).unwrap();
        let stage = final_stage(&text);
        assert_eq!(stage.entrypoint, vec![component.binary_path], "{path}");
        assert_eq!(stage.user.as_deref(), Some(USER), "{path}");
        let mut ports: Vec<String> = component.ports.iter().map(|p| p.to_string()).collect();
        ports.sort();
        assert_eq!(stage.ports, ports, "{path}");
        assert_eq!(stage.workdir.as_deref(), component.working_dir, "{path}");
        assert!(
            text.contains(&format!("cargo build --release -p {}", component.name)),
            "{path} builds {}",
            component.name
        );
    }

    #[test]
    fn broker_dockerfile_matches_the_xtask_image() {
        check_dockerfile("broker/Dockerfile", &BROKER);
    }

    #[test]
    fn operator_dockerfile_matches_the_xtask_image() {
        check_dockerfile("operator/Dockerfile", &OPERATOR);
    }

    #[test]
    fn dockerfile_parser_reads_the_final_stage() {
        let stage = final_stage(
            "FROM a AS b\nUSER 1\nEXPOSE 1\nFROM c\n# c\nEXPOSE 9092 \\\n  9644/tcp\nUSER 2:2\n\
             ENTRYPOINT [\"/x\"]\n",
        );
        assert_eq!(stage.entrypoint, ["/x"]);
        assert_eq!(stage.user.as_deref(), Some("2:2"));
        assert_eq!(stage.ports, ["9092/tcp", "9644/tcp"]);
        assert_eq!(stage.workdir, None);
    }

    /// The operator's default broker image (no `spec.kafka.image`, no `spec.kafka.version`) is the
    /// image `cargo xtask image` writes.
    #[test]
    fn operator_default_broker_image_is_the_xtask_image() {
        let kafka: fjord_operator::crd::Kafka = serde_json::from_value(serde_json::json!({
            "apiVersion": "kafka.fjord.dev/v1",
            "kind": "Kafka",
            "metadata": {"name": "c", "namespace": "n"},
            "spec": {"kafka": {
                "replicas": 1,
                "listeners": [{"name": "plain", "port": 9092, "type": "internal", "tls": false}],
                "storage": {"type": "ephemeral"},
            }},
        }))
        .unwrap();
        assert_eq!(
            fjord_operator::resources::statefulset::image(&kafka),
            oci::fjord_image_name(BROKER.name, VERSION)
        );
        assert_eq!(
            oci::fjord_image_name(BROKER.name, VERSION),
            format!("localhost/fjord-broker:{VERSION}")
        );
    }

    #[test]
    fn image_spec_runs_as_nonroot_with_the_ports() {
        // Any dynamically linked binary stands in for the release build here.
        let spec = image_spec(&BROKER, std::path::Path::new("/usr/bin/ls")).unwrap();
        assert_eq!(spec.name, format!("localhost/fjord-broker:{VERSION}"));
        assert_eq!(spec.entrypoint, ["/usr/local/bin/fjord-broker"]);
        assert_eq!(spec.user, "65532:65532");
        assert_eq!(
            spec.exposed_ports,
            ["9090/tcp", "9091/tcp", "9092/tcp", "9644/tcp"]
        );
        assert!(spec
            .dirs
            .iter()
            .any(|d| d.path == "/var/lib/fjord" && d.uid == 65532 && d.mode == 0o755));
        assert!(spec
            .files
            .iter()
            .any(|f| f.path == "/lib64/ld-linux-x86-64.so.2"));
    }
}
