//! Rolling-restart planning: which broker pods need a restart, in which order, and what the roller
//! may do next.
//!
//! Pure: the roller (`reconcile::roller`) gathers pods, the active controller and the brokers'
//! restart-safety answers, and these functions decide. Order: pods that are not ready first
//! (they serve nothing, so restarting them costs nothing), then ready brokers by ordinal, the
//! active controller last (one controller election per roll, not one per restart).

use std::collections::BTreeSet;

/// Why a broker pod must restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RestartReason {
    /// The pod runs an older revision of the StatefulSet's pod template (broker configuration
    /// hash, image, resources or anything else in the template).
    PodTemplateChanged,
    /// `kafka.fjord.dev/manual-rolling-update=true` on the Kafka resource or on the pod.
    ManualRollingUpdate,
}

impl RestartReason {
    /// The label used in status, events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartReason::PodTemplateChanged => "PodTemplateChanged",
            RestartReason::ManualRollingUpdate => "ManualRollingUpdate",
        }
    }
}

/// One broker pod as the roller sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerPod {
    pub ordinal: i32,
    pub ready: bool,
    /// A container waiting in CrashLoopBackOff: down already, so a restart cannot make it worse.
    pub crash_looping: bool,
    /// Empty when the pod is current.
    pub reasons: BTreeSet<RestartReason>,
}

/// The pods to restart, in order.
pub fn roll_order(pods: &[BrokerPod], active_controller: Option<i32>) -> Vec<i32> {
    let mut stale: Vec<&BrokerPod> = pods.iter().filter(|p| !p.reasons.is_empty()).collect();
    stale.sort_by_key(|p| {
        let controller_last = p.ready && Some(p.ordinal) == active_controller;
        (p.ready, controller_last, p.ordinal)
    });
    stale.iter().map(|p| p.ordinal).collect()
}

/// A broker's answer to "may I be stopped now?" (`/v1/restart-safety`), classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Safety {
    Safe,
    /// The broker says no, and waiting can change that (a replica is catching up, the quorum
    /// is broken).
    Unsafe(String),
    /// The broker says no, but only because of partitions that are fully in sync and still
    /// too small to survive any restart (one replica, or min.insync.replicas >= their replica
    /// count): waiting never helps. `loses_data` when a single-replica partition lives on
    /// ephemeral storage, so the restart would delete its only copy.
    NeverSafe {
        why: String,
        loses_data: bool,
    },
    /// No answer (unreachable, timed out, unparsable).
    Unknown(String),
}

/// A partition that blocks a restart, with what the metadata says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocker {
    /// `topic-partition`.
    pub partition: String,
    pub replicas: usize,
    /// Every replica is in the ISR.
    pub fully_in_sync: bool,
}

/// Classifies a broker's "not safe": [`Safety::NeverSafe`] when every blocker is fully in sync
/// (so only its size blocks it), else [`Safety::Unsafe`].
pub fn classify_unsafe(
    quorum_stopped: Option<&str>,
    blockers: &[Blocker],
    ephemeral: bool,
) -> Safety {
    if let Some(why) = quorum_stopped {
        return Safety::Unsafe(format!("its metadata quorum member stopped: {why}"));
    }
    let names = |list: &[&Blocker]| {
        let mut names: Vec<&str> = list.iter().map(|b| b.partition.as_str()).collect();
        let more = names.len().saturating_sub(5);
        names.truncate(5);
        let mut text = names.join(", ");
        if more > 0 {
            text.push_str(&format!(" and {more} more"));
        }
        text
    };
    let catching_up: Vec<&Blocker> = blockers.iter().filter(|b| !b.fully_in_sync).collect();
    if !catching_up.is_empty() || blockers.is_empty() {
        return Safety::Unsafe(format!(
            "partitions would go offline or below min.insync.replicas until their replicas              catch up: {}",
            names(&catching_up)
        ));
    }
    let all: Vec<&Blocker> = blockers.iter().collect();
    Safety::NeverSafe {
        why: format!(
            "partitions with too few replicas to stay available through any restart: {}",
            names(&all)
        ),
        loses_data: ephemeral && blockers.iter().any(|b| b.replicas == 1),
    }
}

/// What to do with the next pod of the roll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Delete the pod now; `warning` is set when that is done although not proven safe.
    Restart { warning: Option<String> },
    /// Do not touch it yet; re-check later. The text goes to `status.rollingUpdate.blockedBy`.
    Wait(String),
}

/// May pod `pod` be restarted, given its broker's safety answer?
///
/// A ready broker needs a `Safe` answer, except when no wait can ever make it safe
/// ([`Safety::NeverSafe`]: those partitions are briefly unavailable, as with any restart) and
/// no data is lost by it. A crash-looping pod is down already, so it is restarted with a
/// warning even when its broker cannot vouch for it (that is how a bad config is fixed). Any
/// other unready pod is restarted only when safe: it may hold the last in-sync copy.
pub fn decide(pod: &BrokerPod, safety: &Safety) -> Decision {
    match safety {
        Safety::Safe => Decision::Restart { warning: None },
        Safety::NeverSafe {
            why,
            loses_data: false,
        } => Decision::Restart {
            warning: Some(format!(
                "restarting broker {} although {why}; they are unavailable until it returns",
                pod.ordinal
            )),
        },
        Safety::NeverSafe {
            why,
            loses_data: true,
        } => Decision::Wait(format!(
            "broker {}: {why}, on ephemeral storage: a restart would delete their only copy              (raise their replication factor, or delete the pod yourself to accept the loss)",
            pod.ordinal
        )),
        _ if pod.crash_looping => Decision::Restart {
            warning: Some(format!(
                "broker {} is in CrashLoopBackOff; restarting it although its restart safety is not \
                 proven ({})",
                pod.ordinal,
                describe(safety)
            )),
        },
        other => Decision::Wait(format!("broker {}: {}", pod.ordinal, describe(other))),
    }
}

