//! The ACL authorization decision, as Kafka's `StandardAuthorizer` makes it; pure functions over
//! the stored bindings so the rules are tested without a broker.
//!
//! A request by `principal` from `host` to perform `operation` on a resource is allowed when:
//! the principal is a super user; or some binding DENIES nothing and ALLOWS it; or no binding at
//! all names the resource and `allow.everyone.if.no.acl.found` is set. A binding applies when its
//! pattern matches the resource (LITERAL equal name or the `*` wildcard, PREFIXED name prefix),
//! its principal is the principal or `User:*`, and its host is the client's IP or `*`. A DENY
//! applies only to its exact operation (or ALL); an ALLOW also implies DESCRIBE for READ, WRITE,
//! DELETE and ALTER, and DESCRIBE_CONFIGS for ALTER_CONFIGS. DENY wins over ALLOW.

use super::acl::{AclBinding, AclOperation, AclPermission, PatternType, ResourceType, WILDCARD};

/// The principal wildcard: a binding for `User:*` applies to every user.
pub const WILDCARD_PRINCIPAL: &str = "User:*";

/// A concrete resource a request touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource<'a> {
    pub kind: ResourceType,
    pub name: &'a str,
}

impl<'a> Resource<'a> {
    pub fn topic(name: &'a str) -> Self {
        Resource {
            kind: ResourceType::Topic,
            name,
        }
    }
    pub fn group(name: &'a str) -> Self {
        Resource {
            kind: ResourceType::Group,
            name,
        }
    }
    pub fn transactional_id(name: &'a str) -> Self {
        Resource {
            kind: ResourceType::TransactionalId,
            name,
        }
    }
    pub fn cluster() -> Resource<'static> {
        Resource {
            kind: ResourceType::Cluster,
            name: super::acl::CLUSTER_NAME,
        }
    }
}

/// The static settings of the authorizer (`super.users`, `allow.everyone.if.no.acl.found`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authorizer {
    pub super_users: Vec<String>,
    pub allow_if_no_acl: bool,
}

