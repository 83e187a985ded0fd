//! `max.connections.per.ip` and `max.connections` against a real in-process broker over TCP:
//! a connection over its address's limit is closed at once, the broker-wide limit makes new
//! connections wait for a slot, and everyone within the limits is served throughout.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader};
use kafka_protocol::protocol::Encodable;

fn start(rt: &tokio::runtime::Runtime, limits: &[(&str, &str)]) -> (SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let running = rt.block_on(common::start_broker(dir.path(), limits));
    let addr = running.kafka_addrs[0];
    std::mem::forget(running);
    (addr, dir)
}

fn runtime() -> tokio::runtime::Runtime {
    common::runtime()
}

/// Sends ApiVersions on `s`; true when a well-formed answer arrives within `wait`.
fn answers(s: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(3)
        .with_correlation_id(42)
        .encode(&mut buf, ApiKey::ApiVersions.request_header_version(3))
        .unwrap();
    ApiVersionsRequest::default().encode(&mut buf, 3).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    if s.write_all(&(buf.len() as i32).to_be_bytes()).is_err() || s.write_all(&buf).is_err() {
        return false;
    }
    let mut len = [0u8; 4];
    if s.read_exact(&mut len).is_err() {
        return false;
    }
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).is_ok() && body[0..4] == 42i32.to_be_bytes()
}

#[test]
fn an_address_over_its_limit_is_closed_and_others_are_served() {
    let rt = runtime();
    let (addr, _dir) = start(&rt, &[("max.connections.per.ip", "3")]);
    let mut open: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for s in &mut open {
        assert!(answers(s, Duration::from_secs(10)), "within the limit");
    }
    let mut fourth = TcpStream::connect(addr).unwrap();
    assert!(
        !answers(&mut fourth, Duration::from_secs(5)),
        "the fourth is closed"
    );
    drop(open.pop());
    std::thread::sleep(Duration::from_millis(200));
    let mut again = TcpStream::connect(addr).unwrap();
    assert!(
        answers(&mut again, Duration::from_secs(10)),
        "a freed slot is usable"
    );
    for s in &mut open {
        assert!(
            answers(s, Duration::from_secs(10)),
            "the others kept being served"
        );
    }
}

#[test]
fn overrides_name_addresses_with_their_own_limit() {
    let rt = runtime();
    let (addr, _dir) = start(
        &rt,
        &[
            ("max.connections.per.ip", "0"),
            ("max.connections.per.ip.overrides", "127.0.0.1:1"),
        ],
    );
    let mut first = TcpStream::connect(addr).unwrap();
    assert!(answers(&mut first, Duration::from_secs(10)));
    let mut second = TcpStream::connect(addr).unwrap();
    assert!(!answers(&mut second, Duration::from_secs(5)));
}

#[test]
fn the_broker_wide_limit_holds_new_connections_until_a_slot_frees() {
    let rt = runtime();
    let (addr, _dir) = start(&rt, &[("max.connections", "2")]);
    let mut a = TcpStream::connect(addr).unwrap();
    let mut b = TcpStream::connect(addr).unwrap();
    assert!(answers(&mut a, Duration::from_secs(10)));
    assert!(answers(&mut b, Duration::from_secs(10)));
    // The kernel completes the handshake (backlog), but the broker does not take it yet.
    let mut waiting = TcpStream::connect(addr).unwrap();
    let waiter = std::thread::spawn(move || answers(&mut waiting, Duration::from_secs(20)));
    std::thread::sleep(Duration::from_secs(1));
    assert!(!waiter.is_finished(), "no answer while the broker is full");
    drop(a);
    assert!(waiter.join().unwrap(), "served once a slot freed");
    assert!(answers(&mut b, Duration::from_secs(10)));
}

#[test]
fn unusable_limits_are_refused_at_start_naming_the_key() {
    let overrides = vec![(
        "max.connections.per.ip.overrides".to_string(),
        "db-host:3".to_string(),
    )];
    let err = fjord_broker::Config::load(None, &overrides).unwrap_err();
    assert_eq!(err.key, "max.connections.per.ip.overrides");
    assert!(err.reason.contains("not an IP address"), "{}", err.reason);
}
