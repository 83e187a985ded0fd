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

/// Applies `?name=0|1` pairs; returns the resulting state or why the query is wrong.
pub fn apply(query: &str) -> Result<String, String> {
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or(format!("'{pair}' is not name=0|1"))?;
        let on = match v {
            "1" | "true" => true,
            "0" | "false" => false,
            _ => return Err(format!("'{v}' is not 0 or 1")),
        };
        match k {
            "pause-fetchers" => FETCHERS_PAUSED.store(on, Ordering::Release),
            "isolate" => fjord_quorum::rpc::set_isolated(on),
            _ => return Err(format!("unknown fault '{k}'")),
        }
    }
    Ok(format!(
        "{{\"pauseFetchers\":{},\"isolated\":{}}}\n",
        FETCHERS_PAUSED.load(Ordering::Acquire),
        isolated()
    ))
}
