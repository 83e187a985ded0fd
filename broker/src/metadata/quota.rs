//! Client quota entities, keys and DescribeClientQuotas filters, with Kafka's rules
//! (`ClientQuotaControlManager`, `ClientQuotaCache`, `QuotaConfig`).
//!
//! An entity is a user, a client id, a user + client id pair, or an IP; each part is either a
//! name or the default entity for that type. Values are doubles on the wire; byte rates must be
//! whole numbers.

use serde::{Deserialize, Serialize};

use crate::protocol::errors::ErrorCode;

pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";
pub const IP: &str = "ip";

/// One part of an entity: a concrete name or that type's default entity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EntityName {
    Default,
    Named(String),
}

impl EntityName {
    fn from_wire(name: Option<String>) -> EntityName {
        name.map_or(EntityName::Default, EntityName::Named)
    }

    /// The wire form: None is the default entity.
    pub fn as_wire(&self) -> Option<&str> {
        match self {
            EntityName::Default => None,
            EntityName::Named(n) => Some(n),
        }
    }
}

/// A quota entity. Valid combinations: user, client-id, user + client-id, ip.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QuotaEntity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<EntityName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<EntityName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<EntityName>,
}

/// Why a quota entity, value or filter is refused. The message is Kafka's, and is what the client
/// reads in the response; [`QuotaError::code`] is the error code it comes with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    #[error("Invalid empty client quota entity")]
    EmptyEntity,
    #[error("Empty {0} not supported")]
    EmptyName(String),
    #[error("Unhandled client quota entity type: {0}")]
    UnhandledEntityType(String),
    #[error("Duplicate entity type {0} in client quota entity")]
    DuplicateEntityType(String),
    #[error("Invalid quota entity combination: ip cannot be combined with user or client-id")]
    IpCombined,
    #[error("{0} is not a valid IP address.")]
    InvalidIp(String),
    #[error("Invalid configuration key {0}")]
    UnknownKey(String),
    #[error("Quota {0} must be a finite number")]
    NotFinite(String),
    #[error("Quota {0} must be greater than 0")]
    NotPositive(String),
    #[error("{0} cannot be a fractional value.")]
    Fractional(String),
    #[error("Quota {0} must be a Long value")]
    NotLong(String),
    #[error("Quota {0} must be an Int value")]
    NotInt(String),
    #[error("Unexpected empty filter component entity type")]
    EmptyFilterEntityType,
    /// An entity type Kafka does not know: UNSUPPORTED_VERSION, like Kafka.
    #[error("Custom entity type {0} not supported")]
    CustomFilterEntityType(String),
    #[error("Duplicate {0} filter component entity type")]
    DuplicateFilterEntityType(String),
    #[error("Exact match on {0} needs a name")]
    ExactMatchWithoutName(String),
    #[error("Unexpected match value for {kind} filter component with match type {match_type}")]
    UnexpectedMatchValue { kind: String, match_type: i8 },
    #[error("Unexpected match type: {0}")]
    UnknownMatchType(i8),
    #[error("Invalid entity filter component combination, IP filter component should not be used with User or ClientId filter component.")]
    IpFilterCombined,
}

impl QuotaError {
    /// The error code Kafka answers with: UNSUPPORTED_VERSION for an unknown filter entity type,
    /// INVALID_REQUEST for everything else.
    pub fn code(&self) -> ErrorCode {
        match self {
            QuotaError::CustomFilterEntityType(_) => ErrorCode::UnsupportedVersion,
            _ => ErrorCode::InvalidRequest,
        }
    }
}

/// How a quota value must look.
#[derive(Debug, Clone, Copy, PartialEq)]
enum KeyType {
    Long,
    Int,
    Double,
}

const USER_CLIENT_KEYS: &[(&str, KeyType)] = &[
    ("producer_byte_rate", KeyType::Long),
    ("consumer_byte_rate", KeyType::Long),
    ("request_percentage", KeyType::Double),
    ("controller_mutation_rate", KeyType::Double),
];
const IP_KEYS: &[(&str, KeyType)] = &[("connection_creation_rate", KeyType::Int)];

