//! Oracle tests: our codecs against the `kafka-protocol` crate, a second
//! implementation of the same Kafka specs. Batches we write it reads, and
//! batches it writes we read, to the same records; the Fetch and
//! ListOffsets answers it encodes we decode to the same fields, and the
//! requests we encode it decodes to ours.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse as TheirListPartition, ListOffsetsTopicResponse as TheirListTopic,
};
use kafka_protocol::messages::{
    BrokerId, FetchRequest as TheirFetchRequest, FetchResponse as TheirFetchResponse,
    ListOffsetsRequest as TheirListRequest, ListOffsetsResponse as TheirListResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression as TheirCompression, Record as TheirRecord, RecordBatchDecoder, RecordBatchEncoder,
    RecordEncodeOptions, TimestampType,
};
use mes_kafka::protocol::Request;
use mes_kafka::protocol::fetch::{FetchPartition, FetchRequest, FetchTopic, IsolationLevel};
use mes_kafka::protocol::list_offsets::{
    EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic,
};
use mes_kafka::protocol::record_batch::{
    Compression, ProducerStamp, Record, WireRecord, read_record_batches, write_record_batch,
};
use proptest::prelude::*;

/// Every codec this build has.
fn codecs() -> Vec<Compression> {
    vec![
        Compression::None,
        #[cfg(feature = "compression-gzip")]
        Compression::Gzip,
        #[cfg(feature = "compression-snappy")]
        Compression::Snappy,
        #[cfg(feature = "compression-lz4")]
        Compression::Lz4,
        #[cfg(feature = "compression-zstd")]
        Compression::Zstd,
    ]
}

fn theirs(compression: Compression) -> TheirCompression {
    match compression.codec_id() {
        1 => TheirCompression::Gzip,
        2 => TheirCompression::Snappy,
        3 => TheirCompression::Lz4,
        4 => TheirCompression::Zstd,
        _ => TheirCompression::None,
    }
}

/// A record to write: our [`Record`] without its offset mattering.
#[derive(Debug, Clone)]
struct Rec {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    time: i64,
}

impl WireRecord for Rec {
    fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }
    fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }
    fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice()))
    }
    fn timestamp_ms(&self) -> i64 {
        self.time
    }
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

/// Records with distinct UTF-8 header names: kafka-protocol keeps headers
/// in a map keyed by a UTF-8 string, so it can hold nothing else.
fn records() -> impl Strategy<Value = Vec<Rec>> {
    let record = (
        prop::option::of(bytes(30)),
        prop::option::of(bytes(150)),
        prop::collection::btree_map("[a-zA-Z0-9._é-]{0,12}", bytes(20), 0..4),
        0..(1_i64 << 45),
    )
        .prop_map(|(key, value, headers, time)| Rec {
            key,
            value,
            headers: headers.into_iter().map(|(n, v)| (n.into_bytes(), v)).collect(),
            time,
        });
    prop::collection::vec(record, 1..10)
}

