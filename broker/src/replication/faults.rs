//! Test-only fault hooks, enabled with `fjord.test.fault.hooks=true` and driven through the
//! admin endpoint (`/v1/test/fault?pause-fetchers=1`, `?isolate=1`, `=0` to undo). They let
//! tests make followers fall out of the ISR or cut a broker off from the quorum and its peers
//! without network namespaces. Off (and the endpoint answers 404) unless configured.

use std::sync::atomic::{AtomicBool, Ordering};

static FETCHERS_PAUSED: AtomicBool = AtomicBool::new(false);

/// Followers stop fetching (they stay registered and heartbeating).
pub fn fetchers_paused() -> bool {
    FETCHERS_PAUSED.load(Ordering::Acquire) || isolated()
}

/// Cut off from the quorum, the controller and the leaders; clients still reach it.
pub fn isolated() -> bool {
    fjord_quorum::rpc::is_isolated()
}

/// Why a fault query is refused (the admin endpoint answers 400 with this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultQueryError {
    #[error("'{0}' is not name=0|1")]
    NotPair(String),
    #[error("'{0}' is not 0 or 1")]
    NotSwitch(String),
    #[error("unknown fault '{0}'")]
    UnknownFault(String),
}

/// Applies `?name=0|1` pairs; returns the resulting state or why the query is wrong.
pub fn apply(query: &str) -> Result<String, FaultQueryError> {
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| FaultQueryError::NotPair(pair.into()))?;
        let on = match v {
            "1" | "true" => true,
            "0" | "false" => false,
            _ => return Err(FaultQueryError::NotSwitch(v.into())),
        };
        match k {
            "pause-fetchers" => FETCHERS_PAUSED.store(on, Ordering::Release),
            "isolate" => fjord_quorum::rpc::set_isolated(on),
            _ => return Err(FaultQueryError::UnknownFault(k.into())),
        }
    }
    Ok(format!(
        "{{\"pauseFetchers\":{},\"isolated\":{}}}\n",
        FETCHERS_PAUSED.load(Ordering::Acquire),
        isolated()
    ))
}
