//! Kafka reconciler: applies the builders' objects and reports the truth in status.
//!
//! Ready means every broker pod is ready *and* the brokers themselves report an active controller
//! and all brokers registered (asked over the Kafka protocol, not inferred from pods).

use std::collections::BTreeSet;
use std::sync::Arc;

use base64::Engine;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;

use crate::crd::condition::{merge_conditions, now_rfc3339};
use crate::crd::kafka::{BrokerCounts, KafkaStatus, ListenerStatus, ListenerType, StorageType};
use crate::crd::{Condition, Kafka};
use crate::resources::certificates::{generation, secret_text, CaKind, CERT_GENERATION_ANNOTATION};
use crate::resources::{
    broker_config, disruption_budget, names, network_policy, services, statefulset,
};

use super::{
    apply, certificates, connect_admin, object_key, patch_status, roller, scaling, Context, Error,
    RECHECK, RESYNC,
};

/// A new cluster id in Kafka's format: 16 random bytes, URL-safe base64 without padding.
pub fn new_cluster_id() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
}

/// Warnings for parts of the spec that are accepted but not fully in effect yet: the status
/// must not claim what the brokers do not do.
pub fn spec_warnings(kafka: &Kafka) -> Vec<Condition> {
    let spec = &kafka.spec.kafka;
    let mut out = Vec::new();
    let external: Vec<&str> = spec
        .listeners
        .iter()
        .filter(|l| l.type_ == ListenerType::Loadbalancer)
        .map(|l| l.name.as_str())
        .collect();
    if !external.is_empty() {
        out.push(Condition::warning(
            "ExternalAddressesNotImplemented",
            format!(
                "loadbalancer listeners {} get a bootstrap Service, but brokers still advertise \
                 in-cluster pod DNS names, so clients outside the cluster cannot reach every \
                 broker (nodeport listeners can)",
                external.join(", ")
            ),
        ));
    }
    if spec.storage.type_ == StorageType::Jbod
        && spec.storage.volumes.as_ref().is_some_and(|v| v.len() > 1)
    {
        out.push(Condition::warning(
            "JbodUsesFirstVolume",
            "all volumes are mounted, but brokers store partitions only in the first log dir",
        ));
    }
    out
}

/// Ready/NotReady from broker pods and what the brokers say (pure).
pub fn readiness(
    desired: i32,
    ready_pods: i32,
    cluster: Option<Result<crate::kafka_admin::ClusterInfo, String>>,
) -> Condition {
    if ready_pods < desired {
        return Condition::not_ready(
            "BrokersNotReady",
            format!("{ready_pods}/{desired} brokers ready"),
        );
    }
    match cluster {
        None => Condition::not_ready("BrokersNotReady", "brokers not asked yet"),
        Some(Err(e)) => Condition::not_ready("BrokersUnreachable", e),
        Some(Ok(info)) if info.controller_id.is_none() => Condition::not_ready(
            "NoActiveController",
            "the brokers report no active controller (quorum has no leader)",
        ),
        Some(Ok(info)) if (info.broker_ids.len() as i32) < desired => Condition::not_ready(
            "BrokersNotRegistered",
            format!(
                "{}/{desired} brokers registered with the controller",
                info.broker_ids.len()
            ),
        ),
        Some(Ok(_)) => Condition::ready(),
    }
}