fn describe(safety: &Safety) -> String {
    match safety {
        Safety::Safe => "safe".into(),
        Safety::Unsafe(why) => format!("not safe to restart: {why}"),
        Safety::NeverSafe { why, .. } => format!("not safe to restart: {why}"),
        Safety::Unknown(why) => format!("restart safety unknown: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocker(name: &str, replicas: usize, fully_in_sync: bool) -> Blocker {
        Blocker {
            partition: name.into(),
            replicas,
            fully_in_sync,
        }
    }

    #[test]
    fn waiting_helps_only_while_replicas_catch_up() {
        let lagging = [blocker("a-0", 3, false), blocker("b-0", 1, true)];
        assert!(matches!(
            classify_unsafe(None, &lagging, false),
            Safety::Unsafe(why) if why.contains("a-0") && !why.contains("b-0")
        ));
        let small = [blocker("b-0", 1, true), blocker("c-0", 2, true)];
        assert_eq!(
            classify_unsafe(None, &small, false),
            Safety::NeverSafe {
                why: "partitions with too few replicas to stay available through any restart: \
                      b-0, c-0"
                    .into(),
                loses_data: false
            }
        );
        assert!(matches!(
            classify_unsafe(None, &small, true),
            Safety::NeverSafe {
                loses_data: true,
                ..
            }
        ));
        assert!(matches!(
            classify_unsafe(None, &[blocker("c-0", 2, true)], true),
            Safety::NeverSafe {
                loses_data: false,
                ..
            }
        ));
        assert!(matches!(
            classify_unsafe(Some("disk full"), &small, false),
            Safety::Unsafe(why) if why.contains("disk full")
        ));
        let many: Vec<Blocker> = (0..8)
            .map(|i| blocker(&format!("t-{i}"), 2, false))
            .collect();
        assert!(matches!(
            classify_unsafe(None, &many, false),
            Safety::Unsafe(why) if why.ends_with("t-4 and 3 more")
        ));
    }

    fn pod(ordinal: i32, ready: bool, stale: bool) -> BrokerPod {
        BrokerPod {
            ordinal,
            ready,
            crash_looping: false,
            reasons: if stale {
                BTreeSet::from([RestartReason::PodTemplateChanged])
            } else {
                BTreeSet::new()
            },
        }
    }

    #[test]
    fn unready_first_then_by_ordinal_controller_last() {
        let pods = [
            pod(0, true, true),
            pod(1, true, true),
            pod(2, false, true),
            pod(3, true, false),
            pod(4, true, true),
        ];
        assert_eq!(roll_order(&pods, Some(1)), vec![2, 0, 4, 1]);
        assert_eq!(roll_order(&pods, None), vec![2, 0, 1, 4]);
        // An unready controller is no active controller to protect: it goes first.
        let pods = [pod(0, true, true), pod(1, false, true)];
        assert_eq!(roll_order(&pods, Some(1)), vec![1, 0]);
        assert!(roll_order(&[pod(0, true, false)], Some(0)).is_empty());
    }

    #[test]
    fn every_permutation_puts_the_controller_last_and_unready_first() {
        // 5 pods, every ready/stale combination, every controller choice.
        for mask in 0..(1u32 << 10) {
            let pods: Vec<BrokerPod> = (0..5)
                .map(|i| pod(i, mask & (1 << i) != 0, mask & (1 << (i + 5)) != 0))
                .collect();
            for controller in [None, Some(0), Some(2), Some(4)] {
                let order = roll_order(&pods, controller);
                let stale: Vec<i32> = pods
                    .iter()
                    .filter(|p| !p.reasons.is_empty())
                    .map(|p| p.ordinal)
                    .collect();
                assert_eq!(order.len(), stale.len());
                let ready = |o: i32| pods[o as usize].ready;
                let first_ready = order.iter().position(|&o| ready(o)).unwrap_or(order.len());
                assert!(order[first_ready..].iter().all(|&o| ready(o)), "{order:?}");
                if let Some(c) = controller.filter(|&c| ready(c) && stale.contains(&c)) {
                    assert_eq!(order.last(), Some(&c));
                }
            }
        }
    }

    #[test]
    fn only_safe_or_crash_looping_pods_are_restarted() {
        let ready = pod(1, true, true);
        assert_eq!(
            decide(&ready, &Safety::Safe),
            Decision::Restart { warning: None }
        );
        assert_eq!(
            decide(
                &ready,
                &Safety::Unsafe("orders-0 would drop below min.insync.replicas".into())
            ),
            Decision::Wait(
                "broker 1: not safe to restart: orders-0 would drop below min.insync.replicas"
                    .into()
            )
        );
        let starting = pod(2, false, true);
        assert!(matches!(
            decide(&starting, &Safety::Unknown("connection refused".into())),
            Decision::Wait(_)
        ));
        let never = Safety::NeverSafe {
            why: "t-0".into(),
            loses_data: false,
        };
        assert!(matches!(
            decide(&ready, &never),
            Decision::Restart { warning: Some(_) }
        ));
        let losing = Safety::NeverSafe {
            why: "t-0".into(),
            loses_data: true,
        };
        assert!(matches!(decide(&ready, &losing), Decision::Wait(_)));
        let crashing = BrokerPod {
            crash_looping: true,
            ..starting
        };
        match decide(&crashing, &Safety::Unknown("connection refused".into())) {
            Decision::Restart { warning: Some(w) } => assert!(w.contains("CrashLoopBackOff")),
            other => panic!("{other:?}"),
        }
    }
}
