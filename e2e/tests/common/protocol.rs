//! Kafka protocol questions librdkafka does not expose, asked with `fjord-client`: the active
//! controller, every broker's address, the replica layout, DescribeQuorum per broker and the
//! cluster-wide dynamic broker defaults.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use fjord_client::Connection;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::{
    DescribeConfigsRequest, DescribeQuorumRequest, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

const DEADLINE: Duration = Duration::from_secs(10);

async fn connect(address: &str) -> Result<Connection> {
    tokio::time::timeout(DEADLINE, Connection::connect(address))
        .await
        .with_context(|| format!("connecting to {address}: timed out"))?
        .with_context(|| format!("connecting to {address}"))
}

/// Metadata for every topic from the first bootstrap address.
pub async fn metadata(bootstrap: &str) -> Result<MetadataResponse> {
    let first = bootstrap.split(',').next().unwrap_or(bootstrap);
    let mut conn = connect(first).await?;
    let request = MetadataRequest::default().with_topics(None);
    Ok(tokio::time::timeout(DEADLINE, conn.send(&request, 12))
        .await
        .context("Metadata: timed out")??)
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
    let first = bootstrap.split(',').next().unwrap_or(bootstrap);
    let mut conn = connect(first).await?;
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(StrBytes::from_static_str(""))
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
            if config.name.as_str() == key {
                return Ok(config.value.as_ref().map(|v| v.to_string()));
            }
        }
    }
    Ok(None)
}
