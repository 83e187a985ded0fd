//! Leader election against the real API server: of two candidates only one holds the Lease, and
//! the other takes over once the holder stops renewing.

use std::time::Duration;

use anyhow::ensure;
use fjord_e2e::fixture::TestNamespace;
use fjord_operator::leader::LeaderElector;
use k8s_openapi::api::coordination::v1::Lease;

#[tokio::test]
async fn one_leader_at_a_time_and_takeover_after_expiry() {
    TestNamespace::run("leader-election", |ns| async move {
        let a = LeaderElector::new(ns.client.clone(), &ns.name, "fjord-operator-leader", "a");
        let b = LeaderElector::new(ns.client.clone(), &ns.name, "fjord-operator-leader", "b");
        ensure!(
            a.try_acquire_or_renew().await?,
            "first candidate takes the free lease"
        );
        ensure!(
            !b.try_acquire_or_renew().await?,
            "second candidate must wait"
        );
        ensure!(a.try_acquire_or_renew().await?, "holder renews");
        let lease: Lease = ns.api::<Lease>().get("fjord-operator-leader").await?;
        let spec = lease.spec.unwrap();
        ensure!(spec.holder_identity.as_deref() == Some("a"));
        ensure!(spec.lease_duration_seconds == Some(15));

        // `a` stops renewing: after the lease duration `b` takes over.
        let takeover =
            tokio::time::timeout(a.lease_duration() + Duration::from_secs(10), b.acquire()).await;
        ensure!(takeover.is_ok(), "b did not take over an expired lease");
        let spec = ns
            .api::<Lease>()
            .get("fjord-operator-leader")
            .await?
            .spec
            .unwrap();
        ensure!(spec.holder_identity.as_deref() == Some("b"));
        ensure!(spec.lease_transitions == Some(1));
        ensure!(
            !a.try_acquire_or_renew().await?,
            "the old holder must not win it back"
        );
        Ok::<(), anyhow::Error>(())
    })
    .await;
}
