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

use super::{check, s, AdminError, KafkaAdmin};

/// Kafka's config resource type for brokers; the empty name is the cluster-wide default.
pub(crate) const BROKER_RESOURCE: i8 = 4;
/// Kafka's config resource type for topics.
pub(crate) const TOPIC_RESOURCE: i8 = 2;
/// DescribeConfigs source of a per-topic override (DYNAMIC_TOPIC_CONFIG).
pub(crate) const SOURCE_TOPIC_OVERRIDE: i8 = 1;
/// DescribeConfigs source DYNAMIC_DEFAULT_BROKER_CONFIG.
const SOURCE_DYNAMIC_DEFAULT: i8 = 3;
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

/// Sets and deletes on one config resource, for [`KafkaAdmin::alter_many_configs`].
#[derive(Debug, Clone)]
pub(crate) struct ConfigChange {
    pub resource_type: i8,
    pub name: String,
    pub set: BTreeMap<String, String>,
    pub delete: Vec<String>,
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
        let mut all = self
            .describe_configs(resource_type, &[name.to_string()], None, Some(source))
            .await?;
        Ok(all.remove(name).unwrap_or_default())
    }

    /// Config values of several resources of one type in one DescribeConfigs request: only
    /// `keys` when given, only values from `source` when given (otherwise the value in effect).
    pub(crate) async fn describe_configs(
        &mut self,
        resource_type: i8,
        names: &[String],
        keys: Option<&[&str]>,
        source: Option<i8>,
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>, AdminError> {
        if names.is_empty() {
            return Ok(BTreeMap::new());
        }
        let keys: Option<Vec<_>> = keys.map(|keys| keys.iter().map(|k| s(k)).collect());
        let request = DescribeConfigsRequest::default().with_resources(
            names
                .iter()
                .map(|name| {
                    DescribeConfigsResource::default()
                        .with_resource_type(resource_type)
                        .with_resource_name(s(name))
                        .with_configuration_keys(keys.clone())
                })
                .collect(),
        );
        let response = self.call(&request, 4).await?;
        let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for r in response.results {
            check(r.error_code, r.error_message.as_deref())?;
            let configs = out.entry(r.resource_name.to_string()).or_default();
            for c in r.configs {
                if source.is_none_or(|wanted| c.config_source == wanted) {
                    if let Some(v) = c.value {
                        configs.insert(c.name.to_string(), v.to_string());
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
        let change = ConfigChange {
            resource_type,
            name: name.to_string(),
            set: set.clone(),
            delete: delete.to_vec(),
        };
        self.alter_many_configs(&[change], validate_only).await
    }

    /// Several resources' changes in one IncrementalAlterConfigs request; the first refusal is
    /// the error.
    pub(crate) async fn alter_many_configs(
        &mut self,
        changes: &[ConfigChange],
        validate_only: bool,
    ) -> Result<(), AdminError> {
        if changes.is_empty() {
            return Ok(());
        }
        let resources = changes
            .iter()
            .map(|change| {
                let mut configs: Vec<AlterableConfig> = change
                    .set
                    .iter()
                    .map(|(k, v)| {
                        AlterableConfig::default()
                            .with_name(s(k))
                            .with_config_operation(OP_SET)
                            .with_value(Some(s(v)))
                    })
                    .collect();
                configs.extend(change.delete.iter().map(|k| {
                    AlterableConfig::default()
                        .with_name(s(k))
                        .with_config_operation(OP_DELETE)
                }));
                AlterConfigsResource::default()
                    .with_resource_type(change.resource_type)
                    .with_resource_name(s(&change.name))
                    .with_configs(configs)
            })
            .collect();
        let request = IncrementalAlterConfigsRequest::default()
            .with_resources(resources)
            .with_validate_only(validate_only);
        let response = self.call(&request, 1).await?;
        for r in response.responses {
            check(r.error_code, r.error_message.as_deref())?;
        }
        Ok(())
    }
}
