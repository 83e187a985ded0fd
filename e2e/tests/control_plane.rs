//! Integration tests against the real control plane (etcd, kube-apiserver,
//! kube-controller-manager from upstream): the behaviours the operator relies on and no mock
//! reproduces — CRD schema validation, server-side apply, watches, the status subresource, the
//! StatefulSet controller and owner-reference garbage collection.
//!
//! Needs `cargo xtask tools` first; without the tools these tests fail, they never skip.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use fjord_e2e::fixture::{poll_until, TestNamespace};
use fjord_e2e::tools::KUBERNETES_VERSION;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, ObjectMeta, Patch,
    PatchParams, PostParams,
};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::json;

const WIDGET_CRD: &str = "widgets.e2e.fjord.dev";
const WAIT: Duration = Duration::from_secs(60);

/// A namespaced CRD with a validated spec and a status subresource.
const WIDGET_CRD_YAML: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.e2e.fjord.dev
spec:
  group: e2e.fjord.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
          status:
            type: object
            properties:
              observedSize: {type: integer}
"#;

/// A StatefulSet whose pods can never run (there is no node): only the controller acts on it.
const WEB_STATEFULSET_YAML: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  replicas: 2
  # Parallel: OrderedReady would wait for web-0 to be Ready (needs a node) before creating web-1.
  podManagementPolicy: Parallel
  serviceName: web
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: registry.invalid/fjord/never-pulled:0
"#;

