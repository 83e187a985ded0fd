//! ACL bindings and binding filters with Kafka's wire codes and matching rules
//! (`org.apache.kafka.common.acl` and `org.apache.kafka.common.resource`).
//!
//! A binding is what CreateAcls stores: resource pattern (type, name, LITERAL or PREFIXED) plus
//! an entry (principal, host, operation, ALLOW/DENY). A filter is what DescribeAcls and DeleteAcls
//! send: every field may be a wildcard (`ANY`, null), and the pattern type `MATCH` selects the
//! bindings that would apply to one concrete resource name (literal, `*` and prefixes).

use serde::{Deserialize, Serialize};

use crate::protocol::errors::ErrorCode;

/// The only name a CLUSTER resource may have.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// The wildcard resource name and host.
pub const WILDCARD: &str = "*";

macro_rules! code_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $code:literal => $text:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant,)*
        }

        impl $name {
            /// The value for a wire code; None for UNKNOWN and out-of-range codes.
            pub fn from_code(code: i8) -> Option<Self> {
                match code {
                    $($code => Some($name::$variant),)*
                    _ => None,
                }
            }

            pub fn code(self) -> i8 {
                match self {
                    $($name::$variant => $code,)*
                }
            }

            /// Kafka's constant name, e.g. `TRANSACTIONAL_ID`.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }
    };
}

code_enum!(
    /// `ResourceType`; `Any` is only valid in filters.
    ResourceType {
        Any = 1 => "ANY",
        Topic = 2 => "TOPIC",
        Group = 3 => "GROUP",
        Cluster = 4 => "CLUSTER",
        TransactionalId = 5 => "TRANSACTIONAL_ID",
        DelegationToken = 6 => "DELEGATION_TOKEN",
        User = 7 => "USER",
    }
);

code_enum!(
    /// `PatternType`; `Any` and `Match` are only valid in filters.
    PatternType {
        Any = 1 => "ANY",
        Match = 2 => "MATCH",
        Literal = 3 => "LITERAL",
        Prefixed = 4 => "PREFIXED",
    }
);

code_enum!(
    /// `AclOperation`; `Any` is only valid in filters.
    AclOperation {
        Any = 1 => "ANY",
        All = 2 => "ALL",
        Read = 3 => "READ",
        Write = 4 => "WRITE",
        Create = 5 => "CREATE",
        Delete = 6 => "DELETE",
        Alter = 7 => "ALTER",
        Describe = 8 => "DESCRIBE",
        ClusterAction = 9 => "CLUSTER_ACTION",
        DescribeConfigs = 10 => "DESCRIBE_CONFIGS",
        AlterConfigs = 11 => "ALTER_CONFIGS",
        IdempotentWrite = 12 => "IDEMPOTENT_WRITE",
        CreateTokens = 13 => "CREATE_TOKENS",
        DescribeTokens = 14 => "DESCRIBE_TOKENS",
        TwoPhaseCommit = 15 => "TWO_PHASE_COMMIT",
    }
);

code_enum!(
    /// `AclPermissionType`; `Any` is only valid in filters.
    AclPermission {
        Any = 1 => "ANY",
        Deny = 2 => "DENY",
        Allow = 3 => "ALLOW",
    }
);

/// One stored ACL (Kafka's `AclBinding`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern_type: PatternType,
    pub principal: String,
    pub host: String,
    pub operation: AclOperation,
    pub permission: AclPermission,
}

/// The wire form of a binding or filter: raw codes and strings as the request carries them.
#[derive(Debug, Clone)]
pub struct RawAcl {
    pub resource_type: i8,
    pub resource_name: Option<String>,
    pub pattern_type: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i8,
    pub permission: i8,
}

/// Why a CreateAcls entry or an ACL filter is refused. The message is Kafka's and goes to the
/// client with [`AclError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error("Invalid {what} {code}")]
    InvalidCode { what: &'static str, code: i8 },
    #[error("The only valid name for the CLUSTER resource is {}", CLUSTER_NAME)]
    ClusterName,
    #[error("Invalid empty resource name")]
    EmptyResourceName,
    #[error("Could not parse principal from `{0}` (expected principalType:principalName, e.g. User:alice).")]
    Principal(String),
}

impl AclError {
    /// Kafka answers every refused binding or filter with INVALID_REQUEST.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::InvalidRequest
    }
}

fn invalid_code(what: &'static str, code: i8) -> AclError {
    AclError::InvalidCode { what, code }
}

