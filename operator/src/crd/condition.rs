//! Status conditions shared by all three resources, in Strimzi's shape: exactly one of
//! `Ready`/`NotReady` with status "True", plus any number of `Warning` conditions.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `NotReady` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    /// A CamelCase reason a program can match on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What happened, for a human.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the condition last changed status (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

impl Condition {
    pub fn ready() -> Condition {
        Condition::new("Ready", "Ready", "")
    }

    pub fn not_ready(reason: &str, message: impl Into<String>) -> Condition {
        Condition::new("NotReady", reason, message)
    }

    pub fn warning(reason: &str, message: impl Into<String>) -> Condition {
        Condition::new("Warning", reason, message)
    }

    fn new(type_: &str, reason: &str, message: impl Into<String>) -> Condition {
        let message = message.into();
        Condition {
            type_: type_.into(),
            status: "True".into(),
            reason: Some(reason.into()),
            message: (!message.is_empty()).then_some(message),
            last_transition_time: None,
        }
    }
}

/// The current time as Kubernetes writes it (RFC 3339, seconds, UTC).
pub fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The conditions to write: `desired`, with each condition's transition time kept from `previous`
/// when the same type and status were already there (so time means "since when"), else `now`.
pub fn merge_conditions(
    previous: &[Condition],
    desired: Vec<Condition>,
    now: &str,
) -> Vec<Condition> {
    desired
        .into_iter()
        .map(|mut c| {
            let earlier = previous
                .iter()
                .find(|p| p.type_ == c.type_ && p.status == c.status && p.reason == c.reason);
            c.last_transition_time = earlier
                .and_then(|p| p.last_transition_time.clone())
                .or_else(|| Some(now.to_string()));
            c
        })
        .collect()
}

/// True when the conditions say Ready.
pub fn is_ready(conditions: &[Condition]) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_kept_while_status_unchanged() {
        let first = merge_conditions(&[], vec![Condition::ready()], "t1");
        assert_eq!(first[0].last_transition_time.as_deref(), Some("t1"));
        let again = merge_conditions(&first, vec![Condition::ready()], "t2");
        assert_eq!(again[0].last_transition_time.as_deref(), Some("t1"));
        let changed = merge_conditions(&again, vec![Condition::not_ready("X", "y")], "t3");
        assert_eq!(changed[0].last_transition_time.as_deref(), Some("t3"));
        assert!(!is_ready(&changed));
        assert!(is_ready(&again));
    }
}
