//! Helpers shared by the broker's integration tests that speak the protocol directly or run a
//! broker in the test's own process.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::path::Path;

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// One uncompressed v2 record batch holding a single record; `producer` is
/// `(producer id, epoch, first sequence)` for idempotent batches.
pub fn record_batch(key: Option<Bytes>, value: Bytes, producer: Option<(i64, i16, i32)>) -> Bytes {
    let (producer_id, producer_epoch, sequence) = producer.unwrap_or((-1, -1, -1));
    encode_batch(&[Record {
        key,
        ..test_record((producer_id, producer_epoch), 0, sequence, value)
    }])
}

/// One uncompressed v2 batch of `count` transactional records (keys `k0`, `k1`, …, sequences
/// from 0) of the producer `(producer id, epoch)`.
pub fn transactional_batch(producer: (i64, i16), count: i64, value: &'static [u8]) -> Bytes {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: true,
            key: Some(Bytes::from(format!("k{i}"))),
            ..test_record(producer, i, i as i32, Bytes::from_static(value))
        })
        .collect();
    encode_batch(&records)
}

/// A plain record at `offset` (non-transactional, no key, a fixed timestamp).
fn test_record(
    (producer_id, producer_epoch): (i64, i16),
    offset: i64,
    sequence: i32,
    value: Bytes,
) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id,
        producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset,
        sequence,
        timestamp: 1_700_000_000_000,
        key: None,
        value: Some(value),
        headers: IndexMap::new(),
    }
}

/// `records` as one uncompressed v2 batch.
fn encode_batch(records: &[Record]) -> Bytes {
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &options).expect("a test batch encodes");
    buf.freeze()
}

/// Settings that turn on Kafka's standard authorizer with `User:admin` as super user.
pub const STANDARD_AUTHORIZER_WITH_ADMIN: [(&str, &str); 2] = [
    (
        "authorizer.class.name",
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    ),
    ("super.users", "User:admin"),
];

/// The runtime the in-process tests run brokers on: two workers, like the machine's cores.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A broker in this process with one PLAINTEXT listener and its admin endpoint on ephemeral
/// loopback ports, its data in `dir`, and `extra` settings on top (later ones win).
pub async fn start_broker(dir: &Path, extra: &[(&str, &str)]) -> fjord_broker::Running {
    let mut overrides = vec![
        (
            "listeners".to_string(),
            "PLAINTEXT://127.0.0.1:0".to_string(),
        ),
        ("admin.listener".to_string(), "127.0.0.1:0".to_string()),
        ("log.dirs".to_string(), dir.display().to_string()),
    ];
    overrides.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let (config, _) = fjord_broker::Config::load(None, &overrides).expect("a valid test config");
    fjord_broker::start(config)
        .await
        .expect("the test broker starts")
}