pub async fn reconcile(kafka: Arc<Kafka>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_started("Kafka");
    let ns = kafka.namespace().unwrap_or_default();
    let name = kafka.name_any();
    let kafkas: Api<Kafka> = Api::namespaced(ctx.client.clone(), &ns);
    let previous = kafka.status.clone().unwrap_or_default();

    let problems = broker_config::validate(&kafka);
    if !problems.is_empty() {
        let message = format!("nothing was applied: {}", problems.join("; "));
        ctx.event(kafka.as_ref(), true, "InvalidSpec", message.clone())
            .await;
        let status = KafkaStatus {
            conditions: merge_conditions(
                &previous.conditions,
                vec![Condition::not_ready("InvalidSpec", message)],
                &now_rfc3339(),
            ),
            observed_generation: kafka.metadata.generation,
            ..previous
        };
        patch_status(&kafkas, &name, &status).await?;
        return Ok(Action::requeue(RESYNC));
    }

    let client = &ctx.client;
    let identity = cluster_identity(&kafka, client, &previous).await?;
    if previous.cluster_id.is_none() || previous.quorum_voters.is_empty() {
        // Record both before any broker can be formatted with them.
        patch_status(
            &kafkas,
            &name,
            &serde_json::json!({ "clusterId": identity.cluster_id, "quorumVoters": identity.voters }),
        )
        .await?;
    }
    // The CAs exist before anything could need a certificate from them, and the operator's
    // own certificate before its first admin connection.
    let mut refusals = certificates::reconcile_cas(&kafka, &ctx).await?;
    certificates::reconcile_operator_cert(&kafka, &ctx).await?;
    let mut planned = kafka.as_ref().clone();
    // One admin connection for this reconcile, when some broker can answer.
    let sts_api = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    let existing = sts_api.get_opt(&names::statefulset(&kafka)).await?;
    let ready_before = existing
        .as_ref()
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let mut admin = if ready_before > 0 {
        Some(
            connect_admin(&planned, &ctx.client)
                .await
                .map_err(|e| e.to_string()),
        )
    } else {
        None
    };
    let scale = scaling::step(
        &planned,
        &ctx,
        (planned.spec.kafka.replicas, &identity.voters),
        existing.as_ref(),
        admin.as_mut().and_then(|a| a.as_mut().ok()),
        previous.rolling_update.is_some(),
    )
    .await?;
    refusals.extend(scale.warnings);
    planned.spec.kafka.replicas = scale.statefulset_replicas;
    let kafka = Arc::new(planned);
    apply(
        &Api::<ServiceAccount>::namespaced(client.clone(), &ns),
        &statefulset::service_account(&kafka),
    )
    .await?;
    // Services first: nodeport listeners advertise the node ports Kubernetes allocates for the
    // per-broker Services, read back from what the API server returns.
    let service_api = Api::<Service>::namespaced(client.clone(), &ns);
    let mut desired_services = vec![services::headless_service(&kafka)];
    desired_services.extend(services::bootstrap_service(&kafka));
    desired_services.extend(services::listener_services(&kafka));
    desired_services.extend(services::broker_services(&kafka));
    let mut applied_services = Vec::with_capacity(desired_services.len());
    for svc in &desired_services {
        applied_services.push(apply(&service_api, svc).await?);
    }
    remove_stale_services(&service_api, &kafka, &desired_services).await?;
    let node_ports = services::node_ports(&kafka, &applied_services);
    let (config_map, hash) =
        broker_config::config_map(&kafka, &identity, &node_ports).map_err(Error::Invalid)?;
    apply(
        &Api::<ConfigMap>::namespaced(client.clone(), &ns),
        &config_map,
    )
    .await?;
    // Node addresses matter only to nodeport listeners (advertised, and named by certificates).
    let nodes = if node_ports.is_empty() {
        Some(Vec::new())
    } else {
        list_nodes(client).await
    };
    let node_address = nodes.as_deref().and_then(services::node_address);
    // Before the StatefulSet: broker pods mount the certificates. Not when the Nodes could not
    // be read: certificates without the node addresses would break clients until the next try.
    if let Some(nodes) = &nodes {
        certificates::reconcile_broker_certs(&kafka, &ctx, &services::node_addresses(nodes))
            .await?;
    }
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let cluster_ca = secrets
        .get_opt(&CaKind::Cluster.cert_secret(&kafka))
        .await?;
    let clients_ca = secrets
        .get_opt(&CaKind::Clients.cert_secret(&kafka))
        .await?;
    // Every certificate clients must trust: two while the cluster CA's key is replaced.
    let listener_ca: Vec<String> = cluster_ca
        .as_ref()
        .and_then(|s| secret_text(s, "ca.crt"))
        .map(|bundle| crate::pki::split_certificates(&bundle))
        .unwrap_or_default();
    let template = statefulset::TemplateInputs {
        config_hash: hash,
        cluster_ca_generation: cluster_ca
            .as_ref()
            .map_or(0, |s| generation(s, CERT_GENERATION_ANNOTATION)),
        clients_ca_generation: clients_ca
            .as_ref()
            .map_or(0, |s| generation(s, CERT_GENERATION_ANNOTATION)),
    };
    apply(
        &Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns),
        &disruption_budget::disruption_budget(&kafka),
    )
    .await?;
    apply(
        &Api::<NetworkPolicy>::namespaced(client.clone(), &ns),
        &network_policy::network_policy(&kafka),
    )
    .await?;
    let sts = apply(&sts_api, &statefulset::statefulset(&kafka, &template)).await?;

    let desired = kafka.spec.kafka.replicas;
    let ready_pods = sts
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    if admin.is_none() && ready_pods > 0 {
        admin = Some(
            connect_admin(&kafka, &ctx.client)
                .await
                .map_err(|e| e.to_string()),
        );
    }
    let layout = match admin.as_mut() {
        Some(Ok(admin)) => Some(admin.layout().await.map_err(|e| e.to_string())),
        Some(Err(e)) => Some(Err(e.clone())),
        None => None,
    };
    let roll = roller::step(
        &kafka,
        &ctx,
        &sts,
        previous.rolling_update.clone(),
        layout.as_ref().and_then(|l| l.as_ref().ok()),
    )
    .await?;
    let cluster = layout.filter(|_| ready_pods >= desired).map(|l| {
        l.map(|l| crate::kafka_admin::ClusterInfo {
            cluster_id: None,
            controller_id: l.controller_id,
            broker_ids: l.brokers.iter().map(|b| b.id).collect(),
        })
    });
    let ready = readiness(desired, ready_pods, cluster);
    let is_ready = ready.type_ == "Ready";
    if is_ready {
        if let Some(Ok(admin)) = admin.as_mut() {
            if let Err(why) = apply_dynamic_config(&kafka, &ctx, admin).await {
                refusals.push(Condition::warning("DynamicConfigNotApplied", why));
            }
        }
    }
    let mut conditions = vec![ready];
    conditions.extend(refusals);
    conditions.extend(roll.warnings);
    conditions.extend(spec_warnings(&kafka));
    if !node_ports.is_empty() && node_address.is_none() {
        conditions.push(Condition::warning(
            "NodeAddressUnknown",
            "no node address for the nodeport listeners' bootstrapServers (no Node reports one, \
             or the operator may not list Nodes), so they are not in status.listeners yet",
        ));
    }
    let status = KafkaStatus {
        conditions: merge_conditions(&previous.conditions, conditions, &now_rfc3339()),
        observed_generation: kafka.metadata.generation,
        cluster_id: Some(identity.cluster_id),
        quorum_voters: identity.voters,
        rebalance: scale.status,
        rolling_update: roll.status,
        listeners: services::bootstrap_addresses(&kafka, &node_ports, node_address.as_deref())
            .into_iter()
            .map(|(name, bootstrap_servers)| {
                let tls = kafka
                    .spec
                    .kafka
                    .listeners
                    .iter()
                    .any(|l| l.name == name && l.tls);
                ListenerStatus {
                    certificates: if tls { listener_ca.clone() } else { Vec::new() },
                    name,
                    bootstrap_servers,
                }
            })
            .collect(),
        brokers: Some(BrokerCounts {
            ready: ready_pods,
            total: desired,
        }),
    };
    patch_status(&kafkas, &name, &status).await?;
    ctx.succeeded(&object_key(kafka.as_ref()));
    Ok(Action::requeue(match roll.recheck {
        Some(soon) => soon,
        None if scale.busy => roller::ROLL_RECHECK,
        None if is_ready => RESYNC,
        None => RECHECK,
    }))
}

