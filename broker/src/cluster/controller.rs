//! Broker liveness: every broker heartbeats to the active controller (the quorum leader) over
//! the quorum's message channel; the controller fences a broker silent for
//! `broker.session.timeout.ms` and unfences it when it heartbeats again. Fencing is a
//! `FenceBroker` record, so what it does to ISRs and leaders is decided in the image, the same
//! on every node (see `metadata::leadership`).
//!
//! Controlled shutdown (SIGTERM) is the broker fencing itself: its leaderships move to in-sync
//! followers and it leaves every ISR before it stops serving, so clients retry elsewhere
//! instead of timing out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::ControlServices;
use crate::metadata::MetadataRecord;

/// A heartbeat as sent over the quorum message channel.
#[derive(Debug, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node_id: i32,
    /// The broker is shutting down: it must not be unfenced.
    pub stopping: bool,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    at: Instant,
    stopping: bool,
}

/// What the active controller knows about heartbeats (in memory; a new controller starts by
/// giving every broker a full session).
#[derive(Default)]
pub struct Liveness {
    seen: Mutex<HashMap<i32, Seen>>,
    /// When this controller first saw each broker fenced (it unfences only on a later beat).
    fenced_seen: Mutex<HashMap<i32, Instant>>,
}

impl Liveness {
    /// The quorum message handler: records a heartbeat.
    pub fn on_message(&self, message: serde_json::Value) -> serde_json::Value {
        match serde_json::from_value::<Heartbeat>(message) {
            Ok(hb) => {
                self.seen.lock().insert(
                    hb.node_id,
                    Seen {
                        at: Instant::now(),
                        stopping: hb.stopping,
                    },
                );
                serde_json::json!({"ok": true})
            }
            Err(e) => serde_json::json!({"ok": false, "error": e.to_string()}),
        }
    }

    fn reset(&self, ids: impl Iterator<Item = i32>) {
        let now = Instant::now();
        let mut seen = self.seen.lock();
        for id in ids {
            seen.entry(id).or_insert(Seen {
                at: now,
                stopping: false,
            });
            let e = seen.get_mut(&id).expect("inserted");
            e.at = e.at.max(now);
        }
        self.fenced_seen.lock().clear();
    }
}

/// What the controller should write for one broker, given its heartbeat history (pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LivenessAction {
    Fence,
    Unfence,
}

pub fn decide(
    fenced: bool,
    last_beat: Option<(Duration, bool)>,
    fenced_for: Option<Duration>,
    session_timeout: Duration,
) -> Option<LivenessAction> {
    match (fenced, last_beat) {
        (false, None) => Some(LivenessAction::Fence),
        (false, Some((age, _))) if age > session_timeout => Some(LivenessAction::Fence),
        // A beat newer than when the fence was first seen, from a broker not shutting down.
        (true, Some((age, false))) if fenced_for.is_some_and(|f| age < f) => {
            Some(LivenessAction::Unfence)
        }
        _ => None,
    }
}

/// Sends this broker's heartbeats to the controller until the process stops.
pub async fn heartbeat(control: ControlServices) {
    let cluster = &control.cluster;
    let every = Duration::from_millis(control.config.cluster.broker_heartbeat_interval_ms);
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if crate::replication::faults::isolated() {
            continue;
        }
        let hb = Heartbeat {
            node_id: control.node_id(),
            stopping: control.is_stopping() || cluster.shutting_down(),
        };
        let msg = serde_json::to_value(&hb).expect("heartbeats serialize");
        if let Err(e) = cluster.quorum.send_to_leader(msg).await {
            tracing::debug!(error = %e, "heartbeat not delivered");
        }
    }
}

