//! The integration-test fixture: one control plane per test process, one namespace per test.
//!
//! Which control plane a test gets:
//! - the one started by hand with `cargo xtask cluster up --control-plane`, if it is running and
//!   healthy (it is reused and left running);
//! - otherwise a private one in `target/fjord-cluster-test/<pid>/`, started on first use and tied
//!   to the test process: the kernel stops it when the process exits, however it exits. Its
//!   directory (logs included) stays until the next test run cleans it up.
//!
//! Missing tools are an error, never a skip: the test fails with "run `cargo xtask tools`".

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Resource};

use crate::control_plane::{self, ControlPlane, Lifetime, Options};
use crate::tools::Tools;

/// Label on every namespace the fixture creates, so leftovers are easy to find and delete.
pub const NAMESPACE_LABEL: &str = "e2e.fjord.dev/test";

static CONTROL_PLANE: OnceLock<std::result::Result<ControlPlane, String>> = OnceLock::new();

/// The control plane for this test process, started on first call (blocking, up to ~2 minutes).
pub fn control_plane() -> Result<&'static ControlPlane> {
    CONTROL_PLANE
        .get_or_init(|| start_or_reuse().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

fn start_or_reuse() -> Result<ControlPlane> {
    Tools::require()?;
    if let Some(running) = ControlPlane::find_running(&control_plane::default_dir()) {
        return Ok(running);
    }
    let private_root = control_plane::target_dir().join("fjord-cluster-test");
    remove_dirs_of_finished_runs(&private_root);
    let options = Options::new(
        private_root.join(std::process::id().to_string()),
        Lifetime::TiedToThisProcess,
    );
    // The components get SIGTERM when the thread that started them exits, so start them from a
    // thread that lives as long as the test process.
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("fjord-control-plane".into())
        .spawn(move || {
            let _ = started_tx.send(ControlPlane::up(&options));
            loop {
                std::thread::park();
            }
        })?;
    started_rx.recv().context("the control-plane thread died")?
}

/// Stops and removes private control planes of test processes that no longer exist (normally
/// already stopped by the kernel; this also covers a machine where that failed).
fn remove_dirs_of_finished_runs(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let _ = ControlPlane::down(&entry.path());
        let _ = std::fs::remove_dir_all(entry.path());
    }
}

/// A namespace of its own for one test, with a client for the control plane.
/// Dropping it deletes the namespace (without waiting for the deletion to finish).
pub struct TestNamespace {
    pub client: Client,
    pub name: String,
    pub control_plane: &'static ControlPlane,
}

impl TestNamespace {
    /// Creates a namespace named after `test_name` plus a unique suffix and waits until its
    /// `default` ServiceAccount exists (pods cannot be created before that).
    pub async fn new(test_name: &str) -> Result<TestNamespace> {
        let control_plane = tokio::task::spawn_blocking(control_plane).await??;
        let client = client_for(&control_plane.kubeconfig).await?;
        let name = unique_namespace_name(test_name);
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(NAMESPACE_LABEL.to_string(), "true".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        let accounts = Api::<ServiceAccount>::namespaced(client.clone(), &name);
        poll_until(
            Duration::from_secs(30),
            "the namespace's default ServiceAccount",
            || async { Ok(accounts.get_opt("default").await?.is_some()) },
        )
        .await?;
        Ok(TestNamespace {
            client,
            name,
            control_plane,
        })
    }

    /// Runs `body` in a fresh namespace; on error prints each component's log tail and fails.
    pub async fn run<F, Fut>(test_name: &str, body: F)
    where
        F: FnOnce(TestNamespace) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let namespace = match TestNamespace::new(test_name).await {
            Ok(namespace) => namespace,
            Err(error) => {
                eprintln!("{test_name}: test fixture FAILED: {error:#}");
                if let Some(Ok(control_plane)) = CONTROL_PLANE.get() {
                    eprintln!("{}", control_plane.log_report(40));
                }
                panic!("{test_name}: test fixture failed: {error:#}");
            }
        };
        let control_plane = namespace.control_plane;
        let name = namespace.name.clone();
        if let Err(error) = body(namespace).await {
            // The cause before the log tails too: CI excerpts keep a log's head and tail.
            eprintln!("{test_name} FAILED in namespace {name}: {error:#}");
            eprintln!("{}", control_plane.log_report(40));
            panic!(
                "{test_name} failed in namespace {name}: {error:#}\n(control plane: {}, logs in {})",
                control_plane.dir.display(),
                control_plane.dir.join("logs").display()
            );
        }
    }

    /// A namespaced API handle for this test's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be shutting down: use kubectl, bounded.
        if let Ok(tools) = Tools::require() {
            let _ = control_plane::kubectl(
                &tools,
                &self.control_plane.kubeconfig,
                &["delete", "namespace", &self.name, "--wait=false"],
            );
        }
    }
}

/// A kube-rs client for the control plane behind `kubeconfig`.
pub async fn client_for(kubeconfig: &Path) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// Polls `check` every 200 ms until it returns true; fails after `timeout` naming `what`.
pub async fn poll_until<F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_error = None;
    loop {
        // A check that never answers (a hung API call) must not outlive the deadline.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left.max(Duration::from_secs(10)), check()).await {
            Ok(Ok(true)) => return Ok(()),
            Ok(Ok(false)) => {}
            Ok(Err(error)) => last_error = Some(error),
            Err(_) => last_error = Some(anyhow!("the check did not answer before the deadline")),
        }
        if tokio::time::Instant::now() >= deadline {
            let detail = last_error
                .map(|e| format!(" (last error: {e:#})"))
                .unwrap_or_default();
            return Err(anyhow!(
                "timed out after {timeout:?} waiting for {what}{detail}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `<test name as a DNS label>-<unique suffix>`, at most 63 characters.
pub fn unique_namespace_name(test_name: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut base: String = test_name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    base.truncate(40);
    let base = base.trim_matches('-');
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let suffix = format!(
        "{:x}{:x}{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos & 0xfff
    );
    format!("{}-{suffix}", if base.is_empty() { "test" } else { base })
}

#[cfg(test)]
mod tests {
    use super::unique_namespace_name;

    #[test]
    fn namespace_names_are_unique_dns_labels() {
        let long = "A_Very/Long test name that goes on and on and on and on and on";
        let (a, b) = (unique_namespace_name(long), unique_namespace_name(long));
        assert_ne!(a, b);
        for name in [
            a,
            b,
            unique_namespace_name("--"),
            unique_namespace_name("ok"),
        ] {
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.starts_with('-') && !name.ends_with('-'), "{name}");
        }
    }
}