/// Parses `super.users`: principals separated by semicolons, blanks ignored.
pub fn parse_super_users(value: &str) -> Vec<String> {
    value
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The client host as bindings name it: `RequestContext.client_host` is `/1.2.3.4`.
pub fn host_of(client_host: &str) -> &str {
    client_host.strip_prefix('/').unwrap_or(client_host)
}

fn pattern_matches(b: &AclBinding, r: &Resource<'_>) -> bool {
    b.resource_type == r.kind
        && match b.pattern_type {
            PatternType::Literal => b.resource_name == r.name || b.resource_name == WILDCARD,
            PatternType::Prefixed => r.name.starts_with(b.resource_name.as_str()),
            PatternType::Any | PatternType::Match => false,
        }
}

fn principal_matches(b: &AclBinding, principal: &str) -> bool {
    b.principal == principal
        || (b.principal == WILDCARD_PRINCIPAL && principal.starts_with("User:"))
}

fn host_matches(b: &AclBinding, host: &str) -> bool {
    b.host == WILDCARD || b.host == host
}

/// Whether an ALLOW binding for `granted` permits `wanted` (Kafka's implication rules).
pub fn allow_implies(granted: AclOperation, wanted: AclOperation) -> bool {
    use AclOperation::*;
    if granted == All || granted == wanted {
        return true;
    }
    match wanted {
        Describe => matches!(granted, Read | Write | Delete | Alter),
        DescribeConfigs => granted == AlterConfigs,
        _ => false,
    }
}

/// Whether a DENY binding for `denied` forbids `wanted`: only the same operation or ALL.
fn deny_applies(denied: AclOperation, wanted: AclOperation) -> bool {
    denied == AclOperation::All || denied == wanted
}

impl Authorizer {
    pub fn is_super_user(&self, principal: &str) -> bool {
        self.super_users.iter().any(|s| s == principal)
    }

    /// The decision for one operation on one resource.
    pub fn authorize<'a>(
        &self,
        acls: impl IntoIterator<Item = &'a AclBinding>,
        principal: &str,
        host: &str,
        operation: AclOperation,
        resource: Resource<'_>,
    ) -> bool {
        if self.is_super_user(principal) {
            return true;
        }
        let mut resource_has_acls = false;
        let mut allowed = false;
        for b in acls {
            if !pattern_matches(b, &resource) {
                continue;
            }
            resource_has_acls = true;
            if !principal_matches(b, principal) || !host_matches(b, host) {
                continue;
            }
            match b.permission {
                AclPermission::Deny if deny_applies(b.operation, operation) => return false,
                AclPermission::Allow if allow_implies(b.operation, operation) => allowed = true,
                _ => {}
            }
        }
        allowed || (!resource_has_acls && self.allow_if_no_acl)
    }

    /// Kafka's `authorizeByResourceType`: may the principal perform `operation` on at least one
    /// resource of `kind`? True when some ALLOW binding (literal or prefixed) grants it and is not
    /// covered by a DENY of the same kind (a literal or prefix deny whose pattern covers it, or
    /// the `*` wildcard deny); used for idempotent producers (WRITE on any topic).
    pub fn authorize_any<'a>(
        &self,
        acls: impl IntoIterator<Item = &'a AclBinding> + Clone,
        principal: &str,
        host: &str,
        operation: AclOperation,
        kind: ResourceType,
    ) -> bool {
        if self.is_super_user(principal) {
            return true;
        }
        let applies = |b: &&AclBinding| {
            b.resource_type == kind && principal_matches(b, principal) && host_matches(b, host)
        };
        let denies: Vec<&AclBinding> = acls
            .clone()
            .into_iter()
            .filter(applies)
            .filter(|b| b.permission == AclPermission::Deny && deny_applies(b.operation, operation))
            .collect();
        if denies
            .iter()
            .any(|d| d.pattern_type == PatternType::Literal && d.resource_name == WILDCARD)
        {
            return false;
        }
        let denied = |a: &AclBinding| {
            denies
                .iter()
                .any(|d| match (d.pattern_type, a.pattern_type) {
                    (PatternType::Prefixed, _) => a.resource_name.starts_with(&d.resource_name),
                    (PatternType::Literal, PatternType::Literal) => {
                        d.resource_name == a.resource_name
                    }
                    _ => false,
                })
        };
        let mut any_of_kind = false;
        for b in acls {
            if b.resource_type == kind {
                any_of_kind = true;
            }
            if applies(&b)
                && b.permission == AclPermission::Allow
                && allow_implies(b.operation, operation)
                && !denied(b)
            {
                return true;
            }
        }
        !any_of_kind && self.allow_if_no_acl
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AclOperation::*;

    fn acl(
        kind: ResourceType,
        name: &str,
        pattern: PatternType,
        principal: &str,
        host: &str,
        op: AclOperation,
        perm: AclPermission,
    ) -> AclBinding {
        AclBinding {
            resource_type: kind,
            resource_name: name.into(),
            pattern_type: pattern,
            principal: principal.into(),
            host: host.into(),
            operation: op,
            permission: perm,
        }
    }

    fn allow_topic(name: &str, pattern: PatternType, op: AclOperation) -> AclBinding {
        acl(
            ResourceType::Topic,
            name,
            pattern,
            "User:alice",
            "*",
            op,
            AclPermission::Allow,
        )
    }

    fn strict() -> Authorizer {
        Authorizer::default()
    }

    fn can(acls: &[AclBinding], op: AclOperation, r: Resource<'_>) -> bool {
        strict().authorize(acls, "User:alice", "10.0.0.1", op, r)
    }

    #[test]
    fn nothing_is_allowed_without_acls_unless_configured() {
        assert!(!can(&[], Read, Resource::topic("t")));
        let open = Authorizer {
            allow_if_no_acl: true,
            ..Authorizer::default()
        };
        assert!(open.authorize(&[], "User:alice", "h", Read, Resource::topic("t")));
        // An ACL on the resource for someone else takes the resource out of "no ACL found".
        let other = [acl(
            ResourceType::Topic,
            "t",
            PatternType::Literal,
            "User:bob",
            "*",
            Read,
            AclPermission::Allow,
        )];
        assert!(!open.authorize(&other, "User:alice", "h", Read, Resource::topic("t")));
        assert!(open.authorize(&other, "User:alice", "h", Read, Resource::topic("u")));
    }

    #[test]
    fn super_users_bypass_everything() {
        let a = Authorizer {
            super_users: parse_super_users(" User:admin ;User:ops;;"),
            allow_if_no_acl: false,
        };
        assert_eq!(a.super_users, vec!["User:admin", "User:ops"]);
        let deny = [acl(
            ResourceType::Topic,
            "*",
            PatternType::Literal,
            "User:admin",
            "*",
            All,
            AclPermission::Deny,
        )];
        assert!(a.authorize(&deny, "User:admin", "h", Write, Resource::topic("t")));
        assert!(a.authorize(&[], "User:ops", "h", Alter, Resource::cluster()));
        assert!(!a.authorize(&[], "User:alice", "h", Alter, Resource::cluster()));
    }

    #[test]
    fn literal_prefixed_and_wildcard_patterns() {
        let lit = [allow_topic("orders", PatternType::Literal, Read)];
        assert!(can(&lit, Read, Resource::topic("orders")));
        assert!(!can(&lit, Read, Resource::topic("orders2")));
        assert!(!can(&lit, Read, Resource::topic("order")));

        let pre = [allow_topic("ord", PatternType::Prefixed, Read)];
        assert!(can(&pre, Read, Resource::topic("orders")));
        assert!(can(&pre, Read, Resource::topic("ord")));
        assert!(!can(&pre, Read, Resource::topic("or")));
        let pre = [allow_topic("orders", PatternType::Prefixed, Read)];
        assert!(!can(&pre, Read, Resource::topic("order")));
        assert!(can(&pre, Read, Resource::topic("orders-eu")));

        let star = [allow_topic("*", PatternType::Literal, Read)];
        assert!(can(&star, Read, Resource::topic("anything")));
        // A prefixed "*" is a literal prefix, not a wildcard.
        let star_prefix = [allow_topic("*", PatternType::Prefixed, Read)];
        assert!(!can(&star_prefix, Read, Resource::topic("anything")));
        // Resource types do not mix.
        assert!(!can(&star, Read, Resource::group("anything")));
    }

    #[test]
    fn deny_wins_over_allow() {
        let acls = [
            allow_topic("*", PatternType::Literal, All),
            acl(
                ResourceType::Topic,
                "pay",
                PatternType::Prefixed,
                "User:alice",
                "*",
                Write,
                AclPermission::Deny,
            ),
        ];
        assert!(!can(&acls, Write, Resource::topic("payments")));
        assert!(can(&acls, Read, Resource::topic("payments")));
        // DENY WRITE does not deny DESCRIBE (denies are exact), ALLOW ALL implies it.
        assert!(can(&acls, Describe, Resource::topic("payments")));
        assert!(can(&acls, Write, Resource::topic("orders")));
        let deny_all = [
            allow_topic("t", PatternType::Literal, Read),
            acl(
                ResourceType::Topic,
                "t",
                PatternType::Literal,
                "User:*",
                "*",
                All,
                AclPermission::Deny,
            ),
        ];
        assert!(!can(&deny_all, Read, Resource::topic("t")));
        assert!(!can(&deny_all, Describe, Resource::topic("t")));
    }

    #[test]
    fn implications_follow_kafka() {
        for granted in [Read, Write, Delete, Alter, Describe, All] {
            let acls = [allow_topic("t", PatternType::Literal, granted)];
            assert!(can(&acls, Describe, Resource::topic("t")), "{granted:?}");
        }
        for granted in [Create, DescribeConfigs, AlterConfigs, ClusterAction] {
            let acls = [allow_topic("t", PatternType::Literal, granted)];
            assert!(!can(&acls, Describe, Resource::topic("t")), "{granted:?}");
        }
        let ac = [allow_topic("t", PatternType::Literal, AlterConfigs)];
        assert!(can(&ac, DescribeConfigs, Resource::topic("t")));
        assert!(!can(&ac, Alter, Resource::topic("t")));
        let w = [allow_topic("t", PatternType::Literal, Write)];
        assert!(!can(&w, Read, Resource::topic("t")));
        let all = [allow_topic("t", PatternType::Literal, All)];
        for op in [
            Read,
            Write,
            Create,
            Delete,
            Alter,
            Describe,
            DescribeConfigs,
            AlterConfigs,
        ] {
            assert!(can(&all, op, Resource::topic("t")), "{op:?}");
        }
        // Reading does not imply writing the configs of a topic.
        let r = [allow_topic("t", PatternType::Literal, Read)];
        assert!(!can(&r, DescribeConfigs, Resource::topic("t")));
    }

    #[test]
    fn principal_and_host_filters() {
        let acls = [acl(
            ResourceType::Group,
            "g",
            PatternType::Literal,
            "User:alice",
            "10.0.0.1",
            Read,
            AclPermission::Allow,
        )];
        let a = strict();
        assert!(a.authorize(&acls, "User:alice", "10.0.0.1", Read, Resource::group("g")));
        assert!(!a.authorize(&acls, "User:alice", "10.0.0.2", Read, Resource::group("g")));
        assert!(!a.authorize(&acls, "User:bob", "10.0.0.1", Read, Resource::group("g")));
        assert_eq!(host_of("/10.0.0.1"), "10.0.0.1");
        assert_eq!(host_of("::1"), "::1");
        let any_user = [acl(
            ResourceType::Group,
            "g",
            PatternType::Literal,
            "User:*",
            "*",
            Read,
            AclPermission::Allow,
        )];
        assert!(a.authorize(&any_user, "User:bob", "h", Read, Resource::group("g")));
        assert!(a.authorize(&any_user, "User:ANONYMOUS", "h", Read, Resource::group("g")));
        assert!(!a.authorize(&any_user, "Group:x", "h", Read, Resource::group("g")));
    }

    #[test]
    fn cluster_and_transactional_ids() {
        let acls = [
            acl(
                ResourceType::Cluster,
                "kafka-cluster",
                PatternType::Literal,
                "User:alice",
                "*",
                IdempotentWrite,
                AclPermission::Allow,
            ),
            acl(
                ResourceType::TransactionalId,
                "tx-",
                PatternType::Prefixed,
                "User:alice",
                "*",
                Write,
                AclPermission::Allow,
            ),
        ];
        assert!(can(&acls, IdempotentWrite, Resource::cluster()));
        assert!(!can(&acls, Alter, Resource::cluster()));
        assert!(can(&acls, Write, Resource::transactional_id("tx-1")));
        assert!(can(&acls, Describe, Resource::transactional_id("tx-1")));
        assert!(!can(&acls, Write, Resource::transactional_id("other")));
    }

    #[test]
    fn authorize_any_for_idempotent_producers() {
        let a = strict();
        let any = |acls: &[AclBinding]| {
            a.authorize_any(acls, "User:alice", "h", Write, ResourceType::Topic)
        };
        assert!(!any(&[]));
        assert!(any(&[allow_topic("orders", PatternType::Literal, Write)]));
        assert!(any(&[allow_topic("ord", PatternType::Prefixed, All)]));
        assert!(!any(&[allow_topic("orders", PatternType::Literal, Read)]));
        let deny = |name: &str, pattern| {
            acl(
                ResourceType::Topic,
                name,
                pattern,
                "User:alice",
                "*",
                Write,
                AclPermission::Deny,
            )
        };
        // The allow is covered by a deny on the same name or a covering prefix.
        assert!(!any(&[
            allow_topic("orders", PatternType::Literal, Write),
            deny("orders", PatternType::Literal)
        ]));
        assert!(!any(&[
            allow_topic("orders", PatternType::Literal, Write),
            deny("ord", PatternType::Prefixed)
        ]));
        assert!(any(&[
            allow_topic("orders", PatternType::Literal, Write),
            deny("other", PatternType::Literal)
        ]));
        assert!(!any(&[
            allow_topic("orders", PatternType::Literal, Write),
            deny("*", PatternType::Literal)
        ]));
        let su = Authorizer {
            super_users: vec!["User:alice".into()],
            ..Authorizer::default()
        };
        assert!(su.authorize_any(&[], "User:alice", "h", Write, ResourceType::Topic));
    }
}
