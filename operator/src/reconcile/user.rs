//! KafkaUser reconciler (placeholder until the user work lands): reports that users are not
//! reconciled yet rather than pretending.

use std::sync::Arc;

use kube::runtime::controller::Action;

use crate::crd::KafkaUser;

use super::{Context, Error, RESYNC};

pub async fn reconcile(_user: Arc<KafkaUser>, _ctx: Arc<Context>) -> Result<Action, Error> {
    Ok(Action::requeue(RESYNC))
}
