//! The metadata quorum every broker runs (issue 5; issue 13: one broker, not two): brokers
//! share their metadata through the fjord-quorum Raft log. A node without configured voters
//! is a one-voter quorum on a loopback controller listener ([`config`]) running the same code.
//!
//! A voter runs combined `broker,controller`; a `broker`-only node is a Raft learner. A
//! metadata change is written as one quorum command ([`MetadataApplier::command`]) and the
//! writer awaits (notified, not polling, never blocking a runtime worker) until its own node
//! applied it; every node applies committed commands to its image in log order, and a hook
//! ([`hosted::on_applied`]) opens or removes the partition logs the node hosts (committed group
//! offsets need no hook: they are part of the image). Each node registers itself ([`registration`]) so Metadata
//! answers with every broker; the active controller fences silent brokers ([`controller`]),
//! keeps ISRs ([`isr`]) and moves leaderships ([`reassignment`], [`rebalance`]). Topic and
//! config changes go through [`topics::TopicManager`], producer id blocks through
//! [`producer_ids`]. A data
//! directory written by the old single-node file store is imported once on first start
//! ([`migrate`]). Each write runs in a debug `metadata_commit` span (record count and kind)
//! and logs its log index at debug.

pub mod config;
pub mod controller;
pub mod hosted;
pub mod inter_broker;
pub mod isr;
pub mod migrate;
pub mod producer_ids;
pub mod reassignment;
pub mod rebalance;
pub mod registration;
pub mod topics;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use fjord_quorum::{QuorumConfig, QuorumNode};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tracing::Instrument;
use uuid::Uuid;

use crate::metadata::quorum_applier::MetadataApplier;
use crate::metadata::{MetadataCache, MetadataRecord};
use crate::state::Broker;

/// How long a writer waits for its own committed write to be applied locally.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The quorum side of a broker.
pub struct Cluster {
    pub quorum: QuorumNode,
    /// Serialises [`hosted::sync`] runs; holds the id of each hosted topic (a topic deleted and
    /// re-created under the same name has a new id).
    pub(crate) hosted_ids: Mutex<HashMap<String, Uuid>>,
    /// New per process start; carried by this node's registration.
    pub incarnation: Uuid,
    /// Heartbeats received while this node is the active controller.
    pub liveness: Arc<controller::Liveness>,
    shutting_down: std::sync::atomic::AtomicBool,
}

/// Mutual TLS for the quorum when the controller listener is mapped to SSL: the listener's
/// keystore is both the server certificate and this node's client certificate, its truststore
/// verifies the peers (set `ssl.client.auth=required` on it so unauthenticated peers are
/// refused).
fn quorum_tls(config: &crate::config::Config) -> anyhow::Result<Option<fjord_quorum::QuorumTls>> {
    let Some(tls) = config
        .cluster
        .controller_security
        .as_ref()
        .and_then(|s| s.tls.as_ref())
    else {
        return Ok(None);
    };
    let acceptor = crate::auth::tls::ReloadingTls::new(tls.clone())
        .map_err(|e| anyhow::anyhow!("controller listener TLS: {e}"))?
        .acceptor();
    let pem = |s: &crate::auth::tls::PemSource| match s {
        crate::auth::tls::PemSource::File(p) => fjord_client::PemSource::File(p.clone()),
        crate::auth::tls::PemSource::Inline(t) => fjord_client::PemSource::Pem(t.clone()),
    };
    let client = fjord_client::TlsSettings {
        ca: tls.truststore.as_ref().map(pem),
        client_cert: Some(fjord_client::ClientCertificate {
            cert_chain: pem(&tls.cert_chain),
            key: pem(&tls.key),
        }),
        server_name: None,
        verify_hostname: true,
    };
    let client = fjord_client::rustls_client_config(&client)
        .map_err(|e| anyhow::anyhow!("controller listener TLS (client side): {e}"))?;
    Ok(Some(fjord_quorum::QuorumTls {
        acceptor,
        connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
    }))
}

/// What the control duties use ([`controller`] liveness, [`isr`] upkeep, [`reassignment`]
/// completion, [`rebalance`], [`registration`]): the quorum, the image, the configuration, the
/// hosted replicas, metrics and the task owner; Kafka's controller is built from its quorum,
/// image and configuration the same way. Cheap to clone: every field is shared.
#[derive(Clone)]
pub struct ControlServices {
    pub config: Arc<crate::config::Config>,
    pub image: Arc<MetadataCache>,
    pub cluster: Arc<Cluster>,
    pub replicas: Arc<crate::replica_manager::ReplicaManager>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Spawns the duties' background writes; says when the broker is stopping.
    pub tasks: crate::tasks::Tasks,
}

impl ControlServices {
    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// Whether this node is the active controller (the quorum leader).
    pub fn is_controller(&self) -> bool {
        self.cluster.leader() == Some(self.config.node_id)
    }

    pub fn is_stopping(&self) -> bool {
        self.tasks.is_stopping()
    }
}

/// Where the applier's hook finds the broker once it exists.
pub type BrokerSlot = Arc<OnceLock<Weak<Broker>>>;