fn stamp() -> impl Strategy<Value = ProducerStamp> {
    prop_oneof![
        Just(ProducerStamp::NONE),
        (0..i64::MAX, 0..i16::MAX, 0..(i32::MAX / 2)).prop_map(
            |(producer_id, producer_epoch, base_sequence)| ProducerStamp {
                producer_id,
                producer_epoch,
                base_sequence
            }
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Batches we write, kafka-protocol reads to the same records and stamp.
    #[test]
    fn kafka_protocol_reads_what_we_write(records in records(), stamp in stamp()) {
        for compression in codecs() {
            let mut buf = Vec::new();
            write_record_batch(&mut buf, &records, compression, stamp).unwrap();
            let sets = RecordBatchDecoder::decode_all(&mut Bytes::from(buf)).unwrap();
            prop_assert_eq!(sets.len(), 1);
            prop_assert_eq!(sets[0].compression, theirs(compression));
            let read = &sets[0].records;
            prop_assert_eq!(read.len(), records.len());
            for ((offset, ours), theirs) in (0_i64..).zip(&records).zip(read) {
                prop_assert_eq!(theirs.offset, offset);
                prop_assert_eq!(theirs.timestamp, ours.time);
                prop_assert_eq!(theirs.key.as_deref(), ours.key.as_deref());
                prop_assert_eq!(theirs.value.as_deref(), ours.value.as_deref());
                let headers: Vec<(Vec<u8>, Vec<u8>)> = theirs
                    .headers
                    .iter()
                    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_deref().unwrap_or_default().to_vec()))
                    .collect();
                prop_assert_eq!(&headers, &ours.headers);
                prop_assert_eq!(theirs.producer_id, stamp.producer_id);
                prop_assert_eq!(theirs.producer_epoch, stamp.producer_epoch);
                let sequence = if stamp.base_sequence < 0 { -1 + offset as i32 } else { stamp.base_sequence + offset as i32 };
                prop_assert_eq!(theirs.sequence, sequence);
                prop_assert!(!theirs.control && !theirs.transactional);
                prop_assert_eq!(theirs.timestamp_type, TimestampType::Creation);
            }
        }
    }

    /// Batches kafka-protocol writes (its snappy in xerial framing, as
    /// Java's producer), we read to the same records.
    #[test]
    fn we_read_what_kafka_protocol_writes(records in records(), base in 0..(1_i64 << 40), stamp in stamp()) {
        let theirs_in: Vec<TheirRecord> = (base..)
            .zip(&records)
            .map(|(offset, r)| TheirRecord {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 4,
                producer_id: stamp.producer_id,
                producer_epoch: stamp.producer_epoch,
                timestamp_type: TimestampType::Creation,
                offset,
                // One batch: offset minus sequence is the same throughout.
                sequence: stamp.base_sequence.wrapping_add((offset - base) as i32),
                timestamp: r.time,
                key: r.key.clone().map(Bytes::from),
                value: r.value.clone().map(Bytes::from),
                headers: r
                    .headers
                    .iter()
                    .map(|(n, v)| {
                        (StrBytes::from_string(String::from_utf8(n.clone()).unwrap()), Some(Bytes::from(v.clone())))
                    })
                    .collect::<IndexMap<_, _>>(),
            })
            .collect();
        for compression in codecs() {
            let mut buf = BytesMut::new();
            let options = RecordEncodeOptions { version: 2, compression: theirs(compression) };
            RecordBatchEncoder::encode(&mut buf, &theirs_in, &options).unwrap();
            let mut batches = read_record_batches(&buf);
            let mut read = Vec::new();
            for batch in &mut batches {
                let batch = batch.unwrap();
                prop_assert_eq!(batch.header.codec_id(), compression.codec_id());
                prop_assert_eq!(batch.header.partition_leader_epoch, 4);
                prop_assert_eq!(batch.header.producer_id, stamp.producer_id);
                read.extend(batch.records.into_iter().map(Result::unwrap));
            }
            prop_assert!(!batches.is_partial());
            prop_assert_eq!(batches.next_offset(), Some(base + records.len() as i64));
            let want: Vec<Record> = (base..)
                .zip(&records)
                .map(|(offset, r)| Record {
                    offset,
                    timestamp_ms: r.time,
                    key: r.key.clone(),
                    value: r.value.clone(),
                    headers: r.headers.clone(),
                })
                .collect();
            prop_assert_eq!(read, want);
        }
    }
}

/// A null header value (which kafka-protocol, like Kafka, can write) reads
/// as empty; a non-UTF-8 header name, which it cannot write, is tested in
/// the unit tests.
#[test]
fn a_null_header_value_reads_as_empty() {
    let record = TheirRecord {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 5,
        key: None,
        value: Some(Bytes::from_static(b"v")),
        headers: [(StrBytes::from_static_str("n"), None)].into_iter().collect(),
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [&record],
        &RecordEncodeOptions {
            version: 2,
            compression: TheirCompression::None,
        },
    )
    .unwrap();
    let batch = read_record_batches(&buf).next().unwrap().unwrap();
    assert_eq!(
        batch.records[0].as_ref().unwrap().headers,
        [(b"n".to_vec(), Vec::new())]
    );
}