impl AclBinding {
    /// Validates a CreateAcls entry like Kafka (`AclApis.handleCreateAcls` and
    /// `AclControlManager.validateNewAcl`).
    pub fn from_raw(raw: RawAcl) -> Result<AclBinding, AclError> {
        let resource_type = ResourceType::from_code(raw.resource_type)
            .filter(|t| *t != ResourceType::Any)
            .ok_or_else(|| invalid_code("resourceType", raw.resource_type))?;
        let pattern_type = PatternType::from_code(raw.pattern_type)
            .filter(|p| matches!(p, PatternType::Literal | PatternType::Prefixed))
            .ok_or_else(|| invalid_code("patternType", raw.pattern_type))?;
        let operation = AclOperation::from_code(raw.operation)
            .filter(|o| *o != AclOperation::Any)
            .ok_or_else(|| invalid_code("operation", raw.operation))?;
        let permission = AclPermission::from_code(raw.permission)
            .filter(|p| *p != AclPermission::Any)
            .ok_or_else(|| invalid_code("permissionType", raw.permission))?;
        let resource_name = raw.resource_name.unwrap_or_default();
        if resource_type == ResourceType::Cluster && resource_name != CLUSTER_NAME {
            return Err(AclError::ClusterName);
        }
        if resource_name.is_empty() {
            return Err(AclError::EmptyResourceName);
        }
        let principal = raw.principal.unwrap_or_default();
        validate_principal(&principal)?;
        Ok(AclBinding {
            resource_type,
            resource_name,
            pattern_type,
            principal,
            host: raw.host.unwrap_or_else(|| WILDCARD.to_string()),
            operation,
            permission,
        })
    }
}

/// `Type:name` with a non-empty type, as `SecurityUtils.parseKafkaPrincipal` requires.
pub fn validate_principal(principal: &str) -> Result<(), AclError> {
    match principal.split_once(':') {
        Some((kind, _)) if !kind.is_empty() => Ok(()),
        _ => Err(AclError::Principal(principal.into())),
    }
}

/// A DescribeAcls/DeleteAcls filter (Kafka's `AclBindingFilter`); None fields match anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: ResourceType,
    pub resource_name: Option<String>,
    pub pattern_type: PatternType,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: AclOperation,
    pub permission: AclPermission,
}

impl AclFilter {
    /// A filter matching every binding.
    pub fn any() -> AclFilter {
        AclFilter {
            resource_type: ResourceType::Any,
            resource_name: None,
            pattern_type: PatternType::Any,
            principal: None,
            host: None,
            operation: AclOperation::Any,
            permission: AclPermission::Any,
        }
    }

    /// Parses wire codes; UNKNOWN or out-of-range codes are refused (INVALID_REQUEST).
    pub fn from_raw(raw: RawAcl) -> Result<AclFilter, AclError> {
        Ok(AclFilter {
            resource_type: ResourceType::from_code(raw.resource_type)
                .ok_or_else(|| invalid_code("resource type filter", raw.resource_type))?,
            resource_name: raw.resource_name,
            pattern_type: PatternType::from_code(raw.pattern_type)
                .ok_or_else(|| invalid_code("pattern type filter", raw.pattern_type))?,
            principal: raw.principal,
            host: raw.host,
            operation: AclOperation::from_code(raw.operation)
                .ok_or_else(|| invalid_code("operation filter", raw.operation))?,
            permission: AclPermission::from_code(raw.permission)
                .ok_or_else(|| invalid_code("permission type filter", raw.permission))?,
        })
    }

    /// Kafka's `ResourcePatternFilter.matches` and `AccessControlEntryFilter.matches`.
    pub fn matches(&self, b: &AclBinding) -> bool {
        self.matches_pattern(b) && self.matches_entry(b)
    }

    fn matches_pattern(&self, b: &AclBinding) -> bool {
        if self.resource_type != ResourceType::Any && self.resource_type != b.resource_type {
            return false;
        }
        if !matches!(self.pattern_type, PatternType::Any | PatternType::Match)
            && self.pattern_type != b.pattern_type
        {
            return false;
        }
        let Some(name) = &self.resource_name else {
            return true;
        };
        if self.pattern_type == PatternType::Any || self.pattern_type == b.pattern_type {
            return *name == b.resource_name;
        }
        // MATCH: the bindings that apply to the resource called `name`.
        match b.pattern_type {
            PatternType::Literal => *name == b.resource_name || b.resource_name == WILDCARD,
            PatternType::Prefixed => name.starts_with(&b.resource_name),
            PatternType::Any | PatternType::Match => false,
        }
    }