impl Cluster {
    /// Starts this node's quorum member on `listener` (the controller listener), with an
    /// applier updating the returned image. Log replay may call the hook before the broker is
    /// in `slot`; [`hosted::sync`] runs once after it is set to cover that.
    pub async fn start(
        config: &crate::config::Config,
        listener: TcpListener,
        slot: BrokerSlot,
    ) -> anyhow::Result<(Cluster, Arc<MetadataCache>)> {
        let image = Arc::new(MetadataCache::default());
        let hook_slot = slot.clone();
        let hook: crate::metadata::quorum_applier::OnApplied = Box::new(move |records| {
            if let Some(broker) = hook_slot.get().and_then(Weak::upgrade) {
                hosted::on_applied(&broker, records);
            }
        });
        let applier = Arc::new(MetadataApplier::new(image.clone(), Some(hook)));
        let voters: BTreeMap<u64, String> = config
            .cluster
            .voters
            .iter()
            .map(|(id, addr)| (*id as u64, addr.clone()))
            .collect();
        let quorum_config = QuorumConfig {
            node_id: config.node_id as u64,
            dir: config.data_dir().join("__fjord_quorum"),
            voters,
            snapshot_every: 1000,
            keep_after_snapshot: 500,
            learner_addr: (!config.cluster.voters.contains_key(&config.node_id))
                .then(|| config.cluster.controller_address.clone()),
            tls: quorum_tls(config)?,
        };
        let quorum = QuorumNode::start(quorum_config, listener, applier).await?;
        let cluster = Cluster {
            quorum,
            hosted_ids: Mutex::new(HashMap::new()),
            incarnation: Uuid::new_v4(),
            liveness: Arc::default(),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
        };
        let liveness = cluster.liveness.clone();
        cluster
            .quorum
            .set_message_handler(Box::new(move |m| liveness.on_message(m)));
        Ok((cluster, image))
    }

    /// The current quorum leader (the controller), if known.
    /// Why this node's Raft member stopped for good (a failed write to the metadata log, such
    /// as a full disk), if it did. Nothing recovers it but a restart.
    pub fn stopped(&self) -> Option<String> {
        self.quorum
            .metrics()
            .borrow()
            .running_state
            .as_ref()
            .err()
            .map(ToString::to_string)
    }

    pub fn leader(&self) -> Option<i32> {
        self.quorum
            .metrics()
            .borrow()
            .current_leader
            .and_then(|l| i32::try_from(l).ok())
    }

    /// Writes `records` as one quorum command and waits until this node applied it, so the
    /// caller reads its own write. Every metadata change is awaited through it (never a
    /// blocking wait), so it runs on any tokio runtime, a current-thread one included.
    pub async fn write(&self, records: &[MetadataRecord]) -> io::Result<()> {
        async {
            let index = self
                .quorum
                .write(MetadataApplier::command(records))
                .await
                .map_err(io::Error::other)?;
            self.wait_applied(index).await?;
            // In the commit span: at debug level each commit leaves a line saying what it was.
            tracing::debug!(index, "metadata committed");
            Ok(())
        }
        .instrument(commit_span(records, false))
        .await
    }

    /// Writes `records` only while this node is the controller (quorum leader): controller
    /// decisions (fencing) made by a leader that was deposed meanwhile are dropped, never
    /// forwarded to the next one.
    pub async fn write_as_controller(&self, records: &[MetadataRecord]) -> io::Result<()> {
        async {
            let index = self
                .quorum
                .write_as_leader(MetadataApplier::command(records))
                .await
                .map_err(io::Error::other)?;
            self.wait_applied(index).await?;
            // In the commit span: at debug level each commit leaves a line saying what it was.
            tracing::debug!(index, "metadata committed");
            Ok(())
        }
        .instrument(commit_span(records, true))
        .await
    }

    /// Waits until this node applied log entry `index`: woken by Raft's metrics (which change
    /// as entries are applied), no polling. On the leader `client_write` answers after the
    /// local apply, so this usually returns at once.
    async fn wait_applied(&self, index: u64) -> io::Result<()> {
        let applied = || self.quorum.last_applied_index().is_some_and(|i| i >= index);
        if applied() {
            return Ok(());
        }
        let mut metrics = self.quorum.metrics();
        let wait = async {
            loop {
                if applied() {
                    return Ok(());
                }
                if metrics.changed().await.is_err() {
                    return Err(io::Error::other("the metadata quorum stopped"));
                }
            }
        };
        match tokio::time::timeout(APPLY_TIMEOUT, wait).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::other(
                "the metadata change was committed but not yet applied on this broker",
            )),
        }
    }

    /// Marks the start of a controlled shutdown (heartbeats then say "stopping").
    pub fn begin_shutdown(&self) {
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn shutting_down(&self) -> bool {
        self.shutting_down
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Stops the quorum member.
    pub async fn shutdown(&self) {
        self.quorum.shutdown().await;
    }
}

/// The debug span around one metadata commit (propose to the quorum, wait for the local
/// apply): how many records and of which kind, so a slow or failed commit in the logs says
/// what it was. `batch_kind` only runs when the span is enabled.
fn commit_span(records: &[MetadataRecord], as_controller: bool) -> tracing::Span {
    tracing::debug_span!(
        "metadata_commit",
        records = records.len(),
        kind = MetadataRecord::batch_kind(records),
        as_controller,
    )
}
