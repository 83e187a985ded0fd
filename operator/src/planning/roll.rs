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

/// A broker's answer to "may I be stopped now?" (`/v1/restart-safety`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Safety {
    Safe,
    /// The broker says no, and why.
    Unsafe(String),
    /// No answer (unreachable, timed out, unparsable).
    Unknown(String),
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
/// A ready broker needs a `Safe` answer. A crash-looping pod is down already, so it is restarted
/// with a warning even when its broker cannot vouch for it (that is how a bad config is fixed).
/// Any other unready pod is restarted only when safe: it may still hold the last in-sync copy.
pub fn decide(pod: &BrokerPod, safety: &Safety) -> Decision {
    match safety {
        Safety::Safe => Decision::Restart { warning: None },
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
        Safety::Unknown(why) => format!("restart safety unknown: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