/// The controller duty: on the quorum leader, fence silent brokers and unfence returning ones.
pub async fn run(control: ControlServices) {
    let cluster = &control.cluster;
    let me = control.node_id();
    let timeout = Duration::from_millis(control.config.cluster.broker_session_timeout_ms);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut leading = false;
    loop {
        tick.tick().await;
        if control.is_stopping() {
            return;
        }
        let is_leader = control.is_controller();
        control.metrics.active_controller.set(i64::from(is_leader));
        if !is_leader {
            leading = false;
            continue;
        }
        let brokers: Vec<(i32, bool)> = control
            .image
            .snapshot()
            .brokers
            .values()
            .map(|b| (b.id, b.fenced))
            .collect();
        if !leading {
            // A new controller: everyone gets a full session before being judged.
            cluster.liveness.reset(brokers.iter().map(|(id, _)| *id));
            leading = true;
            continue;
        }
        let now = Instant::now();
        let mut records = Vec::new();
        {
            let mut seen = cluster.liveness.seen.lock();
            // A broker that registered after this controller took over gets a full session.
            for (id, _) in &brokers {
                seen.entry(*id).or_insert(Seen {
                    at: now,
                    stopping: false,
                });
            }
            let mut fenced_seen = cluster.liveness.fenced_seen.lock();
            for (id, fenced) in &brokers {
                if *fenced {
                    fenced_seen.entry(*id).or_insert(now);
                } else {
                    fenced_seen.remove(id);
                }
                let beat = seen.get(id).map(|s| (now.duration_since(s.at), s.stopping));
                let fenced_for = fenced_seen.get(id).map(|t| now.duration_since(*t));
                let action = if *id == me {
                    // The controller is alive by definition: it never fences itself here, and
                    // unfences itself if an earlier controller fenced it while it was cut off.
                    let stopping = cluster.shutting_down();
                    (*fenced && !stopping).then_some(LivenessAction::Unfence)
                } else {
                    decide(*fenced, beat, fenced_for, timeout)
                };
                match action {
                    Some(LivenessAction::Fence) => {
                        tracing::warn!(node = id, "fencing a broker that stopped heartbeating");
                        records.push(MetadataRecord::FenceBroker { node_id: *id });
                    }
                    Some(LivenessAction::Unfence) => {
                        tracing::info!(node = id, "unfencing a broker that heartbeats again");
                        records.push(MetadataRecord::UnfenceBroker { node_id: *id });
                    }
                    None => {}
                }
            }
        }
        for r in records {
            if let Err(e) = cluster.write_as_controller(std::slice::from_ref(&r)).await {
                tracing::info!(error = %e, "liveness change not committed; will retry");
            }
        }
    }
}

/// Controlled shutdown: fence this broker through the quorum (its leaderships move and it
/// leaves the ISRs), then wait until no hosted partition still names it leader. Bounded by
/// `controlled.shutdown.timeout.ms`.
pub async fn controlled_shutdown(control: &ControlServices) {
    let cluster = &control.cluster;
    cluster.begin_shutdown();
    let me = control.node_id();
    let limit = Duration::from_millis(control.config.cluster.controlled_shutdown_timeout_ms);
    let started = Instant::now();
    let record = MetadataRecord::FenceBroker { node_id: me };
    let done = async {
        loop {
            match cluster.write(std::slice::from_ref(&record)).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::info!(error = %e, "controlled shutdown: fence not committed yet");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        let led = control
            .image
            .snapshot()
            .topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .filter(|p| p.leader == me)
            .count();
        tracing::info!(
            still_leading = led,
            "controlled shutdown: leaderships moved (partitions without another in-sync replica stay offline until this broker returns)"
        );
    };
    if tokio::time::timeout(limit, done).await.is_err() {
        tracing::warn!(
            waited_ms = started.elapsed().as_millis() as u64,
            "controlled shutdown timed out; stopping anyway"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(3);

    #[test]
    fn silent_brokers_are_fenced_after_the_session_timeout() {
        let beat = |ms| Some((Duration::from_millis(ms), false));
        assert_eq!(decide(false, beat(2_000), None, T), None);
        assert_eq!(
            decide(false, beat(3_001), None, T),
            Some(LivenessAction::Fence)
        );
        assert_eq!(decide(false, None, None, T), Some(LivenessAction::Fence));
    }

    #[test]
    fn only_a_beat_after_the_fence_from_a_running_broker_unfences() {
        let fenced_for = Some(Duration::from_millis(500));
        assert_eq!(
            decide(
                true,
                Some((Duration::from_millis(100), false)),
                fenced_for,
                T
            ),
            Some(LivenessAction::Unfence)
        );
        assert_eq!(
            decide(
                true,
                Some((Duration::from_millis(900), false)),
                fenced_for,
                T
            ),
            None,
            "the beat predates the fence"
        );
        assert_eq!(
            decide(
                true,
                Some((Duration::from_millis(100), true)),
                fenced_for,
                T
            ),
            None,
            "a broker shutting down stays fenced"
        );
    }

    #[test]
    fn heartbeats_are_recorded_from_messages() {
        let l = Liveness::default();
        let answer = l.on_message(serde_json::json!({"node_id": 3, "stopping": false}));
        assert_eq!(answer["ok"], true);
        assert!(l.seen.lock().contains_key(&3));
        let bad = l.on_message(serde_json::json!({"nope": 1}));
        assert_eq!(bad["ok"], false);
    }
}
