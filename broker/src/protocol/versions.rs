//! Version negotiation: the ranges ApiVersions advertises and the versions actually served, both
//! read from the API table in `apis`.

use kafka_protocol::messages::ApiKey;

use super::apis::APIS;

/// The advertised version range for `key`, or None when the API is not implemented.
pub fn range(key: ApiKey) -> Option<(i16, i16)> {
    APIS.iter().find(|a| a.key == key).map(|a| (a.min, a.max))
}

/// Whether requests at this version are actually served (Produce v0-2 are advertised only).
pub fn accepts(key: ApiKey, version: i16) -> bool {
    APIS.iter()
        .find(|a| a.key == key)
        .is_some_and(|a| version >= a.served_from && version <= a.max)
}