fn topic(name: &'static str) -> TopicName {
    TopicName(StrBytes::from_static_str(name))
}

#[test]
fn fetch_answers_kafka_protocol_encodes_we_decode_per_version() {
    let mut records = Vec::new();
    let rec = Rec {
        key: Some(b"k".to_vec()),
        value: Some(b"v".to_vec()),
        headers: vec![],
        time: 9,
    };
    write_record_batch(
        &mut records,
        &[rec.clone(), rec],
        Compression::None,
        ProducerStamp::NONE,
    )
    .unwrap();
    for version in FetchRequest::VERSIONS {
        let partition = |index: i32, records: Option<Bytes>, aborted: Option<Vec<AbortedTransaction>>| {
            PartitionData::default()
                .with_partition_index(index)
                .with_error_code(if records.is_some() { 0 } else { 1 })
                .with_high_watermark(100 + i64::from(index))
                .with_last_stable_offset(90 + i64::from(index))
                .with_log_start_offset(if version >= 5 { 3 } else { -1 })
                .with_aborted_transactions(aborted)
                .with_records(records)
        };
        let answer = TheirFetchResponse::default()
            .with_throttle_time_ms(12)
            .with_responses(vec![
                FetchableTopicResponse::default()
                    .with_topic(topic("orders"))
                    .with_partitions(vec![
                        partition(
                            0,
                            Some(Bytes::from(records.clone())),
                            Some(vec![
                                AbortedTransaction::default()
                                    .with_producer_id(ProducerId(7))
                                    .with_first_offset(50),
                            ]),
                        ),
                        partition(1, None, None),
                        partition(2, Some(Bytes::new()), Some(vec![])),
                    ]),
                FetchableTopicResponse::default().with_topic(topic("empty")),
            ]);
        let mut body = BytesMut::new();
        answer.encode(&mut body, version).unwrap();
        let ours = FetchRequest::decode_response(version, &body).unwrap();
        assert_eq!(ours.throttle_time_ms, 12);
        assert_eq!(ours.topics.len(), 2);
        assert_eq!(ours.topics[0].topic, "orders");
        assert_eq!(ours.topics[1].topic, "empty");
        assert!(ours.topics[1].partitions.is_empty());
        let parts = &ours.topics[0].partitions;
        assert_eq!(parts.len(), 3);
        for (index, part) in (0..).zip(parts) {
            assert_eq!(part.partition_index, index);
            assert_eq!(part.high_watermark, 100 + i64::from(index));
            assert_eq!(part.last_stable_offset, 90 + i64::from(index));
            assert_eq!(part.log_start_offset, if version >= 5 { 3 } else { -1 });
        }
        assert_eq!(parts[0].error_code, 0);
        assert_eq!(parts[1].error_code, 1);
        let aborted = parts[0].aborted_transactions.as_ref().unwrap();
        assert_eq!((aborted[0].producer_id, aborted[0].first_offset), (7, 50));
        assert_eq!(parts[1].aborted_transactions, None);
        assert_eq!(parts[2].aborted_transactions, Some(vec![]));
        assert_eq!(parts[0].records.as_ref().unwrap().as_bytes(), records);
        assert_eq!(parts[1].records, None);
        assert!(parts[2].records.as_ref().unwrap().is_empty());
        let read: Vec<_> = parts[0].records.as_ref().unwrap().batches().collect();
        assert_eq!(read[0].as_ref().unwrap().records.len(), 2);
    }
}

