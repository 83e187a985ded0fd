//! DescribeLogDirs (what `kafka-log-dirs --describe` uses): the partitions this broker hosts in
//! its log dir, with their on-disk size, and the dir's total and usable bytes (v4).
//!
//! Needs DESCRIBE on the cluster; otherwise the answer has no log dirs and, from v3 on, the
//! top-level error CLUSTER_AUTHORIZATION_FAILED, as in Kafka. A null topic list means every hosted
//! partition; requested partitions not hosted here are left out, as in Kafka. Only the first
//! `log.dirs` entry holds partitions, so one log dir is listed.
//!
//! `offsetLag` follows Kafka's definition for a current (non-future) replica: how far this
//! replica's log end is below its own high watermark, `max(hw - leo, 0)`, which is 0 for leaders.
//! Replicas are never moved between dirs, so there are no future replicas.

use std::collections::{BTreeMap, HashMap, HashSet};

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};

use super::authz::Authz;
use super::services::ReplicaServices;
use super::topic_name;
use crate::auth::acl::AclOperation;
use crate::protocol::context::{s, RequestContext};
use crate::protocol::errors::ErrorCode;

pub async fn describe(
    services: ReplicaServices<'_>,
    ctx: &RequestContext,
    req: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    if !Authz::new(services.authorizer, ctx).cluster(AclOperation::Describe) {
        return DescribeLogDirsResponse::default()
            .with_error_code(ErrorCode::ClusterAuthorizationFailed.code());
    }
    let wanted: Option<HashMap<String, HashSet<i32>>> = req.topics.map(|topics| {
        let mut wanted: HashMap<String, HashSet<i32>> = HashMap::new();
        for t in topics {
            wanted
                .entry(t.topic.0.to_string())
                .or_default()
                .extend(t.partitions);
        }
        wanted
    });
    let mut topics: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    for p in services.replicas.all_partitions() {
        if let Some(w) = &wanted {
            if !w.get(&*p.topic).is_some_and(|ps| ps.contains(&p.index)) {
                continue;
            }
        }
        let (size, log_end) = {
            let log = p.log.read();
            (log.size_bytes(), log.log_end_offset())
        };
        topics.entry(p.topic.to_string()).or_default().push(
            DescribeLogDirsPartition::default()
                .with_partition_index(p.index)
                .with_partition_size(i64::try_from(size).unwrap_or(i64::MAX))
                .with_offset_lag((p.high_watermark() - log_end).max(0))
                .with_is_future_key(false),
        );
    }
    let dir = services.replicas.data_dir();
    let (total, usable) = crate::log::dir_health::disk_space(dir).unwrap_or((-1, -1));
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let result = DescribeLogDirsResult::default()
        .with_log_dir(s(dir.display().to_string()))
        .with_total_bytes(total)
        .with_usable_bytes(usable)
        .with_topics(
            topics
                .into_iter()
                .map(|(name, mut partitions)| {
                    partitions.sort_by_key(|p| p.partition_index);
                    DescribeLogDirsTopic::default()
                        .with_name(topic_name(&name))
                        .with_partitions(partitions)
                })
                .collect(),
        );
    DescribeLogDirsResponse::default().with_results(vec![result])
}
