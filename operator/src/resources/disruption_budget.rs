//! PodDisruptionBudget: voluntary evictions (node drains) take at most one broker at a time, the
//! same budget the operator's own roller keeps.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::crd::Kafka;

use super::{names, owned_meta, selector_labels};

pub fn disruption_budget(kafka: &Kafka) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: owned_meta(kafka, names::disruption_budget(kafka)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(kafka)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::test_support::{kafka, THREE_BROKERS};

    #[test]
    fn at_most_one_broker_unavailable() {
        let pdb = disruption_budget(&kafka(THREE_BROKERS));
        let spec = pdb.spec.unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(
            spec.selector.unwrap().match_labels.unwrap()["kafka.fjord.dev/cluster"],
            "my-cluster"
        );
    }
}
