//! KafkaUser ACL rules -> Kafka ACL bindings, and the exact diff against what the brokers hold.
//! Pure: no I/O.

use std::collections::BTreeSet;

use crate::crd::user::{
    AclOperation, AclPatternType, AclResourceType, AclRule, AclRuleType, UserAuthorization,
};
use crate::kafka_admin::{acl_codes as c, AclBinding};

fn resource_type(t: AclResourceType) -> i8 {
    match t {
        AclResourceType::Topic => c::RESOURCE_TOPIC,
        AclResourceType::Group => c::RESOURCE_GROUP,
        AclResourceType::Cluster => c::RESOURCE_CLUSTER,
        AclResourceType::TransactionalId => c::RESOURCE_TRANSACTIONAL_ID,
    }
}

fn operation(op: AclOperation) -> i8 {
    match op {
        AclOperation::All => c::OP_ALL,
        AclOperation::Read => c::OP_READ,
        AclOperation::Write => c::OP_WRITE,
        AclOperation::Create => c::OP_CREATE,
        AclOperation::Delete => c::OP_DELETE,
        AclOperation::Alter => c::OP_ALTER,
        AclOperation::Describe => c::OP_DESCRIBE,
        AclOperation::ClusterAction => c::OP_CLUSTER_ACTION,
        AclOperation::DescribeConfigs => c::OP_DESCRIBE_CONFIGS,
        AclOperation::AlterConfigs => c::OP_ALTER_CONFIGS,
        AclOperation::IdempotentWrite => c::OP_IDEMPOTENT_WRITE,
    }
}

/// One binding per (rule, operation). The cluster resource is always `kafka-cluster`, literal
/// (Kafka has no other cluster name, so a prefix would mean the same thing).
pub fn rule_bindings(principal: &str, rule: &AclRule) -> Vec<AclBinding> {
    let (name, pattern) = match rule.resource.type_ {
        AclResourceType::Cluster => (c::CLUSTER_NAME.to_string(), c::PATTERN_LITERAL),
        _ => (
            rule.resource.name.clone().unwrap_or_default(),
            match rule.resource.pattern_type {
                AclPatternType::Literal => c::PATTERN_LITERAL,
                AclPatternType::Prefix => c::PATTERN_PREFIXED,
            },
        ),
    };
    let host = if rule.host.is_empty() {
        "*".to_string()
    } else {
        rule.host.clone()
    };
    let permission = match rule.type_ {
        AclRuleType::Allow => c::ALLOW,
        AclRuleType::Deny => c::DENY,
    };
    rule.operations
        .iter()
        .map(|op| AclBinding {
            resource_type: resource_type(rule.resource.type_),
            resource_name: name.clone(),
            pattern_type: pattern,
            principal: principal.to_string(),
            host: host.clone(),
            operation: operation(*op),
            permission_type: permission,
        })
        .collect()
}

/// Every binding the spec asks for (none without `spec.authorization`), deduplicated.
pub fn desired_bindings(
    principal: &str,
    authorization: Option<&UserAuthorization>,
) -> BTreeSet<AclBinding> {
    authorization
        .map(|a| {
            a.acls
                .iter()
                .flat_map(|rule| rule_bindings(principal, rule))
                .collect()
        })
        .unwrap_or_default()
}

/// What to create and what to delete so the brokers hold exactly `desired`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AclDiff {
    pub create: Vec<AclBinding>,
    pub delete: Vec<AclBinding>,
}

impl AclDiff {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.delete.is_empty()
    }

    /// The diff in two phases: first what only narrows access (new DENY bindings, removed ALLOW
    /// bindings), then what widens it. Applied in this order, access at every moment is within
    /// both the old and the new rules.
    pub fn narrowing_first(&self) -> (AclDiff, AclDiff) {
        let is_deny = |b: &&AclBinding| b.permission_type == c::DENY;
        let is_allow = |b: &&AclBinding| b.permission_type != c::DENY;
        (
            AclDiff {
                create: self.create.iter().filter(is_deny).cloned().collect(),
                delete: self.delete.iter().filter(is_allow).cloned().collect(),
            },
            AclDiff {
                create: self.create.iter().filter(is_allow).cloned().collect(),
                delete: self.delete.iter().filter(is_deny).cloned().collect(),
            },
        )
    }
}

/// Exact diff: `current` bindings not desired are deleted, desired ones missing are created.
pub fn diff(desired: &BTreeSet<AclBinding>, current: &[AclBinding]) -> AclDiff {
    let current: BTreeSet<&AclBinding> = current.iter().collect();
    AclDiff {
        create: desired
            .iter()
            .filter(|b| !current.contains(b))
            .cloned()
            .collect(),
        delete: current
            .iter()
            .filter(|b| !desired.contains(**b))
            .map(|b| (*b).clone())
            .collect(),
    }
}

