//! ElectLeaders (what `kafka-leader-election` uses): PREFERRED (0) moves a partition's
//! leadership to its first assigned replica if that replica is live and in the ISR; UNCLEAN (1)
//! gives a partition without a leader one, from outside the ISR if need be. A null partition
//! list means every partition, and then (as in Kafka) partitions that need no election are left
//! out of the answer.
//!
//! Needs ALTER on the cluster: otherwise every requested partition and (from v1) the top-level
//! error are CLUSTER_AUTHORIZATION_FAILED. Each election is an `AlterPartition` conditional on
//! the partition epoch it was computed from (`metadata::leadership`); the answer waits, within
//! the request's timeout, until the change is applied on this broker. In single-node mode every
//! partition is led by its only possible leader: ELECTION_NOT_NEEDED.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse};

use super::authz::Authz;
use super::services::ControllerServices;
use super::topic_name;
use crate::auth::acl::AclOperation;
use crate::metadata::leadership::{self, Election};
use crate::metadata::MetadataImage;
use crate::protocol::context::{s, RequestContext};
use crate::protocol::errors::ErrorCode;

/// Rounds of "write the elections, re-read the image" before giving up on partitions whose
/// conditional record kept losing races with other changes.
const MAX_ROUNDS: usize = 5;
/// Used when the request carries no positive timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

type Key = (String, i32);
type Outcome = (ErrorCode, Option<String>);

pub async fn handle(
    services: ControllerServices<'_>,
    ctx: &RequestContext,
    req: ElectLeadersRequest,
) -> ElectLeadersResponse {
    let requested: Option<Vec<Key>> = req.topic_partitions.as_ref().map(|topics| {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for t in topics {
            for p in &t.partitions {
                let key = (t.topic.0.to_string(), *p);
                if seen.insert(key.clone()) {
                    out.push(key);
                }
            }
        }
        out
    });
    if !Authz::new(services.authorizer, ctx).cluster(AclOperation::Alter) {
        return refused(
            ctx.api_version,
            requested,
            ErrorCode::ClusterAuthorizationFailed,
            None,
        );
    }
    let unclean = match req.election_type {
        0 => false,
        1 => true,
        other => {
            let why = format!("unknown election type {other}");
            return refused(
                ctx.api_version,
                requested,
                ErrorCode::InvalidRequest,
                Some(why),
            );
        }
    };
    let all = requested.is_none();
    let targets = requested.unwrap_or_else(|| every_partition(&services.image.snapshot()));
    let timeout = u64::try_from(req.timeout_ms)
        .ok()
        .filter(|t| *t > 0)
        .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
    let results = elect(services, targets, unclean, timeout).await;
    let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for ((topic, partition), (code, message)) in results {
        if all && code == ErrorCode::ElectionNotNeeded {
            continue;
        }
        by_topic.entry(topic).or_default().push(
            PartitionResult::default()
                .with_partition_id(partition)
                .with_error_code(code.code())
                .with_error_message(message.map(s)),
        );
    }
    ElectLeadersResponse::default().with_replica_election_results(
        by_topic
            .into_iter()
            .map(|(topic, partitions)| {
                ReplicaElectionResult::default()
                    .with_topic(topic_name(&topic))
                    .with_partition_result(partitions)
            })
            .collect(),
    )
}

/// The same error for every requested partition and, from v1 (v0 has no such field), at the
/// top level.
fn refused(
    version: i16,
    requested: Option<Vec<Key>>,
    code: ErrorCode,
    why: Option<String>,
) -> ElectLeadersResponse {
    let mut by_topic: BTreeMap<String, Vec<PartitionResult>> = BTreeMap::new();
    for (topic, partition) in requested.unwrap_or_default() {
        by_topic.entry(topic).or_default().push(
            PartitionResult::default()
                .with_partition_id(partition)
                .with_error_code(code.code())
                .with_error_message(why.clone().map(s)),
        );
    }
    let top = if version >= 1 { code.code() } else { 0 };
    ElectLeadersResponse::default()
        .with_error_code(top)
        .with_replica_election_results(
            by_topic
                .into_iter()
                .map(|(topic, partitions)| {
                    ReplicaElectionResult::default()
                        .with_topic(topic_name(&topic))
                        .with_partition_result(partitions)
                })
                .collect(),
        )
}

fn every_partition(img: &MetadataImage) -> Vec<Key> {
    img.topics
        .iter()
        .flat_map(|(name, t)| (0..t.partitions.len() as i32).map(move |i| (name.clone(), i)))
        .collect()
}

