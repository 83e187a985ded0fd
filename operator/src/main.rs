//! `fjord-operator`: runs the controllers while holding the leader Lease.
//!
//! Environment: `WATCH_NAMESPACE` (one namespace; default all), `POD_NAME` and `POD_NAMESPACE`
//! (leader identity and the Lease's namespace; set by the Helm chart through the downward API),
//! `HTTP_ADDR` (default `0.0.0.0:8080`), `LEADER_ELECTION` (`false` to run without a Lease).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use fjord_operator::http::{self, HttpState};
use fjord_operator::leader::LeaderElector;
use fjord_operator::metrics::Metrics;
use fjord_operator::reconcile::Context;
use fjord_operator::{controllers, telemetry};

const LEASE_NAME: &str = "fjord-operator-leader";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let watch_namespace = env("WATCH_NAMESPACE");
    let identity =
        env("POD_NAME").unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
    let lease_namespace = env("POD_NAMESPACE").unwrap_or_else(|| "default".into());
    let http_addr = env("HTTP_ADDR").unwrap_or_else(|| "0.0.0.0:8080".into());
    let leader_election = env("LEADER_ELECTION").as_deref() != Some("false");

    let metrics = Arc::new(Metrics::default());
    let state = Arc::new(HttpState {
        metrics: metrics.clone(),
        ready: AtomicBool::new(false),
    });
    let listener = tokio::net::TcpListener::bind(&http_addr)
        .await
        .with_context(|| format!("cannot listen on HTTP_ADDR {http_addr}"))?;
    tokio::spawn(http::serve(state.clone(), listener));

    let client = kube::Client::try_default()
        .await
        .context("cannot build a Kubernetes client (in-cluster config or KUBECONFIG)")?;
    client
        .apiserver_version()
        .await
        .context("cannot reach the Kubernetes API server")?;
    state.ready.store(true, Ordering::Relaxed);
    tracing::info!(%identity, ?watch_namespace, leader_election, "fjord-operator starting");

    let elector = LeaderElector::new(client.clone(), &lease_namespace, LEASE_NAME, &identity);
    if leader_election {
        elector.acquire().await;
        tracing::info!(%identity, "acquired the leader lease");
    }
    metrics.leader.set(1);

    let ctx = Arc::new(Context::new(client, metrics.clone(), Some(identity)));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<&'static str>();
    let stop = async move {
        let _ = stop_rx.await;
    };
    let controllers = tokio::spawn(controllers::run(ctx, watch_namespace, stop));

    let why = tokio::select! {
        () = shutdown_signal() => "signal",
        () = elector.hold(), if leader_election => "lost the leader lease",
    };
    tracing::info!(reason = why, "stopping controllers");
    metrics.leader.set(0);
    let _ = stop_tx.send(why);
    let _ = controllers.await;
    if why != "signal" {
        // Another replica leads now; restarting makes this one a clean candidate again.
        std::process::exit(1);
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "fjord-operator".into())
}
