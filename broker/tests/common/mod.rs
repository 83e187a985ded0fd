//! Helpers shared by the broker's integration tests that speak the protocol directly.

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// One uncompressed v2 record batch holding a single record; `producer` is
/// `(producer id, epoch, first sequence)` for idempotent batches.
pub fn record_batch(key: Option<Bytes>, value: Bytes, producer: Option<(i64, i16, i32)>) -> Bytes {
    let (producer_id, producer_epoch, sequence) = producer.unwrap_or((-1, -1, -1));
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id,
        producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence,
        timestamp: 1_700_000_000_000,
        key,
        value: Some(value),
        headers: IndexMap::new(),
    };
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, [&record], &options).expect("a test batch encodes");
    buf.freeze()
}
