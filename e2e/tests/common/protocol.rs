//! Kafka protocol questions librdkafka does not expose, asked with `fjord-client`: the active
//! controller, every broker's address, the replica layout, DescribeQuorum per broker, replica
//! sizes on disk, the cluster-wide dynamic broker defaults and topic overrides.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use fjord_client::Connection;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::{
    DescribeConfigsRequest, DescribeLogDirsRequest, DescribeQuorumRequest, MetadataRequest,
    MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

const DEADLINE: Duration = Duration::from_secs(10);

async fn connect(address: &str) -> Result<Connection> {
    tokio::time::timeout(DEADLINE, Connection::connect(address))
        .await
        .with_context(|| format!("connecting to {address}: timed out"))?
        .with_context(|| format!("connecting to {address}"))
}

/// A connection to one of the `bootstrap` addresses. A nodeport bootstrap Service picks a broker
/// at random, and for a moment after a broker pod goes (a roll, a scale-down) the node may still
/// send a new connection to it, where it hangs: a few short tries instead of one long one.
async fn connect_bootstrap(bootstrap: &str) -> Result<Connection> {
    const TRIES: usize = 4;
    const PER_TRY: Duration = Duration::from_secs(4);
    let addresses: Vec<&str> = bootstrap.split(',').collect();
    let mut last = None;
    for attempt in 0..TRIES {
        let address = addresses[attempt % addresses.len()];
        match tokio::time::timeout(PER_TRY, Connection::connect(address)).await {
            Ok(Ok(conn)) => return Ok(conn),
            Ok(Err(e)) => last = Some(format!("{address}: {e}")),
            Err(_) => last = Some(format!("{address}: no connection within {PER_TRY:?}")),
        }
    }
    anyhow::bail!(
        "connecting to {bootstrap}: {TRIES} tries failed, the last: {}",
        last.unwrap_or_default()
    )
}

/// Metadata for every topic from one of the bootstrap addresses (asked again on another
/// connection when a broker goes away mid-request).
pub async fn metadata(bootstrap: &str) -> Result<MetadataResponse> {
    let request = MetadataRequest::default().with_topics(None);
    let mut last = None;
    for _ in 0..3 {
        let mut conn = connect_bootstrap(bootstrap).await?;
        match tokio::time::timeout(DEADLINE, conn.send(&request, 12)).await {
            Ok(Ok(response)) => return Ok(response),
            Ok(Err(e)) => last = Some(anyhow::Error::from(e).context("Metadata")),
            Err(_) => last = Some(anyhow::anyhow!("Metadata: timed out")),
        }
    }
    Err(last.expect("three tries were made"))
}

/// The active controller's id.
pub async fn controller_id(bootstrap: &str) -> Result<i32> {
    let response = metadata(bootstrap).await?;
    ensure!(response.controller_id.0 >= 0, "no active controller");
    Ok(response.controller_id.0)
}

/// `host:port` of every registered broker (as advertised on the listener asked).
pub async fn broker_addresses(bootstrap: &str) -> Result<BTreeMap<i32, String>> {
    Ok(metadata(bootstrap)
        .await?
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
        .collect())
}

/// Replica lists (preferred leader first) by (topic, partition).
pub async fn replica_layout(bootstrap: &str) -> Result<BTreeMap<(String, i32), Vec<i32>>> {
    let response = metadata(bootstrap).await?;
    let mut out = BTreeMap::new();
    for topic in &response.topics {
        let name = topic
            .name
            .as_ref()
            .map(|n| n.0.to_string())
            .unwrap_or_default();
        for p in &topic.partitions {
            out.insert(
                (name.clone(), p.partition_index),
                p.replica_nodes.iter().map(|b| b.0).collect(),
            );
        }
    }
    Ok(out)
}

/// What one broker says about the metadata quorum: (leader id, leader epoch, voter ids).
pub async fn describe_quorum(address: &str) -> Result<(i32, i32, Vec<i32>)> {
    let mut conn = connect(address).await?;
    let request = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
        .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
        .with_partitions(vec![PartitionData::default().with_partition_index(0)])]);
    let response = tokio::time::timeout(DEADLINE, conn.send(&request, 1))
        .await
        .context("DescribeQuorum: timed out")??;
    ensure!(
        response.error_code == 0,
        "DescribeQuorum error {}",
        response.error_code
    );
    let partition = response
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .context("DescribeQuorum answered no partition")?;
    ensure!(
        partition.error_code == 0,
        "DescribeQuorum partition error {}",
        partition.error_code
    );
    let mut voters: Vec<i32> = partition
        .current_voters
        .iter()
        .map(|v| v.replica_id.0)
        .collect();
    voters.sort_unstable();
    Ok((partition.leader_id.0, partition.leader_epoch, voters))
}

/// The cluster-wide dynamic broker default of `key` (DescribeConfigs on the empty broker name).
pub async fn cluster_default(bootstrap: &str, key: &str) -> Result<Option<String>> {
    config_value(bootstrap, BROKER_RESOURCE, "", key).await
}

/// A topic's config override of `key` (None when the topic does not override it).
pub async fn topic_override(bootstrap: &str, topic: &str, key: &str) -> Result<Option<String>> {
    config_value(bootstrap, TOPIC_RESOURCE, topic, key).await
}

/// Config resource types of DescribeConfigs.
const TOPIC_RESOURCE: i8 = 2;
const BROKER_RESOURCE: i8 = 4;
/// DescribeConfigs sources of values set on the resource itself (per topic, broker default).
const SET_SOURCES: [i8; 2] = [1, 3];

/// `key` of one config resource when it is set on that resource (not a static default).
async fn config_value(
    bootstrap: &str,
    resource_type: i8,
    name: &str,
    key: &str,
) -> Result<Option<String>> {
    let mut conn = connect_bootstrap(bootstrap).await?;
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(StrBytes::from_string(name.to_string()))
            .with_configuration_keys(None)]);
    let response = tokio::time::timeout(DEADLINE, conn.send(&request, 4))
        .await
        .context("DescribeConfigs: timed out")??;
    for result in &response.results {
        ensure!(
            result.error_code == 0,
            "DescribeConfigs error {}",
            result.error_code
        );
        for config in &result.configs {
            if config.name.as_str() == key && SET_SOURCES.contains(&config.config_source) {
                return Ok(config.value.as_ref().map(|v| v.to_string()));
            }
        }
    }
    Ok(None)
}

/// Size on disk of every partition replica the broker at `address` hosts (DescribeLogDirs).
pub async fn replica_sizes(address: &str) -> Result<BTreeMap<(String, i32), u64>> {
    let mut conn = connect(address).await?;
    let request = DescribeLogDirsRequest::default().with_topics(None);
    let response = tokio::time::timeout(DEADLINE, conn.send(&request, 3))
        .await
        .context("DescribeLogDirs: timed out")??;
    ensure!(
        response.error_code == 0,
        "DescribeLogDirs error {}",
        response.error_code
    );
    let mut sizes = BTreeMap::new();
    for dir in &response.results {
        for topic in &dir.topics {
            for p in &topic.partitions {
                sizes.insert(
                    (topic.name.0.to_string(), p.partition_index),
                    u64::try_from(p.partition_size).unwrap_or(0),
                );
            }
        }
    }
    Ok(sizes)
}