impl QuotaEntity {
    /// Builds an entity from AlterClientQuotas parts (type, name; None = default), refusing what
    /// Kafka refuses (INVALID_REQUEST).
    pub fn from_parts(parts: Vec<(String, Option<String>)>) -> Result<QuotaEntity, QuotaError> {
        if parts.is_empty() {
            return Err(QuotaError::EmptyEntity);
        }
        let mut e = QuotaEntity {
            user: None,
            client_id: None,
            ip: None,
        };
        for (kind, name) in parts {
            if name.as_deref() == Some("") {
                return Err(QuotaError::EmptyName(kind));
            }
            let slot = match kind.as_str() {
                USER => &mut e.user,
                CLIENT_ID => &mut e.client_id,
                IP => &mut e.ip,
                _ => return Err(QuotaError::UnhandledEntityType(kind)),
            };
            if slot.is_some() {
                return Err(QuotaError::DuplicateEntityType(kind));
            }
            *slot = Some(EntityName::from_wire(name));
        }
        if e.ip.is_some() && (e.user.is_some() || e.client_id.is_some()) {
            return Err(QuotaError::IpCombined);
        }
        if let Some(EntityName::Named(ip)) = &e.ip {
            if ip.parse::<std::net::IpAddr>().is_err() {
                return Err(QuotaError::InvalidIp(ip.clone()));
            }
        }
        Ok(e)
    }

    /// (entity type, name) pairs in a stable order, for responses.
    pub fn parts(&self) -> Vec<(&'static str, Option<&str>)> {
        let mut out = Vec::with_capacity(2);
        for (kind, part) in [
            (USER, &self.user),
            (CLIENT_ID, &self.client_id),
            (IP, &self.ip),
        ] {
            if let Some(p) = part {
                out.push((kind, p.as_wire()));
            }
        }
        out
    }

    /// Checks a quota key and value for this kind of entity (INVALID_REQUEST on error).
    pub fn validate_value(&self, key: &str, value: f64) -> Result<(), QuotaError> {
        let keys = if self.ip.is_some() {
            IP_KEYS
        } else {
            USER_CLIENT_KEYS
        };
        let Some((_, ty)) = keys.iter().find(|(k, _)| *k == key) else {
            return Err(QuotaError::UnknownKey(key.into()));
        };
        // Messages as Kafka 4.3 words them.
        if !value.is_finite() {
            return Err(QuotaError::NotFinite(key.into()));
        }
        if value <= 0.0 {
            return Err(QuotaError::NotPositive(key.into()));
        }
        let whole = (value - value.round()).abs() <= 1e-6;
        match ty {
            KeyType::Long | KeyType::Int if !whole => Err(QuotaError::Fractional(key.into())),
            KeyType::Long if value > i64::MAX as f64 => Err(QuotaError::NotLong(key.into())),
            KeyType::Int if value > i32::MAX as f64 => Err(QuotaError::NotInt(key.into())),
            _ => Ok(()),
        }
    }
}

/// How one DescribeClientQuotas component matches an entity part.
#[derive(Debug, Clone, PartialEq)]
pub enum QuotaMatch {
    Exact(String),
    Default,
    /// Any entity with this part, default included (as `ClientQuotaCache` does).
    AnyName,
}

impl QuotaMatch {
    fn accepts(&self, part: &Option<EntityName>) -> bool {
        match (self, part) {
            (_, None) => false,
            (QuotaMatch::AnyName, Some(_)) => true,
            (QuotaMatch::Default, Some(p)) => *p == EntityName::Default,
            (QuotaMatch::Exact(n), Some(p)) => p.as_wire() == Some(n.as_str()),
        }
    }
}

/// A parsed DescribeClientQuotas request.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaFilter {
    pub user: Option<QuotaMatch>,
    pub client_id: Option<QuotaMatch>,
    pub ip: Option<QuotaMatch>,
    pub strict: bool,
}

/// Wire match types of DescribeClientQuotas.
const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;
const MATCH_SPECIFIED: i8 = 2;

