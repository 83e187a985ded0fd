//! Config calls: DescribeConfigs / IncrementalAlterConfigs on any resource (topics use them
//! too), and the cluster-wide dynamic broker defaults (the `--entity-default` of `kafka-configs
//! --entity-type brokers`) the Kafka reconciler applies for dynamic keys of `spec.kafka.config`
//! instead of restarting brokers.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{DescribeConfigsRequest, IncrementalAlterConfigsRequest};
use kafka_protocol::protocol::StrBytes;

use super::{check, AdminError, KafkaAdmin};

/// Kafka's config resource type for brokers; the empty name is the cluster-wide default.
const BROKER_RESOURCE: i8 = 4;
/// DescribeConfigs source DYNAMIC_DEFAULT_BROKER_CONFIG.
const SOURCE_DYNAMIC_DEFAULT: i8 = 3;
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

impl KafkaAdmin {
    /// The cluster-wide dynamic broker defaults that are set.
    pub async fn cluster_broker_defaults(
        &mut self,
    ) -> Result<BTreeMap<String, String>, AdminError> {
        self.configs_from_source(BROKER_RESOURCE, "", SOURCE_DYNAMIC_DEFAULT)
            .await
    }

    /// Sets `set` and removes `delete` from the cluster-wide broker defaults.
    pub async fn alter_cluster_broker_defaults(
        &mut self,
        set: &BTreeMap<String, String>,
        delete: &[String],
    ) -> Result<(), AdminError> {
        self.alter_configs(BROKER_RESOURCE, "", set, delete, false)
            .await
    }

    /// The configs of one resource whose value comes from `source` (DescribeConfigs).
    pub(crate) async fn configs_from_source(
        &mut self,
        resource_type: i8,
        name: &str,
        source: i8,
    ) -> Result<BTreeMap<String, String>, AdminError> {
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(s(name))
                .with_configuration_keys(None),
        ]);
        let response = self.call(&request, 4).await?;
        let mut out = BTreeMap::new();
        for r in response.results {
            check(r.error_code, r.error_message.as_deref())?;
            for c in r.configs {
                if c.config_source == source {
                    if let Some(v) = c.value {
                        out.insert(c.name.to_string(), v.to_string());
                    }
                }
            }
        }
        Ok(out)
    }

    /// Sets `set` and removes `delete` on one resource in one IncrementalAlterConfigs request;
    /// `validate_only` changes nothing.
    pub(crate) async fn alter_configs(
        &mut self,
        resource_type: i8,
        name: &str,
        set: &BTreeMap<String, String>,
        delete: &[String],
        validate_only: bool,
    ) -> Result<(), AdminError> {
        let mut configs: Vec<AlterableConfig> = set
            .iter()
            .map(|(k, v)| {
                AlterableConfig::default()
                    .with_name(s(k))
                    .with_config_operation(OP_SET)
                    .with_value(Some(s(v)))
            })
            .collect();
        configs.extend(delete.iter().map(|k| {
            AlterableConfig::default()
                .with_name(s(k))
                .with_config_operation(OP_DELETE)
        }));
        let request = IncrementalAlterConfigsRequest::default()
            .with_resources(vec![AlterConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(s(name))
                .with_configs(configs)])
            .with_validate_only(validate_only);
        let response = self.call(&request, 1).await?;
        for r in response.responses {
            check(r.error_code, r.error_message.as_deref())?;
        }
        Ok(())
    }
}
