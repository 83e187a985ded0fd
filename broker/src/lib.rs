//! fjord-broker: a Kafka-wire-compatible broker.
//!
//! `start` binds the listeners and the admin endpoint, starts the node's metadata quorum member
//! (a one-voter quorum when no voters are configured), opens the data directory (recovering
//! logs), starts background tasks (group coordinator tick, retention, controller duties) and
//! serves; `main` runs it until SIGTERM/SIGINT. Every task is spawned through the broker's
//! [`tasks::Tasks`], so [`Broker::shutdown`] stops them all.

pub mod admin_http;
pub mod alloc_guard;
pub mod api;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod fetch_session;
pub mod file_region;
pub mod group;
pub mod identity;
pub mod log;
pub mod metadata;
pub mod metrics;
pub mod network;
pub mod partition;
pub mod protocol;
pub mod quota;
pub mod replica_manager;
pub mod replication;
pub mod state;
pub mod tasks;
pub mod topic_config;
pub mod txn;

use std::sync::Arc;
use std::time::Duration;

pub use config::Config;
pub use state::Broker;

/// A running broker: its state and the addresses it actually listens on.
pub struct Running {
    pub broker: Arc<Broker>,
    pub kafka_addrs: Vec<std::net::SocketAddr>,
    pub admin_addr: std::net::SocketAddr,
}

/// Opens the broker and starts serving in the background on the current tokio runtime.
pub async fn start(mut config: Config) -> anyhow::Result<Running> {
    let listeners = network::server::bind_all(&config).await?;
    let admin = admin_http::bind(config.admin_listener).await?;
    let kafka_addrs: Vec<std::net::SocketAddr> = listeners
        .iter()
        .filter_map(|l| l.tcp.local_addr().ok())
        .collect();
    let admin_addr = admin.local_addr()?;
    // Port 0 means "pick one": advertise the port actually bound.
    for (l, bound) in config.listeners.iter().zip(&kafka_addrs) {
        for adv in config.advertised_listeners.iter_mut() {
            if adv.name == l.name && adv.port == 0 {
                adv.port = bound.port();
            }
        }
    }
    let broker = open(config).await?;
    network::server::spawn_all(&broker, listeners);
    broker.tasks.spawn(admin_http::serve(broker.clone(), admin));
    let b = broker.clone();
    broker.tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            b.groups.tick();
        }
    });
    let b = broker.clone();
    let every = Duration::from_millis(b.config.log_retention_check_interval_ms.max(1000));
    broker.tasks.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let retention = b.clone();
            b.tasks
                .run_blocking(move || retention.replicas.enforce_retention(state::now_ms()))
                .await;
        }
    });
    if broker.config.log_cleaner_enable {
        let b = broker.clone();
        let every = Duration::from_millis(b.config.log_cleaner_backoff_ms.max(100));
        broker.tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let cleaner = b.clone();
                b.tasks
                    .run_blocking(move || {
                        let (stats, lag) = cleaner.replicas.clean_compacted(
                            state::now_ms(),
                            cleaner.config.log_cleaner_io_max_bytes_per_second,
                            cleaner.config.log_cleaner_dedupe_buffer_size,
                        );
                        let m = &cleaner.metrics;
                        m.cleaner_dirty_bytes
                            .set(i64::try_from(lag.dirty_bytes).unwrap_or(i64::MAX));
                        m.cleaner_max_dirty_ratio.set(lag.max_dirty_ratio);
                        m.cleaner_bytes_read.inc_by(stats.bytes_read);
                        m.cleaner_bytes_freed
                            .inc_by(stats.bytes_before.saturating_sub(stats.bytes_after));
                        m.cleaner_records_removed.inc_by(stats.records_removed);
                    })
                    .await;
            }
        });
    }
    Ok(Running {
        broker,
        kafka_addrs,
        admin_addr,
    })
}

/// Checks the identity, starts the quorum member on the controller listener, opens the broker
/// around the quorum's image, imports an old single-node data directory once, opens hosted
/// logs and registers the broker.
async fn open(mut config: Config) -> anyhow::Result<Arc<Broker>> {
    let dir = config.data_dir().clone();
    let (node_id, configured) = (config.node_id, config.cluster_id.clone());
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        identity::load_or_format(&dir, node_id, configured.as_deref())
    })
    .await??;
    let Some(controller) = config.cluster.controller_listener.clone() else {
        anyhow::bail!("controller.listener.names: no controller listener");
    };
    let addr = controller.bind_addr();
    let tcp = tokio::net::TcpListener::bind(&addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {addr} (controller listener {}): {e}",
            controller.name
        )
    })?;
    config.cluster.local_controller_bound(tcp.local_addr()?);
    tracing::info!(listener = %controller.name, addr = %tcp.local_addr()?, "quorum listening");
    let sole_voter =
        config.cluster.voters.len() == 1 && config.cluster.voters.contains_key(&config.node_id);
    let slot: cluster::BrokerSlot = Arc::default();
    let (quorum, image) = cluster::Cluster::start(&config, tcp, slot.clone()).await?;
    let broker = tokio::task::spawn_blocking(move || Broker::open(config, quorum, image)).await??;
    let _ = slot.set(Arc::downgrade(&broker));
    cluster::migrate::import_single_node_store(&broker).await?;
    let b = broker.clone();
    tokio::task::spawn_blocking(move || {
        cluster::hosted::sync(&b);
        cluster::hosted::remove_strays(&b);
    })
    .await?;
    let tasks = &broker.tasks;
    let control = broker.control();
    tasks.spawn(cluster::controller::heartbeat(control.clone()));
    if sole_voter {
        // Nothing else can elect this node: it leads at once, so it is registered (and ready)
        // when `start` returns, as a broker without a quorum always was.
        cluster::registration::register(control.clone()).await;
    } else {
        tasks.spawn(cluster::registration::register(control.clone()));
    }
    tasks.spawn(cluster::controller::run(control.clone()));
    tasks.spawn(cluster::isr::run(control.clone()));
    tasks.spawn(cluster::isr::commit_queued(
        control.clone(),
        broker.isr_changes.clone(),
    ));
    tasks.spawn(cluster::reassignment::run(control.clone()));
    tasks.spawn(cluster::rebalance::run(control));
    tasks.spawn(txn::markers::run(txn::markers::MarkerServices {
        node_id: broker.config.node_id,
        image: broker.metadata.clone(),
        replicas: broker.replicas.clone(),
        cluster: broker.cluster.clone(),
    }));
    let b = broker.clone();
    let every = Duration::from_millis(
        b.config
            .transaction_abort_timed_out_transaction_cleanup_interval_ms
            .max(100),
    );
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            b.transactions.abort_timed_out().await;
            b.transactions
                .remove_expired(b.config.transactional_id_expiration_ms)
                .await;
        }
    });
    Ok(broker)
}
