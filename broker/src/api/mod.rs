//! Request handlers, one file per API family. Each takes the services it uses (a bundle from
//! `services`, or still the whole broker for the admin families), the request context and the
//! decoded request, and returns the response; errors travel as Kafka error codes.

pub mod acls;
pub mod authz;
pub mod configs;
pub mod consumer_groups;
pub mod elect_leaders;
pub mod fetch;
pub mod groups;
pub mod list_offsets;
pub mod log_dirs;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod producer_id;
pub mod producers;
pub mod quorum;
pub mod quotas;
pub mod reassignments;
pub mod scram;
pub mod services;
pub mod topics;
pub mod transactions;

use kafka_protocol::messages::TopicName;

use crate::protocol::context::s;

pub(crate) fn topic_name(name: &str) -> TopicName {
    TopicName(s(name))
}
