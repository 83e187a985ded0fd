//! `fjord-local-provisioner`: the local cluster's dynamic volume provisioner.
//!
//! Why our own: Kubernetes' built-in hostPath provisioner creates directories owned by root
//! with mode 0750, which a non-root broker cannot write, and it provisions on whatever host the
//! controller-manager runs on. This one gives every pending claim of the `fjord-local`
//! StorageClass a directory under the node's volume folder (world-writable, since hostPath
//! volumes ignore `fsGroup`), creates a PersistentVolume pre-bound to the claim, and, when a
//! claim is deleted, removes the directory and the volume (reclaim policy Delete). It polls
//! once a second: a test cluster has a handful of claims.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeSpec,
};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::Client;

const STORAGE_CLASS: &str = "fjord-local";
const PROVISIONER: &str = "fjord.dev/local";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| -> Result<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
            .with_context(|| {
                format!("usage: fjord-local-provisioner --kubeconfig FILE --volumes DIR (missing {name})")
            })
    };
    let kubeconfig = PathBuf::from(flag("--kubeconfig")?);
    let volumes = PathBuf::from(flag("--volumes")?);
    std::fs::create_dir_all(&volumes)?;
    let client = fjord_e2e::fixture::client_for(&kubeconfig).await?;
    eprintln!(
        "fjord-local-provisioner: serving StorageClass {STORAGE_CLASS} from {}",
        volumes.display()
    );
    loop {
        if let Err(error) = pass(&client, &volumes).await {
            eprintln!("fjord-local-provisioner: {error:#}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn pass(client: &Client, volumes: &Path) -> Result<()> {
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    for claim in claims.list(&ListParams::default()).await? {
        if wants_volume(&claim) {
            provision(&pvs, &claim, volumes).await?;
        }
    }
    for pv in pvs.list(&ListParams::default()).await? {
        let ours = pv
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PROVISIONED_BY))
            .is_some_and(|p| p == PROVISIONER);
        let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
        if ours && matches!(phase, Some("Released" | "Failed")) {
            reclaim(&pvs, &pv, volumes).await?;
        }
    }
    Ok(())
}

/// A claim of our class that is pending and not yet given a volume.
fn wants_volume(claim: &PersistentVolumeClaim) -> bool {
    let Some(spec) = &claim.spec else {
        return false;
    };
    let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
    spec.storage_class_name.as_deref() == Some(STORAGE_CLASS)
        && spec.volume_name.is_none()
        && phase == Some("Pending")
        && claim.metadata.deletion_timestamp.is_none()
}

async fn provision(
    pvs: &Api<PersistentVolume>,
    claim: &PersistentVolumeClaim,
    volumes: &Path,
) -> Result<()> {
    let uid = claim.metadata.uid.clone().context("claim without uid")?;
    let name = format!("pvc-{uid}");
    if pvs.get_opt(&name).await?.is_some() {
        return Ok(());
    }
    let spec = claim.spec.clone().unwrap_or_default();
    let Some(size) = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .cloned()
    else {
        bail!("claim {:?} requests no storage size", claim.metadata.name);
    };
    let dir = volumes.join(&name);
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
    let pv = PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            annotations: Some(BTreeMap::from([(
                PROVISIONED_BY.to_string(),
                PROVISIONER.to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([("storage".to_string(), size)])),
            access_modes: spec.access_modes.clone(),
            storage_class_name: Some(STORAGE_CLASS.into()),
            persistent_volume_reclaim_policy: Some("Delete".into()),
            volume_mode: spec.volume_mode.clone(),
            host_path: Some(HostPathVolumeSource {
                path: dir.display().to_string(),
                type_: Some("Directory".into()),
            }),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: claim.metadata.namespace.clone(),
                name: claim.metadata.name.clone(),
                uid: Some(uid),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    pvs.create(&PostParams::default(), &pv).await?;
    eprintln!(
        "fjord-local-provisioner: {name} for claim {}/{}",
        claim.metadata.namespace.as_deref().unwrap_or(""),
        claim.metadata.name.as_deref().unwrap_or("")
    );
    Ok(())
}

async fn reclaim(pvs: &Api<PersistentVolume>, pv: &PersistentVolume, volumes: &Path) -> Result<()> {
    let name = pv.metadata.name.clone().unwrap_or_default();
    let dir = volumes.join(&name);
    // Only ever delete inside our own folder.
    if dir.starts_with(volumes) && dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    pvs.delete(&name, &DeleteParams::default()).await?;
    eprintln!("fjord-local-provisioner: deleted {name} (claim gone)");
    Ok(())
}
