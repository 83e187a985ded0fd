//! User calls: SCRAM credentials, ACLs and client quotas.
//! (Filled in by the KafkaUser reconciler work.)

/// A SCRAM mechanism the brokers store credentials for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

/// One ACL binding, in Kafka's terms.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AclBinding {
    pub resource_type: i8,
    pub resource_name: String,
    pub pattern_type: i8,
    pub principal: String,
    pub host: String,
    pub operation: i8,
    pub permission_type: i8,
}
