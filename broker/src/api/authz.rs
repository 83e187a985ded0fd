//! Authorization as handlers use it: the request's principal and host checked against the ACLs
//! in the metadata image by `auth::authorizer`. With `authorizer.class.name` empty every check
//! passes and no lock is taken. Also Kafka's "authorized operations" bit sets for Metadata,
//! DescribeCluster, DescribeGroups and DescribeTopicPartitions.

use crate::auth::acl::{AclOperation, ResourceType};
use crate::auth::acl_authorizer::AclAuthorizer;
use crate::auth::authorizer::{host_of, Resource};
use crate::protocol::context::RequestContext;

/// Operations Kafka reports for a topic, cluster and group (`AclEntry.supportedOperations`).
const TOPIC_OPS: &[AclOperation] = &[
    AclOperation::Read,
    AclOperation::Write,
    AclOperation::Create,
    AclOperation::Delete,
    AclOperation::Alter,
    AclOperation::Describe,
    AclOperation::DescribeConfigs,
    AclOperation::AlterConfigs,
];
const CLUSTER_OPS: &[AclOperation] = &[
    AclOperation::Create,
    AclOperation::ClusterAction,
    AclOperation::DescribeConfigs,
    AclOperation::AlterConfigs,
    AclOperation::IdempotentWrite,
    AclOperation::Alter,
    AclOperation::Describe,
];
const GROUP_OPS: &[AclOperation] = &[
    AclOperation::Read,
    AclOperation::Describe,
    AclOperation::Delete,
];

/// The "not requested" value of authorized-operations fields.
pub const OPS_NOT_REQUESTED: i32 = i32::MIN;

/// One request's view of the authorizer.
pub struct Authz<'a> {
    authorizer: &'a AclAuthorizer,
    principal: &'a str,
    host: &'a str,
}

impl<'a> Authz<'a> {
    pub fn new(authorizer: &'a AclAuthorizer, ctx: &'a RequestContext) -> Authz<'a> {
        crate::quota::note_identity(ctx);
        Authz {
            authorizer,
            principal: &ctx.principal,
            host: host_of(&ctx.client_host),
        }
    }

    pub fn enabled(&self) -> bool {
        self.authorizer.enabled()
    }

    pub fn allowed(&self, op: AclOperation, resource: Resource<'_>) -> bool {
        let ok = self
            .authorizer
            .allowed(self.principal, self.host, op, resource);
        if !ok {
            tracing::debug!(principal = self.principal, host = self.host, ?op, kind = ?resource.kind, name = resource.name, "authorization denied");
        }
        ok
    }

    pub fn topic(&self, op: AclOperation, name: &str) -> bool {
        self.allowed(op, Resource::topic(name))
    }

    pub fn group(&self, op: AclOperation, name: &str) -> bool {
        self.allowed(op, Resource::group(name))
    }

    pub fn cluster(&self, op: AclOperation) -> bool {
        self.allowed(op, Resource::cluster())
    }

    /// May the principal do `op` on at least one resource of `kind` (Kafka's
    /// `authorizeByResourceType`)?
    pub fn any_of(&self, op: AclOperation, kind: ResourceType) -> bool {
        self.authorizer
            .allowed_on_any(self.principal, self.host, op, kind)
    }

    fn bits(&self, ops: &[AclOperation], resource: Resource<'_>) -> i32 {
        ops.iter()
            .filter(|op| self.allowed(**op, resource))
            .fold(0, |acc, op| acc | (1 << op.code()))
    }

    pub fn topic_operations(&self, name: &str) -> i32 {
        self.bits(TOPIC_OPS, Resource::topic(name))
    }

    pub fn cluster_operations(&self) -> i32 {
        self.bits(CLUSTER_OPS, Resource::cluster())
    }

    /// The group's authorized-operation bits when the request asked for them.
    pub fn group_operations(&self, requested: bool, name: &str) -> i32 {
        if requested {
            self.bits(GROUP_OPS, Resource::group(name))
        } else {
            OPS_NOT_REQUESTED
        }
    }
}