#[tokio::test]
async fn apiserver_reports_the_pinned_upstream_version() {
    TestNamespace::run("version", |ns| async move {
        let version = ns.client.apiserver_version().await?;
        ensure!(
            version.git_version == KUBERNETES_VERSION,
            "apiserver reports {}, expected {KUBERNETES_VERSION}",
            version.git_version
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn crd_statefulset_controller_and_garbage_collection() {
    TestNamespace::run("crd-sts-gc", |ns| async move {
        // Step timings go to the captured output (shown on failure or with --nocapture).
        let started = std::time::Instant::now();
        let widgets = apply_widget_crd(&ns).await?;
        let widget = create_widget(&widgets).await?;
        eprintln!(
            "[{:.1?}] CRD established, custom object and status written",
            started.elapsed()
        );
        statefulset_controller_creates_pods(&ns).await?;
        eprintln!(
            "[{:.1?}] StatefulSet pods created, then garbage-collected",
            started.elapsed()
        );
        // The garbage collector learns about a new CRD's kind from discovery, which it re-reads
        // every 30 s: this step may wait that long after a fresh CRD.
        deleting_an_owner_collects_its_dependents(&ns, &widgets, &widget).await?;
        eprintln!(
            "[{:.1?}] custom object's dependent garbage-collected",
            started.elapsed()
        );
        Ok(())
    })
    .await;
}

/// Server-side-applies the CRD, waits (through a watch) until it is established and returns an
/// API handle for its objects in the test namespace.
async fn apply_widget_crd(ns: &TestNamespace) -> Result<Api<DynamicObject>> {
    let crds: Api<CustomResourceDefinition> = Api::all(ns.client.clone());
    let crd: CustomResourceDefinition = serde_yaml::from_str(WIDGET_CRD_YAML)?;
    // Apply is idempotent, so tests sharing a reused control plane can all apply it.
    crds.patch(
        WIDGET_CRD,
        &PatchParams::apply("fjord-e2e").force(),
        &Patch::Apply(&crd),
    )
    .await
    .context("server-side apply of the CRD")?;
    tokio::time::timeout(
        WAIT,
        await_condition(crds, WIDGET_CRD, conditions::is_crd_established()),
    )
    .await
    .context("CRD not established in time")??;

    let gvk = GroupVersionKind::gvk("e2e.fjord.dev", "v1", "Widget");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "widgets");
    Ok(Api::namespaced_with(ns.client.clone(), &ns.name, &resource))
}

/// The apiserver validates custom objects against the CRD schema, and status is only written
/// through the status subresource.
async fn create_widget(widgets: &Api<DynamicObject>) -> Result<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("e2e.fjord.dev", "v1", "Widget"),
        "widgets",
    );
    let invalid = DynamicObject::new("too-small", &resource).data(json!({"spec": {"size": 0}}));
    match widgets.create(&PostParams::default(), &invalid).await {
        Err(kube::Error::Api(status)) if status.code == 422 => {}
        other => {
            bail!("a widget with size 0 must be rejected by schema validation (422), got {other:?}")
        }
    }

    let widget = DynamicObject::new("owner", &resource)
        .data(json!({"spec": {"size": 3}, "status": {"observedSize": 99}}));
    let created = widgets
        .create(&PostParams::default(), &widget)
        .await
        .context("creating a widget")?;
    ensure!(
        created.data.get("status").is_none(),
        "status must be ignored on create with a status subresource"
    );

    widgets
        .patch_status(
            "owner",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedSize": 3}})),
        )
        .await
        .context("patching the widget's status subresource")?;
    let read = widgets.get("owner").await?;
    ensure!(
        read.data["status"]["observedSize"] == 3,
        "status not written: {:?}",
        read.data
    );
    Ok(read)
}

/// kube-controller-manager's StatefulSet controller creates the pods; their image can never be
/// pulled (there is no registry), so they stay Pending whether or not the cluster has a node.
async fn statefulset_controller_creates_pods(ns: &TestNamespace) -> Result<()> {
    let statefulsets: Api<StatefulSet> = ns.api();
    let statefulset: StatefulSet = serde_yaml::from_str(WEB_STATEFULSET_YAML)?;
    statefulsets
        .create(&PostParams::default(), &statefulset)
        .await
        .context("creating the StatefulSet")?;

    let pods: Api<Pod> = ns.api();
    let web_pods = ListParams::default().labels("app=web");
    poll_until(
        WAIT,
        "the StatefulSet controller to create pods web-0 and web-1",
        || async { Ok(pods.list(&web_pods).await?.items.len() == 2) },
    )
    .await?;
    for name in ["web-0", "web-1"] {
        let pod = pods.get(name).await?;
        let owners = pod.metadata.owner_references.unwrap_or_default();
        ensure!(
            owners
                .iter()
                .any(|o| o.kind == "StatefulSet" && o.name == "web" && o.controller == Some(true)),
            "{name} is not controlled by StatefulSet web: {owners:?}"
        );
        let phase = pod.status.and_then(|s| s.phase).unwrap_or_default();
        ensure!(
            phase == "Pending",
            "{name} should stay Pending (its image cannot be pulled), is {phase:?}"
        );
    }

    // Deleting the StatefulSet (background propagation) leaves its pods to the garbage collector.
    statefulsets
        .delete("web", &DeleteParams::background())
        .await?;
    poll_until(
        WAIT,
        "the garbage collector to delete the StatefulSet's pods",
        || async { Ok(pods.list(&web_pods).await?.items.is_empty()) },
    )
    .await
}

/// A ConfigMap owned by the custom object goes away when the custom object is deleted.
async fn deleting_an_owner_collects_its_dependents(
    ns: &TestNamespace,
    widgets: &Api<DynamicObject>,
    widget: &DynamicObject,
) -> Result<()> {
    let config_maps: Api<ConfigMap> = ns.api();
    let dependent = ConfigMap {
        metadata: ObjectMeta {
            name: Some("owned-by-widget".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "e2e.fjord.dev/v1".into(),
                kind: "Widget".into(),
                name: widget.metadata.name.clone().unwrap_or_default(),
                uid: widget.metadata.uid.clone().context("widget has no uid")?,
                ..Default::default()
            }]),
            ..Default::default()
        },
        data: Some([("k".to_string(), "v".to_string())].into()),
        ..Default::default()
    };
    config_maps
        .create(&PostParams::default(), &dependent)
        .await
        .context("creating the dependent ConfigMap")?;
    widgets.delete("owner", &DeleteParams::background()).await?;
    // Longer than WAIT: the garbage collector only picks up a new CRD's kind at its next 30 s
    // discovery resync (hard-coded in kube-controller-manager), then syncs an informer for it.
    poll_until(
        Duration::from_secs(150),
        "the garbage collector to delete the widget's ConfigMap",
        || async { Ok(config_maps.get_opt("owned-by-widget").await?.is_none()) },
    )
    .await
}
