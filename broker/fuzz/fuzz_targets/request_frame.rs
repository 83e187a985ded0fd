//! Feeds arbitrary bytes to the broker as one request frame: header parsing, version checks,
//! body decoding and the handler behind it. Any panic or abort is a finding.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use fjord_broker::protocol::dispatch;
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOCATOR: fjord_broker::alloc_guard::GuardedAlloc = fjord_broker::alloc_guard::GuardedAlloc;

struct Env {
    rt: tokio::runtime::Runtime,
    broker: Arc<fjord_broker::Broker>,
    _dir: tempfile::TempDir,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let overrides = vec![
            ("log.dirs".to_string(), dir.path().display().to_string()),
            ("listeners".to_string(), "PLAINTEXT://127.0.0.1:0".to_string()),
            ("admin.listener".to_string(), "127.0.0.1:0".to_string()),
            ("group.initial.rebalance.delay.ms".to_string(), "0".to_string()),
        ];
        let (config, _) = fjord_broker::Config::load(None, &overrides).unwrap();
        // Worker threads keep the broker's background tasks (the metadata quorum among them)
        // running between inputs, not only while an input is handled.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let broker = rt.block_on(fjord_broker::start(config)).unwrap().broker;
        Env { rt, broker, _dir: dir }
    })
}

fuzz_target!(|data: &[u8]| {
    let e = env();
    let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let frame = bytes::Bytes::copy_from_slice(data);
    let mut session = fjord_broker::network::session::Session::plaintext(peer);
    // Requests that wait (JoinGroup, long-poll Fetch) are bounded by a short timeout.
    let _ = e.rt.block_on(async {
        tokio::time::timeout(std::time::Duration::from_millis(50), dispatch::handle(&e.broker, &mut session, frame)).await
    });
});