    fn matches_entry(&self, b: &AclBinding) -> bool {
        self.principal.as_ref().is_none_or(|p| *p == b.principal)
            && self.host.as_ref().is_none_or(|h| *h == b.host)
            && (self.operation == AclOperation::Any || self.operation == b.operation)
            && (self.permission == AclPermission::Any || self.permission == b.permission)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(rt: ResourceType, name: &str, pt: PatternType) -> AclBinding {
        AclBinding {
            resource_type: rt,
            resource_name: name.into(),
            pattern_type: pt,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: AclOperation::Read,
            permission: AclPermission::Allow,
        }
    }

    fn raw(rt: i8, name: Option<&str>, pt: i8, op: i8, perm: i8) -> RawAcl {
        RawAcl {
            resource_type: rt,
            resource_name: name.map(str::to_string),
            pattern_type: pt,
            principal: Some("User:alice".into()),
            host: Some("*".into()),
            operation: op,
            permission: perm,
        }
    }

    #[test]
    fn literal_prefixed_and_match_filters() {
        let lit = binding(ResourceType::Topic, "orders", PatternType::Literal);
        let star = binding(ResourceType::Topic, "*", PatternType::Literal);
        let pre = binding(ResourceType::Topic, "ord", PatternType::Prefixed);
        let group = binding(ResourceType::Group, "orders", PatternType::Literal);
        let all = [&lit, &star, &pre, &group];
        let hits = |f: &AclFilter| all.iter().filter(|b| f.matches(b)).count();

        assert_eq!(hits(&AclFilter::any()), 4);

        let mut f = AclFilter::any();
        f.resource_type = ResourceType::Topic;
        f.resource_name = Some("orders".into());
        f.pattern_type = PatternType::Match;
        // Literal "orders", the "*" wildcard and the "ord" prefix apply; the group does not.
        assert!(f.matches(&lit) && f.matches(&star) && f.matches(&pre) && !f.matches(&group));

        f.resource_name = Some("payments".into());
        assert!(!f.matches(&lit) && f.matches(&star) && !f.matches(&pre));

        // ANY pattern type with a name is an exact name match on any pattern type.
        f.pattern_type = PatternType::Any;
        f.resource_name = Some("ord".into());
        assert!(f.matches(&pre) && !f.matches(&lit) && !f.matches(&star));

        // A concrete pattern type matches only that type, by exact name.
        f.pattern_type = PatternType::Literal;
        f.resource_name = Some("ord".into());
        assert!(!f.matches(&pre));
        f.pattern_type = PatternType::Prefixed;
        assert!(f.matches(&pre));
        f.resource_name = Some("orders".into());
        assert!(!f.matches(&pre));
    }

    #[test]
    fn entry_filters() {
        let mut b = binding(ResourceType::Topic, "t", PatternType::Literal);
        b.host = "10.0.0.1".into();
        b.permission = AclPermission::Deny;
        let mut f = AclFilter::any();
        f.principal = Some("User:bob".into());
        assert!(!f.matches(&b));
        f.principal = Some("User:alice".into());
        assert!(f.matches(&b));
        f.host = Some("*".into());
        assert!(
            !f.matches(&b),
            "host filter is exact, '*' is not a wildcard in filters"
        );
        f.host = Some("10.0.0.1".into());
        assert!(f.matches(&b));
        f.operation = AclOperation::Write;
        assert!(!f.matches(&b));
        f.operation = AclOperation::Read;
        f.permission = AclPermission::Allow;
        assert!(!f.matches(&b));
        f.permission = AclPermission::Deny;
        assert!(f.matches(&b));
    }

    #[test]
    fn binding_validation() {
        assert!(AclBinding::from_raw(raw(2, Some("t"), 3, 3, 3)).is_ok());
        let err = |r| AclBinding::from_raw(r).unwrap_err().to_string();
        assert_eq!(err(raw(99, Some("t"), 3, 3, 3)), "Invalid resourceType 99");
        assert_eq!(
            err(raw(4, Some("c"), 3, 3, 3)),
            "The only valid name for the CLUSTER resource is kafka-cluster"
        );
        assert!(err(raw(0, Some("t"), 3, 3, 3)).contains("resourceType"));
        assert!(err(raw(1, Some("t"), 3, 3, 3)).contains("resourceType"));
        assert!(err(raw(99, Some("t"), 3, 3, 3)).contains("resourceType"));
        assert!(err(raw(2, Some("t"), 2, 3, 3)).contains("patternType"));
        assert!(err(raw(2, Some("t"), 1, 3, 3)).contains("patternType"));
        assert!(err(raw(2, Some("t"), 3, 1, 3)).contains("operation"));
        assert!(err(raw(2, Some("t"), 3, -7, 3)).contains("operation"));
        assert!(err(raw(2, Some("t"), 3, 3, 1)).contains("permissionType"));
        assert!(err(raw(2, Some(""), 3, 3, 3)).contains("empty resource name"));
        assert!(err(raw(4, Some("my-cluster"), 3, 3, 3)).contains("kafka-cluster"));
        assert!(AclBinding::from_raw(raw(4, Some("kafka-cluster"), 3, 9, 3)).is_ok());
        let mut r = raw(2, Some("t"), 3, 3, 3);
        r.principal = Some("alice".into());
        assert!(err(r.clone()).contains("principal"));
        r.principal = Some(":alice".into());
        assert!(err(r).contains("principal"));
    }

    #[test]
    fn filter_validation() {
        assert!(AclFilter::from_raw(raw(1, None, 1, 1, 1)).is_ok());
        assert!(AclFilter::from_raw(raw(0, None, 1, 1, 1)).is_err());
        assert!(AclFilter::from_raw(raw(1, None, 0, 1, 1)).is_err());
        assert!(AclFilter::from_raw(raw(1, None, 1, 0, 1)).is_err());
        assert!(AclFilter::from_raw(raw(1, None, 1, 1, 0)).is_err());
        assert!(AclFilter::from_raw(raw(1, None, 1, 1, 42)).is_err());
    }
}
