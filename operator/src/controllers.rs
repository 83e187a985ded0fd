//! Wires one kube-runtime `Controller` per kind to its reconciler and runs them together.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::Config;
use kube::ResourceExt;

use crate::crd::{Kafka, KafkaTopic, KafkaUser, CLUSTER_LABEL};
use crate::reconcile::{self, error_policy, Context};

/// Where the controllers look: every namespace, or one.
pub fn api<K>(ctx: &Context, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    }
}

/// Runs the Kafka, KafkaTopic and KafkaUser controllers until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = namespace.as_deref();
    let shutdown = futures::future::Shared::clone(&futures::FutureExt::shared(shutdown));

    let kafkas = Controller::new(api::<Kafka>(&ctx, ns), Config::default());
    let kafka_store = kafkas.store();
    let kafka = kafkas
        .owns(api::<StatefulSet>(&ctx, ns), Config::default())
        .owns(api::<ConfigMap>(&ctx, ns), Config::default())
        .owns(api::<Service>(&ctx, ns), Config::default())
        .owns(api::<PodDisruptionBudget>(&ctx, ns), Config::default())
        // Its CA and certificate Secrets: a `force-renew` annotation acts at once, and a
        // deleted Secret is made again.
        .owns(
            api::<Secret>(&ctx, ns),
            Config::default().labels(CLUSTER_LABEL),
        )
        // Broker pods (owned by the StatefulSet, not the Kafka): the roller acts on readiness
        // changes and on the manual-rolling-update annotation as they happen.
        .watches(
            api::<Pod>(&ctx, ns),
            Config::default().labels(CLUSTER_LABEL),
            cluster_of_pod,
        )
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile::kafka::reconcile, error_policy, ctx.clone())
        .for_each(managed(&ctx, "Kafka", kafka_store));

    // Topics and users are looked at again when their cluster changes (e.g. becomes reachable).
    let topics = Controller::new(api::<KafkaTopic>(&ctx, ns), Config::default());
    let topic_store = topics.store();
    let counted_topics = topic_store.clone();
    let topic = topics
        .watches(api::<Kafka>(&ctx, ns), Config::default(), move |k| {
            members_of(&topic_store, &k)
        })
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile::topic::reconcile, error_policy, ctx.clone())
        .for_each(managed(&ctx, "KafkaTopic", counted_topics));

    let users = Controller::new(api::<KafkaUser>(&ctx, ns), Config::default());
    let user_store = users.store();
    let referencing_store = user_store.clone();
    let counted_users = user_store.clone();
    let user = users
        .owns(api::<Secret>(&ctx, ns), Config::default())
        // A password Secret referenced by a user: rotate the credential as soon as it changes.
        .watches(api::<Secret>(&ctx, ns), Config::default(), move |secret| {
            users_referencing(&referencing_store, &secret)
        })
        .watches(api::<Kafka>(&ctx, ns), Config::default(), move |k| {
            members_of(&user_store, &k)
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile::user::reconcile, error_policy, ctx.clone())
        .for_each(managed(&ctx, "KafkaUser", counted_users));

    tokio::join!(kafka, topic, user);
}

/// What each controller does with a reconciliation's outcome: log it, and set
/// `fjord_operator_managed_resources{kind}` to the resources of `kind` in the controller's
/// cache (the ones it watches: every namespace, or the one it was given).
fn managed<K, T, E>(
    ctx: &Arc<Context>,
    kind: &'static str,
    store: Store<K>,
) -> impl FnMut(Result<T, E>) -> std::future::Ready<()>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone,
    T: std::fmt::Debug,
    E: std::fmt::Display,
{
    let gauge = ctx.metrics.managed.with_label_values(&[kind]);
    move |result| {
        gauge.set(i64::try_from(store.state().len()).unwrap_or(i64::MAX));
        log_result(kind, result);
        std::future::ready(())
    }
}

/// The topics/users (from the controller's cache) labelled as members of `kafka`.
fn members_of<K>(store: &Store<K>, kafka: &Kafka) -> Vec<ObjectRef<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let ns = kafka.namespace();
    let name = kafka.name_any();
    store
        .state()
        .into_iter()
        .filter(|m| m.namespace() == ns && m.labels().get(CLUSTER_LABEL) == Some(&name))
        .map(|m| ObjectRef::from_obj(m.as_ref()))
        .collect()
}

/// The Kafka a broker pod belongs to, by its cluster label.
fn cluster_of_pod(pod: Pod) -> Option<ObjectRef<Kafka>> {
    let cluster = pod.labels().get(CLUSTER_LABEL)?;
    Some(ObjectRef::new(cluster).within(&pod.namespace()?))
}

/// The users whose `spec.authentication.password` names `secret`.
fn users_referencing(store: &Store<KafkaUser>, secret: &Secret) -> Vec<ObjectRef<KafkaUser>> {
    let ns = secret.namespace();
    let name = secret.name_any();
    store
        .state()
        .into_iter()
        .filter(|u| u.namespace() == ns)
        .filter(|u| {
            u.spec
                .authentication
                .as_ref()
                .and_then(|a| a.password.as_ref())
                .is_some_and(|p| p.value_from.secret_key_ref.name == name)
        })
        .map(|u| ObjectRef::from_obj(u.as_ref()))
        .collect()
}

fn log_result<T: std::fmt::Debug, E: std::fmt::Display>(kind: &str, result: Result<T, E>) {
    match result {
        Ok(obj) => tracing::debug!(kind, object = ?obj, "reconciled"),
        Err(e) => tracing::debug!(kind, error = %e, "reconcile error"),
    }
}
