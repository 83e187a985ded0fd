//! Record batch headers (magic v2) read and patched in place, without decoding records.
//!
//! Layout of the 61-byte header (big endian):
//! baseOffset i64 @0, batchLength i32 @8 (bytes after this field), partitionLeaderEpoch i32 @12,
//! magic i8 @16, crc u32 @17 (CRC-32C of bytes 21..end), attributes i16 @21, lastOffsetDelta i32 @23,
//! baseTimestamp i64 @27, maxTimestamp i64 @35, producerId i64 @43, producerEpoch i16 @51,
//! baseSequence i32 @53, recordCount i32 @57.

pub const HEADER_LEN: usize = 61;
/// Offset + length prefix: the part needed to know how long a batch is.
pub const LOG_OVERHEAD: usize = 12;
const CRC_START: usize = 21;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record batch is truncated")]
    Truncated,
    #[error("unsupported record batch magic {0} (only v2 is accepted)")]
    UnsupportedMagic(i8),
    #[error("record batch length {0} is invalid")]
    BadLength(i32),
    #[error("record batch CRC mismatch (stored {stored:#x}, computed {computed:#x})")]
    BadCrc { stored: u32, computed: u32 },
    #[error("record batch has invalid record count or offset delta")]
    BadCount,
}

/// The fields of a batch header we act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Total bytes of the batch including the 12-byte offset/length prefix.
    pub total_len: usize,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

impl BatchHeader {
    /// Parses the header at the start of `buf` (which must hold at least [`HEADER_LEN`] bytes).
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < LOG_OVERHEAD + 5 {
            return Err(BatchError::Truncated);
        }
        let magic = buf[16] as i8;
        if magic != 2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        if buf.len() < HEADER_LEN {
            return Err(BatchError::Truncated);
        }
        let batch_length = be_i32(buf, 8);
        if batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(BatchError::BadLength(batch_length));
        }
        let h = BatchHeader {
            base_offset: be_i64(buf, 0),
            total_len: batch_length as usize + LOG_OVERHEAD,
            partition_leader_epoch: be_i32(buf, 12),
            magic,
            crc: u32::from_be_bytes(buf[17..21].try_into().expect("4 bytes")),
            attributes: be_i16(buf, 21),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            record_count: be_i32(buf, 57),
        };
        if h.last_offset_delta < 0 || h.record_count < 0 {
            return Err(BatchError::BadCount);
        }
        Ok(h)
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// Number of offsets the batch occupies.
    pub fn offset_count(&self) -> i64 {
        self.last_offset_delta as i64 + 1
    }

    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return self.base_sequence;
        }
        // Sequences wrap at i32::MAX, like Kafka's DefaultRecordBatch.incrementSequence.
        let last = self.base_sequence as i64 + self.last_offset_delta as i64;
        if last > i32::MAX as i64 {
            (last - i32::MAX as i64 - 1) as i32
        } else {
            last as i32
        }
    }

    pub fn compression_codec(&self) -> i16 {
        self.attributes & 0x07
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
}

/// Does every record in these (validated) batches have a key? Compacted topics refuse
/// records without one, as Kafka does: compaction keeps the latest record per key, and a
/// keyless record would stay forever. Decodes (and decompresses) the records; `false` when
/// they cannot be decoded.
pub fn every_record_has_a_key(records: &bytes::Bytes) -> bool {
    // A clone of `Bytes` shares the request's buffer: the decoder advances its own cursor.
    let mut buf = records.clone();
    match kafka_protocol::records::RecordBatchDecoder::decode_all(&mut buf) {
        Ok(sets) => sets
            .iter()
            .flat_map(|set| set.records.iter())
            .all(|r| r.key.is_some()),
        Err(_) => false,
    }
}

/// Computes the CRC-32C that a batch must carry.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_START..])
}

/// Parses and fully validates one batch at the start of `buf` (length bounds and CRC).
pub fn validate(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let h = BatchHeader::parse(buf)?;
    if h.total_len > buf.len() {
        return Err(BatchError::Truncated);
    }
    let computed = compute_crc(&buf[..h.total_len]);
    if computed != h.crc {
        return Err(BatchError::BadCrc {
            stored: h.crc,
            computed,
        });
    }
    if h.compression_codec() > 4 {
        return Err(BatchError::BadCount);
    }
    Ok(h)
}

/// Splits a produce payload into validated batches. Rejects trailing garbage.
pub fn validate_all(buf: &[u8]) -> Result<Vec<BatchHeader>, BatchError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let h = validate(&buf[pos..])?;
        pos += h.total_len;
        out.push(h);
    }
    if out.is_empty() {
        return Err(BatchError::Truncated);
    }
    Ok(out)
}

