//! Transaction markers (KIP-98): the control batches that commit or abort a producer's
//! transaction on a partition. The log writes them for the transaction coordinator and reads
//! them back (on append, replication and recovery) to keep its transaction state, so both the
//! encoding and the parsing live here, next to the batch header code they build on.
//!
//! A marker is a v2 batch with the control and transactional attribute bits, base sequence -1
//! and one uncompressed record whose key is `[version i16 = 0, type i16]` (0 = ABORT,
//! 1 = COMMIT) and whose value is `[version i16 = 0, coordinator_epoch i32]`, as Kafka's
//! `EndTransactionMarker` writes it.

use super::batch::{self, BatchHeader, HEADER_LEN, LOG_OVERHEAD};

const CONTROL_ATTRIBUTES: i16 = 0x30;
const ABORT: i16 = 0;
const COMMIT: i16 = 1;

/// How a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerType {
    Abort,
    Commit,
}

/// The marker a control batch holds, from its whole bytes (at least its first record). None
/// for a data batch, a compressed one (a marker never is) or a control record of another kind:
/// those change no transaction state.
pub fn marker_type(batch_bytes: &[u8]) -> Option<MarkerType> {
    let h = BatchHeader::parse(batch_bytes).ok()?;
    if !h.is_control() || h.compression_codec() != 0 || h.record_count < 1 {
        return None;
    }
    let end = h.total_len.min(batch_bytes.len());
    let mut r = batch_bytes.get(HEADER_LEN..end)?;
    let _record_len = varint(&mut r)?;
    let _attributes = take(&mut r, 1)?;
    let _timestamp_delta = varint(&mut r)?;
    let _offset_delta = varint(&mut r)?;
    let key_len = varint(&mut r)?;
    if key_len < 4 {
        return None;
    }
    let key = take(&mut r, 4)?;
    let version = i16::from_be_bytes([key[0], key[1]]);
    if version < 0 {
        return None;
    }
    match i16::from_be_bytes([key[2], key[3]]) {
        ABORT => Some(MarkerType::Abort),
        COMMIT => Some(MarkerType::Commit),
        _ => None,
    }
}

/// A marker batch at base offset 0 (the log assigns the offset and leader epoch), with
/// `timestamp` as its record's timestamp and a valid CRC.
pub fn encode(
    producer_id: i64,
    producer_epoch: i16,
    kind: MarkerType,
    coordinator_epoch: i32,
    timestamp: i64,
) -> Vec<u8> {
    let kind = match kind {
        MarkerType::Abort => ABORT,
        MarkerType::Commit => COMMIT,
    };
    let mut record = vec![0u8]; // attributes
    put_varint(&mut record, 0); // timestamp delta
    put_varint(&mut record, 0); // offset delta
    put_varint(&mut record, 4);
    record.extend_from_slice(&0i16.to_be_bytes());
    record.extend_from_slice(&kind.to_be_bytes());
    put_varint(&mut record, 6);
    record.extend_from_slice(&0i16.to_be_bytes());
    record.extend_from_slice(&coordinator_epoch.to_be_bytes());
    put_varint(&mut record, 0); // headers
    let mut records = Vec::with_capacity(record.len() + 2);
    put_varint(&mut records, record.len() as i64);
    records.extend_from_slice(&record);

    let mut b = Vec::with_capacity(HEADER_LEN + records.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((HEADER_LEN - LOG_OVERHEAD + records.len()) as i32).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // partition leader epoch
    b.push(2); // magic
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, set below
    b.extend_from_slice(&CONTROL_ATTRIBUTES.to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&producer_id.to_be_bytes());
    b.extend_from_slice(&producer_epoch.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence: markers have none
    b.extend_from_slice(&1i32.to_be_bytes()); // record count
    b.extend_from_slice(&records);
    let crc = batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn take<'a>(r: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if r.len() < n {
        return None;
    }
    let (a, rest) = r.split_at(n);
    *r = rest;
    Some(a)
}

/// A zigzag varint (the record fields' encoding); None when it is cut short or too long.
fn varint(r: &mut &[u8]) -> Option<i64> {
    let mut z: u64 = 0;
    for i in 0..10 {
        let b = *take(r, 1)?.first()?;
        z |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((z >> 1) as i64 ^ -((z & 1) as i64));
        }
    }
    None
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::records::RecordBatchDecoder;

    use super::*;
    use crate::log::batch::test_support::make_batch;

    #[test]
    fn an_encoded_marker_is_a_valid_control_batch_that_parses_back() {
        for (kind, type_id) in [(MarkerType::Abort, 0), (MarkerType::Commit, 1)] {
            let b = encode(42, 3, kind, 7, 1_000);
            let h = batch::validate(&b).unwrap();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (42, 3, -1)
            );
            assert_eq!((h.record_count, h.offset_count()), (1, 1));
            assert_eq!(marker_type(&b), Some(kind));
            // A full decoder agrees on the record's key and value.
            let set = RecordBatchDecoder::decode(&mut Bytes::from(b)).unwrap();
            let r = &set.records[0];
            assert!(r.control && r.transactional);
            assert_eq!(r.timestamp, 1_000);
            assert_eq!(r.key.as_deref(), Some(&[0u8, 0, 0, type_id][..]));
            assert_eq!(r.value.as_deref(), Some(&[0u8, 0, 0, 0, 0, 7][..]));
        }
    }

    #[test]
    fn data_batches_and_damaged_or_unknown_markers_are_no_markers() {
        assert_eq!(marker_type(&make_batch(1, Some((1, 0, 0)), 0)), None);
        let b = encode(1, 0, MarkerType::Commit, 0, 0);
        // Cut before, inside and one byte short of the key.
        for cut in [HEADER_LEN, HEADER_LEN + 3, HEADER_LEN + 8] {
            assert_eq!(marker_type(&b[..cut]), None, "cut at {cut}");
        }
        assert_eq!(marker_type(&[]), None);
        let mut other = b.clone();
        // The key's type (LEADER_CHANGE = 2, a KRaft-only record) sits after the record's
        // length, attributes, two deltas and key length: five one-byte fields.
        let type_at = HEADER_LEN + 5 + 3;
        other[type_at] = 2;
        assert_eq!(marker_type(&other), None);
    }
}
