//! How a voter with an empty log decides between forming a new quorum and waiting to be filled
//! by an existing one.
//!
//! An empty log means either a cluster being created (nobody leads yet, every voter is empty) or
//! a voter that lost its disk (ephemeral storage, a replaced volume) while the others run on. In
//! the second case the voter must not propose an initial configuration: its entry 0 would sit
//! below the leader's snapshot, its elections would disrupt the running quorum (every vote
//! request it sends bumps the term), and the log it starts is not the cluster's. The leader
//! fills an empty log itself.
//!
//! Waiting a few seconds for a leader to call is not enough to tell the two apart: on
//! Kubernetes a recreated pod gets a new address and the leader reaches it only after DNS and
//! its own reconnect backoff catch up. (Fjord's roll test once hit that: the restarted voter
//! initialized itself after 3 s and its Raft core then stopped on a log it could not apply.)
//! So the voter asks the others: it proposes a configuration only when a majority of voters,
//! itself included, say they are empty too and none says it belongs to a formed quorum.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::BasicNode;

use crate::rpc::{belongs_to_a_formed_quorum, PeerClient, QuorumTls};
use crate::Raft;

/// What an empty voter does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Formation {
    /// Propose the initial configuration: the cluster is new.
    Initialize,
    /// A quorum exists (or a leader already reached this node): wait to be filled.
    Join,
    /// Not enough answers to know yet: ask again.
    AskAgain,
}

/// Decides from the peers' answers (`Some(true)`: formed, `Some(false)`: empty, `None`: no
/// answer) and the number of voters, this node included.
pub fn decide(answers: &[Option<bool>], voters: usize) -> Formation {
    if answers.contains(&Some(true)) {
        return Formation::Join;
    }
    let empty = 1 + answers.iter().filter(|a| **a == Some(false)).count();
    if empty > voters / 2 {
        Formation::Initialize
    } else {
        Formation::AskAgain
    }
}

/// Proposes `voters` as the quorum's first configuration. Every empty voter of a new cluster
/// proposes the same one; all but the first are told the log is no longer empty, which is fine.
pub async fn propose_initial_configuration(raft: &Raft, voters: &BTreeMap<u64, String>) {
    let members: BTreeMap<u64, BasicNode> = voters
        .iter()
        .map(|(id, addr)| (*id, BasicNode::new(addr.clone())))
        .collect();
    if let Err(e) = raft.initialize(members).await {
        tracing::debug!(error = %e, "quorum already initialized");
    }
}

/// How often an undecided voter asks its peers again.
const ASK_EVERY: Duration = Duration::from_millis(500);

/// Runs until this empty voter either proposed the initial configuration or learnt that a quorum
/// exists (a leader reached it, or a peer said so). Owned by the [`crate::QuorumNode`], which
/// aborts it on shutdown.
pub async fn form_or_join(
    raft: Raft,
    node_id: u64,
    voters: BTreeMap<u64, String>,
    tls: Option<QuorumTls>,
) {
    let mut peers: Vec<PeerClient> = voters
        .iter()
        .filter(|(id, _)| **id != node_id)
        .map(|(id, addr)| PeerClient::new(*id, addr.clone(), tls.clone()))
        .collect();
    loop {
        if belongs_to_a_formed_quorum(&raft) {
            tracing::info!("empty quorum log: a leader reached this node, joining it");
            return;
        }
        let mut answers = Vec::with_capacity(peers.len());
        for peer in &mut peers {
            answers.push(peer.ask_formed(ASK_EVERY * 2).await);
        }
        match decide(&answers, voters.len()) {
            Formation::Join => {
                tracing::info!(
                    "empty quorum log: another voter belongs to a running quorum; waiting for its leader instead of initializing"
                );
                return;
            }
            Formation::Initialize => {
                propose_initial_configuration(&raft, &voters).await;
                return;
            }
            Formation::AskAgain => tokio::time::sleep(ASK_EVERY).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_formed_peer_means_join_whatever_the_others_say() {
        assert_eq!(decide(&[Some(true), Some(false)], 3), Formation::Join);
        assert_eq!(decide(&[None, Some(true)], 3), Formation::Join);
    }

    #[test]
    fn a_majority_of_empty_voters_forms_a_new_quorum() {
        assert_eq!(decide(&[Some(false), None], 3), Formation::Initialize);
        assert_eq!(
            decide(&[Some(false), Some(false)], 3),
            Formation::Initialize
        );
        assert_eq!(
            decide(&[Some(false), Some(false), None, None], 5),
            Formation::Initialize
        );
    }

    #[test]
    fn without_a_majority_of_answers_it_asks_again() {
        // The two others unreachable: this may be the one voter that lost its disk.
        assert_eq!(decide(&[None, None], 3), Formation::AskAgain);
        assert_eq!(
            decide(&[Some(false), None, None, None], 5),
            Formation::AskAgain
        );
        // Two voters: both must be empty.
        assert_eq!(decide(&[None], 2), Formation::AskAgain);
        assert_eq!(decide(&[Some(false)], 2), Formation::Initialize);
    }
}