impl QuotaFilter {
    /// Parses (entity type, match type, match) components; [`QuotaError::code`] tells the error
    /// code (an unknown entity type is UNSUPPORTED_VERSION in Kafka, everything else
    /// INVALID_REQUEST).
    pub fn parse(
        components: Vec<(String, i8, Option<String>)>,
        strict: bool,
    ) -> Result<QuotaFilter, QuotaError> {
        let mut f = QuotaFilter {
            user: None,
            client_id: None,
            ip: None,
            strict,
        };
        for (kind, match_type, value) in components {
            let slot = match kind.as_str() {
                "" => return Err(QuotaError::EmptyFilterEntityType),
                USER => &mut f.user,
                CLIENT_ID => &mut f.client_id,
                IP => &mut f.ip,
                _ => return Err(QuotaError::CustomFilterEntityType(kind)),
            };
            if slot.is_some() {
                return Err(QuotaError::DuplicateFilterEntityType(kind));
            }
            let m = match (match_type, value) {
                (MATCH_EXACT, Some(v)) => QuotaMatch::Exact(v),
                (MATCH_DEFAULT, None) => QuotaMatch::Default,
                (MATCH_SPECIFIED, None) => QuotaMatch::AnyName,
                (MATCH_EXACT, None) => return Err(QuotaError::ExactMatchWithoutName(kind)),
                (MATCH_DEFAULT | MATCH_SPECIFIED, Some(_)) => {
                    return Err(QuotaError::UnexpectedMatchValue { kind, match_type })
                }
                (other, _) => return Err(QuotaError::UnknownMatchType(other)),
            };
            *slot = Some(m);
        }
        if f.ip.is_some() && (f.user.is_some() || f.client_id.is_some()) {
            return Err(QuotaError::IpFilterCombined);
        }
        Ok(f)
    }