/// `ALLOW READ TOPIC:orders (literal) from *`, for events and logs.
pub fn describe(b: &AclBinding) -> String {
    let permission = match b.permission_type {
        c::ALLOW => "ALLOW",
        c::DENY => "DENY",
        _ => "?",
    };
    let op = match b.operation {
        c::OP_ALL => "ALL",
        c::OP_READ => "READ",
        c::OP_WRITE => "WRITE",
        c::OP_CREATE => "CREATE",
        c::OP_DELETE => "DELETE",
        c::OP_ALTER => "ALTER",
        c::OP_DESCRIBE => "DESCRIBE",
        c::OP_CLUSTER_ACTION => "CLUSTER_ACTION",
        c::OP_DESCRIBE_CONFIGS => "DESCRIBE_CONFIGS",
        c::OP_ALTER_CONFIGS => "ALTER_CONFIGS",
        c::OP_IDEMPOTENT_WRITE => "IDEMPOTENT_WRITE",
        _ => "?",
    };
    let resource = match b.resource_type {
        c::RESOURCE_TOPIC => "TOPIC",
        c::RESOURCE_GROUP => "GROUP",
        c::RESOURCE_CLUSTER => "CLUSTER",
        c::RESOURCE_TRANSACTIONAL_ID => "TRANSACTIONAL_ID",
        _ => "?",
    };
    let pattern = match b.pattern_type {
        c::PATTERN_LITERAL => "literal",
        c::PATTERN_PREFIXED => "prefixed",
        _ => "?",
    };
    format!(
        "{permission} {op} {resource}:{} ({pattern}) from {}",
        b.resource_name, b.host
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authorization(yaml: &str) -> UserAuthorization {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn binding(rt: i8, name: &str, pt: i8, host: &str, op: i8, perm: i8) -> AclBinding {
        AclBinding {
            resource_type: rt,
            resource_name: name.into(),
            pattern_type: pt,
            principal: "User:alice".into(),
            host: host.into(),
            operation: op,
            permission_type: perm,
        }
    }

    #[test]
    fn rules_map_to_kafka_codes() {
        let a = authorization(
            r#"
type: simple
acls:
  - resource: {type: topic, name: orders}
    operations: [Read, Describe]
  - resource: {type: group, name: orders-, patternType: prefix}
    operations: [Read]
  - resource: {type: topic, name: orders}
    operations: [Write]
    type: deny
    host: 10.0.0.1
  - resource: {type: cluster}
    operations: [IdempotentWrite, DescribeConfigs]
  - resource: {type: transactionalId, name: tx, patternType: literal}
    operations: [All, Alter, AlterConfigs, ClusterAction, Create, Delete]
"#,
        );
        let got = desired_bindings("User:alice", Some(&a));
        let lit = c::PATTERN_LITERAL;
        let want: BTreeSet<AclBinding> = [
            binding(2, "orders", lit, "*", 3, 3),
            binding(2, "orders", lit, "*", 8, 3),
            binding(3, "orders-", 4, "*", 3, 3),
            binding(2, "orders", lit, "10.0.0.1", 4, 2),
            binding(4, "kafka-cluster", lit, "*", 12, 3),
            binding(4, "kafka-cluster", lit, "*", 10, 3),
            binding(5, "tx", lit, "*", 2, 3),
            binding(5, "tx", lit, "*", 7, 3),
            binding(5, "tx", lit, "*", 11, 3),
            binding(5, "tx", lit, "*", 9, 3),
            binding(5, "tx", lit, "*", 5, 3),
            binding(5, "tx", lit, "*", 6, 3),
        ]
        .into();
        assert_eq!(got, want);
    }

    #[test]
    fn duplicate_rules_collapse_and_no_authorization_means_none() {
        let a = authorization(
            "{type: simple, acls: [{resource: {type: topic, name: t}, operations: [Read, Read]}, \
             {resource: {type: topic, name: t}, operations: [Read]}]}",
        );
        assert_eq!(desired_bindings("User:alice", Some(&a)).len(), 1);
        assert!(desired_bindings("User:alice", None).is_empty());
        let empty = authorization("{type: simple}");
        assert!(desired_bindings("User:alice", Some(&empty)).is_empty());
    }

    #[test]
    fn diff_creates_missing_and_deletes_extra_exactly() {
        let keep = binding(2, "orders", 3, "*", 3, 3);
        let add = binding(3, "g-", 4, "*", 3, 3);
        // Same as `keep` except the permission: a different binding, so it must go.
        let extra = binding(2, "orders", 3, "*", 3, 2);
        let desired: BTreeSet<AclBinding> = [keep.clone(), add.clone()].into();
        let d = diff(&desired, &[keep.clone(), extra.clone()]);
        assert_eq!(
            d,
            AclDiff {
                create: vec![add],
                delete: vec![extra]
            }
        );
        assert!(diff(&desired, &desired.iter().cloned().collect::<Vec<_>>()).is_empty());
        let all_gone = diff(&BTreeSet::new(), std::slice::from_ref(&keep));
        assert_eq!(all_gone.delete, vec![keep]);
        assert!(all_gone.create.is_empty());
    }

    #[test]
    fn narrowing_changes_come_first() {
        let new_deny = binding(2, "t", 3, "*", 4, 2);
        let new_allow = binding(2, "t", 3, "*", 3, 3);
        let old_deny = binding(2, "u", 3, "*", 4, 2);
        let old_allow = binding(2, "u", 3, "*", 3, 3);
        let d = AclDiff {
            create: vec![new_deny.clone(), new_allow.clone()],
            delete: vec![old_deny.clone(), old_allow.clone()],
        };
        let (narrowing, widening) = d.narrowing_first();
        assert_eq!(narrowing.create, vec![new_deny]);
        assert_eq!(narrowing.delete, vec![old_allow]);
        assert_eq!(widening.create, vec![new_allow]);
        assert_eq!(widening.delete, vec![old_deny]);
    }

    #[test]
    fn bindings_describe_readably() {
        assert_eq!(
            describe(&binding(3, "orders-", 4, "*", 3, 2)),
            "DENY READ GROUP:orders- (prefixed) from *"
        );
    }
}
