//! Version negotiation: the ranges ApiVersions advertises and the versions actually served, both
//! read from the API table in `apis`, and the ApiVersions answer itself (exactly the implemented
//! APIs and versions), which belongs to the protocol rather than to an API handler.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};

use super::apis::APIS;
use super::context::RequestContext;
use super::errors::ErrorCode;

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

/// The ApiVersions response: every row of the API table with its advertised range.
pub fn response(error: ErrorCode) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(error.code())
        .with_api_keys(
            APIS.iter()
                .map(|a| {
                    ApiVersion::default()
                        .with_api_key(a.key as i16)
                        .with_min_version(a.min)
                        .with_max_version(a.max)
                })
                .collect(),
        )
}

/// The ApiVersions handler of the API table.
pub async fn handle(
    _needs_nothing: (),
    _ctx: &RequestContext,
    _req: ApiVersionsRequest,
) -> ApiVersionsResponse {
    response(ErrorCode::None)
}