/// What an election of one partition comes to, without writing anything.
fn decide(img: &MetadataImage, key: &Key, unclean: bool) -> Result<Election, Outcome> {
    let (topic, partition) = key;
    let Some(t) = img.topics.get(topic) else {
        return Err((
            ErrorCode::UnknownTopicOrPartition,
            Some(format!("No such topic as {topic}")),
        ));
    };
    let Some(p) = usize::try_from(*partition)
        .ok()
        .and_then(|i| t.partitions.get(i))
    else {
        return Err((
            ErrorCode::UnknownTopicOrPartition,
            Some(format!("No such partition as {topic}-{partition}")),
        ));
    };
    let live = |id| leadership::is_live(img, id);
    Ok(if unclean {
        leadership::unclean_election(p, live)
    } else {
        leadership::preferred_election(p, live)
    })
}

fn not_available(unclean: bool, detail: &str) -> Outcome {
    if unclean {
        (
            ErrorCode::EligibleLeadersNotAvailable,
            Some(format!("No live replica can lead the partition{detail}.")),
        )
    } else {
        (
            ErrorCode::PreferredLeaderNotAvailable,
            Some(format!(
                "The preferred leader is not live or not in the ISR{detail}."
            )),
        )
    }
}

/// Runs the elections and waits until they are applied here: the outcome of each target.
async fn elect(
    services: ControllerServices<'_>,
    targets: Vec<Key>,
    unclean: bool,
    timeout: Duration,
) -> BTreeMap<Key, Outcome> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut results: BTreeMap<Key, Outcome> = BTreeMap::new();
    // The leader each written election asked for: seeing it in the image is success.
    let mut asked: HashMap<Key, i32> = HashMap::new();
    let mut pending = targets;
    for round in 0.. {
        let mut records = Vec::new();
        let mut still = Vec::new();
        {
            let img = services.image.snapshot();
            for key in pending.drain(..) {
                let decision = decide(&img, &key, unclean);
                let leader_now = img.topics.get(&key.0).and_then(|t| {
                    t.partitions
                        .get(usize::try_from(key.1).ok()?)
                        .map(|p| p.leader)
                });
                if asked.get(&key).is_some_and(|l| leader_now == Some(*l)) {
                    results.insert(key, (ErrorCode::None, None));
                    continue;
                }
                match decision {
                    Err(outcome) => {
                        results.insert(key, outcome);
                    }
                    Ok(Election::NotNeeded) => {
                        results.insert(key, (ErrorCode::ElectionNotNeeded, None));
                    }
                    Ok(Election::NotAvailable) => {
                        results.insert(key, not_available(unclean, ""));
                    }
                    Ok(e @ Election::Elect { leader, .. }) if round < MAX_ROUNDS => {
                        records.extend(e.record(&key.0, key.1));
                        asked.insert(key.clone(), leader);
                        still.push(key);
                    }
                    Ok(Election::Elect { .. }) => {
                        let detail = " (the partition kept changing during the election)";
                        results.insert(key, not_available(unclean, detail));
                    }
                }
            }
        }
        if still.is_empty() {
            break;
        }
        pending = still;
        let cluster = &services.cluster;
        let failure = match tokio::time::timeout_at(deadline, cluster.write(&records)).await {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => format!("The election was not committed: {e}"),
            Err(_) => "The election was not applied within the request timeout".to_string(),
        };
        for key in pending.drain(..) {
            results.insert(key, (ErrorCode::RequestTimedOut, Some(failure.clone())));
        }
        break;
    }
    results
}

#[cfg(test)]
mod tests {
    use kafka_protocol::protocol::Encodable;

    use super::*;

    #[test]
    fn refusals_encode_at_every_version() {
        for version in 0..=2 {
            let requested = Some(vec![("t".to_string(), 0), ("t".to_string(), 1)]);
            let r = refused(
                version,
                requested,
                ErrorCode::ClusterAuthorizationFailed,
                None,
            );
            let mut buf = bytes::BytesMut::new();
            r.encode(&mut buf, version)
                .unwrap_or_else(|e| panic!("v{version}: {e}"));
            let codes: Vec<i16> = r.replica_election_results[0]
                .partition_result
                .iter()
                .map(|p| p.error_code)
                .collect();
            assert_eq!(codes, vec![31, 31]);
            assert_eq!(r.error_code, if version == 0 { 0 } else { 31 });
        }
    }
}