    pub fn matches(&self, e: &QuotaEntity) -> bool {
        if self.user.is_none() && self.client_id.is_none() && self.ip.is_none() {
            return !self.strict;
        }
        if let Some(m) = &self.ip {
            return m.accepts(&e.ip);
        }
        if self.user.as_ref().is_some_and(|m| !m.accepts(&e.user))
            || self
                .client_id
                .as_ref()
                .is_some_and(|m| !m.accepts(&e.client_id))
        {
            return false;
        }
        // Strict: a two-part entity needs both parts named in the filter.
        let two_part = e.user.is_some() && e.client_id.is_some();
        !self.strict || !two_part || (self.user.is_some() && self.client_id.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(parts: &[(&str, Option<&str>)]) -> QuotaEntity {
        QuotaEntity::from_parts(
            parts
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                .collect(),
        )
        .unwrap()
    }

    fn filter(c: &[(&str, i8, Option<&str>)], strict: bool) -> QuotaFilter {
        QuotaFilter::parse(
            c.iter()
                .map(|(k, m, v)| (k.to_string(), *m, v.map(str::to_string)))
                .collect(),
            strict,
        )
        .unwrap()
    }

    #[test]
    fn entity_validation() {
        assert!(QuotaEntity::from_parts(vec![]).is_err());
        let bad = |p: &[(&str, Option<&str>)]| {
            QuotaEntity::from_parts(
                p.iter()
                    .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                    .collect(),
            )
            .unwrap_err()
            .to_string()
        };
        assert!(bad(&[("user", Some(""))]).contains("Empty user"));
        assert!(bad(&[("group", Some("g"))]).contains("Unhandled"));
        assert!(bad(&[("user", Some("a")), ("user", Some("b"))]).contains("Duplicate"));
        assert!(bad(&[("user", Some("a")), ("ip", None)]).contains("combination"));
        assert!(bad(&[("ip", Some("not-an-ip"))]).contains("not a valid IP"));
        let e = ent(&[("client-id", None), ("user", Some("alice"))]);
        assert_eq!(
            e.parts(),
            vec![("user", Some("alice")), ("client-id", None)]
        );
    }

    #[test]
    fn value_validation() {
        let u = ent(&[("user", Some("alice"))]);
        assert!(u.validate_value("producer_byte_rate", 1024.0).is_ok());
        assert!(u.validate_value("producer_byte_rate", 1024.5).is_err());
        assert!(u.validate_value("request_percentage", 12.5).is_ok());
        assert!(u
            .validate_value("bogus", 1.0)
            .unwrap_err()
            .to_string()
            .contains("Invalid configuration key"));
        assert!(u.validate_value("connection_creation_rate", 5.0).is_err());
        assert!(u.validate_value("consumer_byte_rate", f64::NAN).is_err());
        assert!(u
            .validate_value("consumer_byte_rate", f64::INFINITY)
            .is_err());
        assert!(u.validate_value("consumer_byte_rate", -1.0).is_err());
        assert!(u.validate_value("consumer_byte_rate", 1e300).is_err());
        let ip = ent(&[("ip", Some("10.0.0.1"))]);
        assert!(ip.validate_value("connection_creation_rate", 5.0).is_ok());
        assert!(ip.validate_value("producer_byte_rate", 5.0).is_err());
    }

    #[test]
    fn describe_filters_like_kafka() {
        let alice = ent(&[("user", Some("alice"))]);
        let default_user = ent(&[("user", None)]);
        let alice_app = ent(&[("user", Some("alice")), ("client-id", Some("app"))]);
        let app = ent(&[("client-id", Some("app"))]);
        let default_client = ent(&[("client-id", None)]);
        let ip = ent(&[("ip", None)]);
        let all = [
            &alice,
            &default_user,
            &alice_app,
            &app,
            &default_client,
            &ip,
        ];
        let hits = |f: &QuotaFilter| -> Vec<usize> {
            (0..all.len()).filter(|i| f.matches(all[*i])).collect()
        };

        assert_eq!(hits(&filter(&[], false)), vec![0, 1, 2, 3, 4, 5]);
        assert!(hits(&filter(&[], true)).is_empty());
        // Non-strict exact user: the user entity and every pair with that user.
        assert_eq!(
            hits(&filter(&[("user", 0, Some("alice"))], false)),
            vec![0, 2]
        );
        // Strict: only the one-part entity.
        assert_eq!(hits(&filter(&[("user", 0, Some("alice"))], true)), vec![0]);
        assert_eq!(hits(&filter(&[("user", 1, None)], false)), vec![1]);
        // "Any specified" includes the default entity.
        assert_eq!(hits(&filter(&[("user", 2, None)], true)), vec![0, 1]);
        assert_eq!(hits(&filter(&[("user", 2, None)], false)), vec![0, 1, 2]);
        assert_eq!(
            hits(&filter(&[("client-id", 2, None)], false)),
            vec![2, 3, 4]
        );
        assert_eq!(
            hits(&filter(
                &[("user", 0, Some("alice")), ("client-id", 0, Some("app"))],
                true
            )),
            vec![2]
        );
        assert_eq!(hits(&filter(&[("ip", 1, None)], true)), vec![5]);
    }

    #[test]
    fn filter_validation() {
        let parse = |c: Vec<(&str, i8, Option<&str>)>| {
            QuotaFilter::parse(
                c.into_iter()
                    .map(|(k, m, v)| (k.to_string(), m, v.map(str::to_string)))
                    .collect(),
                false,
            )
        };
        let empty = parse(vec![("", 2, None)]).unwrap_err();
        assert_eq!(empty.code(), ErrorCode::InvalidRequest);
        assert_eq!(
            empty.to_string(),
            "Unexpected empty filter component entity type"
        );
        let custom = parse(vec![("group", 2, None)]).unwrap_err();
        assert_eq!(custom.code(), ErrorCode::UnsupportedVersion);
        assert_eq!(custom.to_string(), "Custom entity type group not supported");
        assert_eq!(
            parse(vec![("user", 1, Some("x"))]).unwrap_err().to_string(),
            "Unexpected match value for user filter component with match type 1"
        );
        assert!(parse(vec![("user", 2, None), ("user", 1, None)]).is_err());
        assert!(parse(vec![("user", 0, None)]).is_err());
        assert!(parse(vec![("user", 1, Some("x"))]).is_err());
        assert!(parse(vec![("user", 7, None)]).is_err());
        assert!(parse(vec![("user", -1, None)]).is_err());
        assert!(parse(vec![("ip", 2, None), ("user", 2, None)]).is_err());
    }
}
