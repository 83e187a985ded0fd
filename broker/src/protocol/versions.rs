//! The APIs and version ranges this broker implements; ApiVersions advertises exactly these.

use kafka_protocol::messages::ApiKey;

/// (api, min, max). Floors follow Kafka 4.x (KIP-896); Produce is advertised from v0 even though
/// v0-2 requests are refused, because librdkafka misbehaves otherwise (KAFKA-18659).
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 12),
    (ApiKey::Fetch, 4, 17),
    (ApiKey::ListOffsets, 1, 9),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::FindCoordinator, 0, 5),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::DescribeTopicPartitions, 0, 0),
    // Cluster introspection (kafka-metadata-quorum, kafka-log-dirs); Kafka 4.x ranges.
    (ApiKey::DescribeQuorum, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    // Partition reassignment (kafka-reassign-partitions, KIP-455); Kafka 4.x ranges.
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    // kafka-leader-election; Kafka 4.x range.
    (ApiKey::ElectLeaders, 0, 2),
    // Security admin (storage only, no enforcement yet). Same ranges as Kafka 4.x, whose floors
    // drop v0 of the ACL APIs (KIP-896).
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
    (ApiKey::DescribeClientQuotas, 0, 1),
    (ApiKey::AlterClientQuotas, 0, 1),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
];

/// The version range for `key`, or None when the API is not implemented.
pub fn range(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, lo, hi)| (*lo, *hi))
}

/// Whether requests at this version are actually served (Produce v0-2 are advertised only).
pub fn accepts(key: ApiKey, version: i16) -> bool {
    match range(key) {
        Some((lo, hi)) => {
            let lo = if key == ApiKey::Produce { 3 } else { lo };
            version >= lo && version <= hi
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_ranges_are_within_the_codec() {
        for (k, lo, hi) in SUPPORTED {
            let codec = k.valid_versions();
            let lo = if *k == ApiKey::Produce { 3 } else { *lo };
            assert!(
                lo >= codec.min && *hi <= codec.max,
                "{k:?} {lo}..{hi} vs codec {codec:?}"
            );
        }
        assert!(!accepts(ApiKey::Produce, 2));
        assert!(accepts(ApiKey::Produce, 3));
        assert!(!accepts(ApiKey::Fetch, 3));
    }
}