/// Rewrites the base offset and leader epoch in place (outside the CRC-covered range).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64, leader_epoch: i32) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
    batch[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Marks a batch as LogAppendTime with `now` as its max timestamp and recomputes the CRC.
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    let attrs = be_i16(batch, 21) | TIMESTAMP_TYPE_BIT;
    batch[21..23].copy_from_slice(&attrs.to_be_bytes());
    batch[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = compute_crc(batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
pub(crate) mod test_support {
    fn varint(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }

    /// Encodes `n` small uncompressed records into one v2 batch (optional producer id/epoch/seq);
    /// record i has timestamp `timestamp + i`.
    pub fn make_batch(n: usize, producer: Option<(i64, i16, i32)>, timestamp: i64) -> Vec<u8> {
        let (pid, epoch, seq) = producer.unwrap_or((-1, -1, -1));
        let mut records = Vec::new();
        for i in 0..n {
            let mut r = vec![0u8];
            varint(&mut r, i as i64);
            varint(&mut r, i as i64);
            let key = format!("k{i}");
            let value = format!("value-{i}");
            varint(&mut r, key.len() as i64);
            r.extend_from_slice(key.as_bytes());
            varint(&mut r, value.len() as i64);
            r.extend_from_slice(value.as_bytes());
            varint(&mut r, 0);
            varint(&mut records, r.len() as i64);
            records.extend_from_slice(&r);
        }
        let mut b = Vec::new();
        b.extend_from_slice(&0i64.to_be_bytes());
        b.extend_from_slice(&((super::HEADER_LEN - 12 + records.len()) as i32).to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes());
        b.push(2);
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&(n as i32 - 1).to_be_bytes());
        b.extend_from_slice(&timestamp.to_be_bytes());
        b.extend_from_slice(&(timestamp + n as i64 - 1).to_be_bytes());
        b.extend_from_slice(&pid.to_be_bytes());
        b.extend_from_slice(&epoch.to_be_bytes());
        b.extend_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(&(n as i32).to_be_bytes());
        b.extend_from_slice(&records);
        let crc = super::compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    /// [`make_batch`] with the transactional attribute bit set (and the CRC redone).
    pub fn make_transactional_batch(
        n: usize,
        producer: (i64, i16, i32),
        timestamp: i64,
    ) -> Vec<u8> {
        let mut b = make_batch(n, Some(producer), timestamp);
        let attributes = i16::from_be_bytes([b[21], b[22]]) | super::TRANSACTIONAL_BIT;
        b[21..23].copy_from_slice(&attributes.to_be_bytes());
        let crc = super::compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::make_batch;
    use super::*;

    #[test]
    fn keyless_records_are_found_in_any_codec() {
        use kafka_protocol::records::{
            Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        };
        assert!(every_record_has_a_key(&bytes::Bytes::from(make_batch(
            3, None, 0
        ))));
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let records: Vec<Record> = (0..3)
                .map(|i| Record {
                    transactional: false,
                    control: false,
                    partition_leader_epoch: 0,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset: i,
                    sequence: -1,
                    timestamp: 0,
                    key: (i != 1).then(|| bytes::Bytes::from_static(b"k")),
                    value: Some(bytes::Bytes::from_static(b"v")),
                    headers: Default::default(),
                    delete_horizon: false,
                })
                .collect();
            let mut buf = bytes::BytesMut::new();
            let options = RecordEncodeOptions {
                version: 2,
                compression,
            };
            RecordBatchEncoder::encode(&mut buf, records.iter(), &options).unwrap();
            assert!(
                !every_record_has_a_key(&bytes::Bytes::from(buf)),
                "{compression:?}"
            );
        }
        assert!(
            !every_record_has_a_key(&bytes::Bytes::from_static(b"garbage")),
            "undecodable counts as refused"
        );
    }

    #[test]
    fn parses_and_validates_encoded_batch() {
        let b = make_batch(3, Some((7, 1, 10)), 1000);
        let h = validate(&b).unwrap();
        assert_eq!(h.total_len, b.len());
        assert_eq!(h.offset_count(), 3);
        assert_eq!(h.producer_id, 7);
        assert_eq!(h.base_sequence, 10);
        assert_eq!(h.last_sequence(), 12);
        assert_eq!(h.max_timestamp, 1002);
    }

    #[test]
    fn detects_corruption_and_truncation() {
        let mut b = make_batch(2, None, 0);
        let last = b.len() - 1;
        b[last] ^= 0xff;
        assert!(matches!(validate(&b), Err(BatchError::BadCrc { .. })));
        let b = make_batch(2, None, 0);
        assert_eq!(validate(&b[..b.len() - 1]), Err(BatchError::Truncated));
        assert_eq!(validate(&b[..10]), Err(BatchError::Truncated));
        let mut v1 = b.clone();
        v1[16] = 1;
        assert_eq!(validate(&v1), Err(BatchError::UnsupportedMagic(1)));
    }

    #[test]
    fn offset_rewrite_keeps_crc_valid_and_append_time_recomputes_it() {
        let mut b = make_batch(2, None, 0);
        set_base_offset(&mut b, 42, 3);
        let h = validate(&b).unwrap();
        assert_eq!(h.base_offset, 42);
        assert_eq!(h.partition_leader_epoch, 3);
        set_log_append_time(&mut b, 99);
        let h = validate(&b).unwrap();
        assert_eq!(h.max_timestamp, 99);
    }

    #[test]
    fn sequence_wraps() {
        let mut b = make_batch(3, Some((1, 0, i32::MAX - 1)), 0);
        let h = validate(&b).unwrap();
        assert_eq!(h.last_sequence(), 0);
        set_base_offset(&mut b, 0, 0);
    }

    #[test]
    fn validate_all_rejects_trailing_garbage() {
        let mut b = make_batch(1, None, 0);
        b.extend(make_batch(1, None, 0));
        assert_eq!(validate_all(&b).unwrap().len(), 2);
        b.extend([0u8; 5]);
        assert!(validate_all(&b).is_err());
    }
}
