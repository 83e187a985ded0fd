//! The custom resources Fjord serves (group `kafka.fjord.dev`, version `v1`).
//!
//! Field names follow Strimzi's `kafka.strimzi.io` resources wherever the concept is the same, so
//! a Strimzi manifest ports by changing `apiVersion`. What Fjord does not support is rejected at
//! admission (by the schema or a CEL rule with a message), never silently ignored.

pub mod condition;
pub mod kafka;
pub mod topic;
pub mod user;

use kube::CustomResourceExt;

pub use condition::Condition;
pub use kafka::{CertificateAuthority, Kafka, KafkaSpec, KafkaStatus};
pub use topic::{KafkaTopic, KafkaTopicSpec, KafkaTopicStatus};
pub use user::{KafkaUser, KafkaUserSpec, KafkaUserStatus};

/// API group of every Fjord resource.
pub const GROUP: &str = "kafka.fjord.dev";

/// Label on KafkaTopic and KafkaUser naming the `Kafka` (same namespace) they belong to.
pub const CLUSTER_LABEL: &str = "kafka.fjord.dev/cluster";

/// Where the Helm chart keeps its copy of the CRDs (relative to the repository root); `crdgen`
/// writes it next to `crds/`.
pub const CHART_CRD_DIR: &str = "charts/fjord-operator/files/crds";

/// The CRDs as `(file name, YAML)` in a stable order; `crdgen` writes them to `crds/`.
pub fn all_crd_yaml() -> Vec<(&'static str, String)> {
    let to_yaml = |crd| serde_yaml::to_string(&crd).expect("a CRD always serializes");
    vec![
        ("kafka.yaml", to_yaml(Kafka::crd())),
        ("kafkatopic.yaml", to_yaml(KafkaTopic::crd())),
        ("kafkauser.yaml", to_yaml(KafkaUser::crd())),
    ]
}

/// A JSON-schema for a value kept as-is (`x-kubernetes-preserve-unknown-fields`).
pub(crate) fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// A free-form `key: value` map (server.properties or topic config): values may be strings,
/// numbers or booleans, which is what Strimzi users write.
pub(crate) fn config_map_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "additionalProperties": {"x-kubernetes-preserve-unknown-fields": true}
    })
}

/// Renders one config value as it goes into a properties file; objects and arrays are refused.
pub fn config_value_string(key: &str, value: &serde_json::Value) -> Result<String, String> {
    match value {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        serde_json::Value::Bool(b) => Ok(b.to_string()),
        serde_json::Value::Null => Err(format!("config key '{key}' has no value")),
        _ => Err(format!(
            "config key '{key}' must be a string, number or boolean, not a list or object"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed `crds/*.yaml` must be what `crdgen` writes today.
    #[test]
    fn committed_crds_are_current() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
        for (file, yaml) in all_crd_yaml() {
            let committed = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            assert!(
                committed == yaml,
                "crds/{file} is stale: run `cargo run -p fjord-operator --bin crdgen` and commit it"
            );
        }
    }

    /// The Helm chart renders its own copy of the CRDs: it must be exactly `crds/`.
    #[test]
    fn chart_crds_are_current() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let dir = root.join(CHART_CRD_DIR);
        let mut expected: Vec<String> = all_crd_yaml()
            .into_iter()
            .map(|(f, _)| f.to_string())
            .collect();
        expected.sort();
        let mut present: Vec<String> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        present.sort();
        assert_eq!(
            present, expected,
            "{CHART_CRD_DIR} must hold exactly the generated CRDs: run `cargo run -p fjord-operator --bin crdgen`"
        );
        for (file, yaml) in all_crd_yaml() {
            let copy = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            let committed =
                std::fs::read_to_string(root.join("crds").join(file)).unwrap_or_default();
            assert!(
                copy == yaml && copy == committed,
                "{CHART_CRD_DIR}/{file} differs from crds/{file}: run `cargo run -p fjord-operator --bin crdgen` and commit both"
            );
        }
    }

    #[test]
    fn config_values_render_like_properties() {
        use serde_json::json;
        assert_eq!(config_value_string("a", &json!("x")).unwrap(), "x");
        assert_eq!(config_value_string("a", &json!(3)).unwrap(), "3");
        assert_eq!(config_value_string("a", &json!(true)).unwrap(), "true");
        assert!(config_value_string("a", &json!({"b": 1}))
            .unwrap_err()
            .contains("'a'"));
    }
}