#[test]
fn fetch_requests_we_encode_kafka_protocol_decodes_per_version() {
    let request = FetchRequest {
        max_wait_ms: 250,
        min_bytes: 1,
        max_bytes: 52_428_800,
        isolation_level: IsolationLevel::ReadCommitted,
        topics: vec![FetchTopic {
            topic: "orders".to_owned(),
            partitions: vec![
                FetchPartition::new(0, 42, 1 << 20),
                FetchPartition::new(5, 7, 1 << 16),
            ],
        }],
    };
    for version in FetchRequest::VERSIONS {
        let mut buf = Vec::new();
        request.encode(version, &mut buf);
        let mut bytes = Bytes::from(buf);
        let theirs = TheirFetchRequest::decode(&mut bytes, version).unwrap();
        assert!(bytes.is_empty(), "v{version}: {} bytes left", bytes.len());
        assert_eq!(theirs.replica_id, BrokerId(-1));
        assert_eq!(
            (theirs.max_wait_ms, theirs.min_bytes, theirs.max_bytes),
            (250, 1, 52_428_800)
        );
        assert_eq!(theirs.isolation_level, 1);
        assert_eq!(theirs.topics.len(), 1);
        assert_eq!(theirs.topics[0].topic, topic("orders"));
        let parts: Vec<_> = theirs.topics[0]
            .partitions
            .iter()
            .map(|p| {
                (
                    p.partition,
                    p.fetch_offset,
                    p.log_start_offset,
                    p.partition_max_bytes,
                )
            })
            .collect();
        assert_eq!(parts, [(0, 42, -1, 1 << 20), (5, 7, -1, 1 << 16)]);
    }
}

#[test]
fn list_offsets_answers_kafka_protocol_encodes_we_decode_per_version() {
    for version in ListOffsetsRequest::VERSIONS {
        let epoch = if version >= 4 { 11 } else { -1 };
        let answer = TheirListResponse::default()
            .with_throttle_time_ms(if version >= 2 { 8 } else { 0 })
            .with_topics(vec![
                TheirListTopic::default()
                    .with_name(topic("orders"))
                    .with_partitions(vec![
                        TheirListPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(-1)
                            .with_offset(1234)
                            .with_leader_epoch(epoch),
                        TheirListPartition::default()
                            .with_partition_index(1)
                            .with_error_code(6)
                            .with_timestamp(1_700_000_000_000)
                            .with_offset(-1)
                            .with_leader_epoch(epoch),
                    ]),
            ]);
        let mut body = BytesMut::new();
        answer.encode(&mut body, version).unwrap();
        let ours = ListOffsetsRequest::decode_response(version, &body).unwrap();
        assert_eq!(ours.throttle_time_ms, if version >= 2 { 8 } else { 0 });
        assert_eq!(ours.topics.len(), 1);
        assert_eq!(ours.topics[0].name, "orders");
        let parts: Vec<_> = ours.topics[0]
            .partitions
            .iter()
            .map(|p| {
                (
                    p.partition_index,
                    p.error_code,
                    p.timestamp,
                    p.offset,
                    p.leader_epoch,
                )
            })
            .collect();
        assert_eq!(
            parts,
            [(0, 0, -1, 1234, epoch), (1, 6, 1_700_000_000_000, -1, epoch)],
            "v{version}"
        );
    }
}

#[test]
fn list_offsets_requests_we_encode_kafka_protocol_decodes_per_version() {
    let request = ListOffsetsRequest {
        isolation_level: IsolationLevel::ReadCommitted,
        topics: vec![ListOffsetsTopic {
            name: "orders".to_owned(),
            partitions: vec![
                ListOffsetsPartition::new(0, EARLIEST_TIMESTAMP),
                ListOffsetsPartition {
                    partition_index: 3,
                    current_leader_epoch: 5,
                    timestamp: LATEST_TIMESTAMP,
                },
            ],
        }],
    };
    for version in ListOffsetsRequest::VERSIONS {
        let mut buf = Vec::new();
        request.encode(version, &mut buf);
        let mut bytes = Bytes::from(buf);
        let theirs = TheirListRequest::decode(&mut bytes, version).unwrap();
        assert!(bytes.is_empty(), "v{version}: {} bytes left", bytes.len());
        assert_eq!(theirs.replica_id, BrokerId(-1));
        assert_eq!(theirs.isolation_level, if version >= 2 { 1 } else { 0 });
        assert_eq!(theirs.topics[0].name, topic("orders"));
        let parts: Vec<_> = theirs.topics[0]
            .partitions
            .iter()
            .map(|p| (p.partition_index, p.current_leader_epoch, p.timestamp))
            .collect();
        let epoch = if version >= 4 { 5 } else { -1 };
        assert_eq!(parts, [(0, -1, -2), (3, epoch, -1)], "v{version}");
    }
}