/// Applies the dynamic keys of `spec.kafka.config` as cluster-wide broker defaults (no restart).
async fn apply_dynamic_config(
    kafka: &Kafka,
    ctx: &Context,
    admin: &mut crate::kafka_admin::KafkaAdmin,
) -> Result<(), String> {
    let desired = broker_config::dynamic_config(kafka)?;
    let current = admin
        .cluster_broker_defaults()
        .await
        .map_err(|e| format!("cannot read the brokers' dynamic config: {e}"))?;
    let (set, delete) = broker_config::dynamic_changes(&desired, &current);
    if set.is_empty() && delete.is_empty() {
        return Ok(());
    }
    admin
        .alter_cluster_broker_defaults(&set, &delete)
        .await
        .map_err(|e| format!("dynamic broker config {set:?} (removing {delete:?}) refused: {e}"))?;
    ctx.event(
        kafka,
        false,
        "BrokerConfigUpdated",
        format!("applied without restarts: set {set:?}, removed {delete:?}"),
    )
    .await;
    Ok(())
}

/// The cluster id and quorum voters the brokers are (or will be) formatted with: from the
/// status; else, for a cluster whose status was lost, the voters its ConfigMap already gives
/// the brokers; else a new cluster's (see [`broker_config::Identity`]).
async fn cluster_identity(
    kafka: &Kafka,
    client: &kube::Client,
    previous: &KafkaStatus,
) -> Result<broker_config::Identity, Error> {
    let cluster_id = previous.cluster_id.clone().unwrap_or_else(new_cluster_id);
    if !previous.quorum_voters.is_empty() {
        return Ok(broker_config::Identity {
            cluster_id,
            voters: previous.quorum_voters.clone(),
        });
    }
    let ns = kafka.namespace().unwrap_or_default();
    let existing = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get_opt(&crate::resources::names::config_map(kafka))
        .await?;
    let recorded = existing
        .and_then(|cm| cm.data)
        .and_then(|data| data.get(&broker_config::file_name(0)).cloned())
        .and_then(|text| broker_config::voters_from_properties(&text));
    Ok(match recorded {
        Some(voters) => broker_config::Identity { cluster_id, voters },
        None => broker_config::Identity::new_cluster(cluster_id, kafka.spec.kafka.replicas),
    })
}

