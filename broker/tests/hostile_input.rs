//! Hostile and malformed requests against a real in-process broker over TCP: the broker must
//! close the offending connection (or answer with an error) and keep serving everyone else.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};

#[global_allocator]
static ALLOCATOR: fjord_broker::alloc_guard::GuardedAlloc = fjord_broker::alloc_guard::GuardedAlloc;

fn start_broker(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> SocketAddr {
    let running = rt.block_on(common::start_broker(
        dir,
        &[("socket.request.max.bytes", "1048576")],
    ));
    let addr = running.kafka_addrs[0];
    std::mem::forget(running);
    addr
}

fn frame<T: Encodable>(key: ApiKey, version: i16, correlation: i32, body: &T) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_static_str("hostile")))
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    out
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Sends ApiVersions on a fresh connection and checks a well-formed answer comes back.
fn assert_serving(addr: SocketAddr) {
    let mut s = connect(addr);
    s.write_all(&frame(
        ApiKey::ApiVersions,
        3,
        77,
        &ApiVersionsRequest::default(),
    ))
    .unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    assert_eq!(&body[0..4], &77i32.to_be_bytes(), "correlation id echoed");
}

/// Opens a connection and sends `body` as one size-prefixed frame.
fn send_frame(addr: SocketAddr, body: &[u8]) -> TcpStream {
    let mut s = connect(addr);
    s.write_all(&(body.len() as i32).to_be_bytes()).unwrap();
    s.write_all(body).unwrap();
    s
}

/// Reads until the peer closes; returns the bytes received. Fails on timeout (a hang).
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return all,
            Err(e) => panic!("connection neither answered nor closed: {e}"),
        }
    }
}

#[test]
fn hostile_frames_close_only_their_connection() {
    let rt = common::runtime();
    let dir = tempfile::tempdir().unwrap();
    let addr = start_broker(&rt, dir.path());
    assert_serving(addr);

    // A Metadata v12 request whose topic array claims 2^31 entries in a 20-byte frame.
    let mut body = vec![0, 3, 0, 12, 0, 0, 0, 1, 0, 0, 0];
    body.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x08]);
    let mut s = send_frame(addr, &body);
    assert!(read_until_closed(&mut s).is_empty());
    assert_serving(addr);

    // A length prefix above socket.request.max.bytes: closed without reading (or allocating) it.
    let mut s = connect(addr);
    s.write_all(&(512 * 1024 * 1024i32).to_be_bytes()).unwrap();
    assert!(read_until_closed(&mut s).is_empty());
    assert_serving(addr);

    // Unknown API key, unsupported version, truncated header.
    for bytes in [
        vec![0x7f, 0x00, 0, 0, 0, 0, 0, 1],
        vec![0, 3, 0x7f, 0, 0, 0, 0, 1],
        vec![0, 3, 0],
    ] {
        let mut s = send_frame(addr, &bytes);
        assert!(read_until_closed(&mut s).is_empty());
    }
    assert_serving(addr);

    // ApiVersions at a version from the future gets a v0 answer with UNSUPPORTED_VERSION (KIP-511).
    let mut s = send_frame(addr, &[0u8, 18, 0, 99, 0, 0, 0, 5, 0, 0]);
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut resp).unwrap();
    assert_eq!(&resp[0..4], &5i32.to_be_bytes());
    assert_eq!(
        i16::from_be_bytes([resp[4], resp[5]]),
        35,
        "UNSUPPORTED_VERSION"
    );

    // A client that disconnects in the middle of a frame.
    let mut s = connect(addr);
    s.write_all(&100i32.to_be_bytes()).unwrap();
    s.write_all(&[0, 3, 0]).unwrap();
    drop(s);
    assert_serving(addr);
}

/// Deterministic xorshift so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mutated_requests_never_take_the_broker_down() {
    let rt = common::runtime();
    let dir = tempfile::tempdir().unwrap();
    let addr = start_broker(&rt, dir.path());
    let topic = |n: &str| {
        MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(n.into()))))
    };
    let seeds: Vec<Vec<u8>> = vec![
        frame(
            ApiKey::Metadata,
            12,
            1,
            &MetadataRequest::default().with_topics(Some(vec![topic("fuzz")])),
        ),
        frame(
            ApiKey::Metadata,
            4,
            1,
            &MetadataRequest::default().with_topics(Some(vec![topic("fuzz2")])),
        ),
        frame(
            ApiKey::FindCoordinator,
            4,
            1,
            &FindCoordinatorRequest::default().with_coordinator_keys(vec!["g".into()]),
        ),
        frame(
            ApiKey::JoinGroup,
            9,
            1,
            &JoinGroupRequest::default()
                .with_group_id(GroupId("g".into()))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(10)
                .with_protocol_type("consumer".into()),
        ),
        frame(ApiKey::ListOffsets, 9, 1, &ListOffsetsRequest::default()),
        frame(
            ApiKey::Fetch,
            16,
            1,
            &FetchRequest::default().with_max_wait_ms(1),
        ),
        frame(ApiKey::OffsetFetch, 9, 1, &OffsetFetchRequest::default()),
        frame(
            ApiKey::DescribeConfigs,
            4,
            1,
            &DescribeConfigsRequest::default(),
        ),
        frame(ApiKey::ApiVersions, 3, 1, &ApiVersionsRequest::default()),
    ];
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let mut sent = 0;
    for round in 0..600 {
        let mut f = seeds[round % seeds.len()][4..].to_vec();
        for _ in 0..1 + rng.below(4) {
            match rng.below(4) {
                0 if !f.is_empty() => {
                    let i = rng.below(f.len());
                    f[i] = rng.next() as u8;
                }
                1 if !f.is_empty() => {
                    let i = rng.below(f.len());
                    f[i] = 0xff;
                }
                2 => f.truncate(rng.below(f.len() + 1)),
                _ => {
                    let i = rng.below(f.len() + 1);
                    f.insert(i, rng.next() as u8);
                }
            }
        }
        let mut s = connect(addr);
        let mut wire = (f.len() as i32).to_be_bytes().to_vec();
        wire.extend_from_slice(&f);
        s.write_all(&wire).unwrap();
        // Either an answer or a close; a hang fails via the read timeout inside.
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut buf = [0u8; 4];
        let _ = s.read(&mut buf);
        sent += 1;
    }
    assert_eq!(sent, 600);
    assert_serving(addr);
}
