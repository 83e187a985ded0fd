//! The authorizer as a broker service: the configured rules (`authorizer.class.name`,
//! `super.users`, `allow.everyone.if.no.acl.found`) built once at start-up, over the ACLs of
//! the current metadata image. Handlers reach it through `api::authz::Authz`, which adds the
//! request's principal and host; the decision itself is `authorizer`'s pure functions.

use std::sync::Arc;

use super::acl::{AclOperation, ResourceType};
use super::authorizer::{Authorizer, Resource};
use crate::metadata::MetadataCache;

/// See the module documentation.
pub struct AclAuthorizer {
    /// `None` when no authorizer is configured: every check passes without reading the image.
    rules: Option<Authorizer>,
    image: Arc<MetadataCache>,
}

impl AclAuthorizer {
    pub fn new(rules: Option<Authorizer>, image: Arc<MetadataCache>) -> AclAuthorizer {
        AclAuthorizer { rules, image }
    }

    /// Whether an authorizer is configured.
    pub fn enabled(&self) -> bool {
        self.rules.is_some()
    }

    /// May `principal` connecting from `host` do `op` on `resource`?
    pub fn allowed(
        &self,
        principal: &str,
        host: &str,
        op: AclOperation,
        resource: Resource<'_>,
    ) -> bool {
        let Some(rules) = &self.rules else {
            return true;
        };
        if rules.is_super_user(principal) {
            return true;
        }
        let image = self.image.snapshot();
        rules.authorize(image.acls.values(), principal, host, op, resource)
    }

    /// May `principal` do `op` on at least one resource of `kind` (Kafka's
    /// `authorizeByResourceType`)?
    pub fn allowed_on_any(
        &self,
        principal: &str,
        host: &str,
        op: AclOperation,
        kind: ResourceType,
    ) -> bool {
        let Some(rules) = &self.rules else {
            return true;
        };
        let image = self.image.snapshot();
        rules.authorize_any(image.acls.values(), principal, host, op, kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::acl::{AclBinding, AclPermission, PatternType};
    use crate::metadata::MetadataImage;

    fn with_acls(rules: Option<Authorizer>, acls: Vec<AclBinding>) -> AclAuthorizer {
        let mut image = MetadataImage::default();
        for a in acls {
            image.acls.insert(uuid::Uuid::new_v4(), a);
        }
        AclAuthorizer::new(rules, Arc::new(MetadataCache::new(image)))
    }

    fn allow_read(principal: &str, topic: &str) -> AclBinding {
        AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: topic.into(),
            pattern_type: PatternType::Literal,
            principal: principal.into(),
            host: "*".into(),
            operation: AclOperation::Read,
            permission: AclPermission::Allow,
        }
    }

    #[test]
    fn decides_over_the_images_acls_or_allows_everything_when_not_configured() {
        let rules = Authorizer {
            super_users: vec!["User:admin".into()],
            allow_if_no_acl: false,
        };
        let acls = vec![allow_read("User:alice", "orders")];
        let on = with_acls(Some(rules), acls.clone());
        assert!(on.enabled());
        let read = |who: &str, topic: &str| {
            on.allowed(who, "10.0.0.1", AclOperation::Read, Resource::topic(topic))
        };
        assert!(read("User:alice", "orders"));
        assert!(!read("User:bob", "orders"));
        assert!(!read("User:alice", "payments"));
        assert!(read("User:admin", "payments"), "super user");
        assert!(on.allowed_on_any(
            "User:alice",
            "10.0.0.1",
            AclOperation::Read,
            ResourceType::Topic
        ));
        assert!(!on.allowed_on_any(
            "User:bob",
            "10.0.0.1",
            AclOperation::Read,
            ResourceType::Topic
        ));

        let off = with_acls(None, acls);
        assert!(!off.enabled());
        assert!(off.allowed(
            "User:bob",
            "10.0.0.1",
            AclOperation::Write,
            Resource::topic("orders")
        ));
    }
}