/// The cluster's Nodes: nodeport listeners advertise their addresses and broker certificates
/// name them. Listing Nodes needs cluster-wide `list` on `nodes`; without it (or on any error)
/// this is `None` and the status says the address is unknown instead of failing the reconcile.
async fn list_nodes(client: &kube::Client) -> Option<Vec<Node>> {
    let nodes: Api<Node> = Api::all(client.clone());
    match nodes.list(&ListParams::default()).await {
        Ok(list) => Some(list.items),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list Nodes for nodeport listener addresses");
            None
        }
    }
}

/// Deletes listener Services of this cluster that the spec no longer asks for (they hold no data).
async fn remove_stale_services(
    api: &Api<Service>,
    kafka: &Kafka,
    desired: &[Service],
) -> Result<(), Error> {
    let wanted: BTreeSet<String> = desired
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    let selector = crate::resources::selector_string(kafka);
    let owned = api.list(&ListParams::default().labels(&selector)).await?;
    for svc in owned {
        let name = svc.name_any();
        let ours = svc
            .owner_references()
            .iter()
            .any(|o| Some(&o.uid) == kafka.metadata.uid.as_ref());
        if ours && !wanted.contains(&name) {
            api.delete(&name, &DeleteParams::default()).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka_admin::ClusterInfo;
    use crate::resources::test_support::{kafka, THREE_BROKERS};

    fn info(controller: Option<i32>, brokers: &[i32]) -> ClusterInfo {
        ClusterInfo {
            cluster_id: Some("c".into()),
            controller_id: controller,
            broker_ids: brokers.to_vec(),
        }
    }

    #[test]
    fn ready_needs_pods_controller_and_registrations() {
        let c = readiness(3, 2, None);
        assert_eq!(c.reason.as_deref(), Some("BrokersNotReady"));
        assert_eq!(c.message.as_deref(), Some("2/3 brokers ready"));
        let c = readiness(3, 3, Some(Ok(info(None, &[0, 1, 2]))));
        assert_eq!(c.reason.as_deref(), Some("NoActiveController"));
        let c = readiness(3, 3, Some(Ok(info(Some(0), &[0, 1]))));
        assert_eq!(c.reason.as_deref(), Some("BrokersNotRegistered"));
        let c = readiness(3, 3, Some(Err("refused".into())));
        assert_eq!(c.reason.as_deref(), Some("BrokersUnreachable"));
        assert_eq!(
            readiness(3, 3, Some(Ok(info(Some(1), &[0, 1, 2])))).type_,
            "Ready"
        );
    }

    #[test]
    fn cluster_ids_look_like_kafkas() {
        let id = new_cluster_id();
        assert_eq!(id.len(), 22);
        assert_ne!(id, new_cluster_id());
    }

    #[test]
    fn unimplemented_features_are_warned_about() {
        assert!(spec_warnings(&kafka(THREE_BROKERS)).is_empty());
        let k = kafka(
            r#"
kafka:
  replicas: 1
  listeners:
    - {name: scram, port: 9093, type: internal, tls: false, authentication: {type: scram-sha-512}}
    - {name: ext, port: 9094, type: loadbalancer, tls: false}
    - {name: np, port: 9095, type: nodeport, tls: false}
  authorization: {type: simple}
  storage: {type: ephemeral}
"#,
        );
        let reasons: Vec<_> = spec_warnings(&k)
            .into_iter()
            .map(|c| c.reason.unwrap())
            .collect();
        assert_eq!(reasons, vec!["ExternalAddressesNotImplemented"]);
    }
}
