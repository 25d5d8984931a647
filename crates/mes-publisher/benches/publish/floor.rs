//! What the same records cost without rskafka's record model: each
//! partition's batches encoded straight into one reused buffer (Kafka
//! `RecordBatch` v2 in a `Produce` v3 request) and written to a connection
//! of its own with `TCP_NODELAY`, one request in flight per partition, as
//! the publisher sends. No retries, no TLS, no SASL: it measures the floor
//! a produce path of our own could reach, not a producer.
//!
//! Each answer must carry no error and the base offset that follows the
//! partition's previous batch, so every record is shown appended once; and
//! rskafka must read the first records back as they were sent.

use std::collections::BTreeMap;
use std::time::Instant;

use mes_events_types::KafkaRecord;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The request's API key and version: `Produce` v3, the oldest version
/// Kafka 4 still answers and the first with `RecordBatch` v2.
const PRODUCE: [i16; 2] = [0, 3];
const CLIENT_ID: &str = "mes-bench-floor";

/// Produces `records` (partition → records with their timestamps) to
/// `topic`, 500 per request, and prints the rate and CPU lines.
pub(crate) async fn own_encoding(
    brokers: &str,
    topic: &str,
    records: BTreeMap<u32, Vec<(KafkaRecord, i64)>>,
) {
    let count: usize = records.values().map(Vec::len).sum();
    let (&first_partition, first_records) = records.iter().next().unwrap();
    let sample: Vec<KafkaRecord> = first_records.iter().take(10).map(|(r, _)| r.clone()).collect();
    let broker = brokers.split(',').next().unwrap().to_owned();
    let mut connections = Vec::new();
    for partition in records.keys() {
        let stream = TcpStream::connect(&broker).await.unwrap();
        stream.set_nodelay(true).unwrap();
        connections.push((*partition, stream));
    }
    let cpu = super::cpu_time();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for ((partition, mut stream), (_, records)) in connections.into_iter().zip(records) {
        let topic = topic.to_owned();
        tasks.push(tokio::spawn(async move {
            let partition = i32::try_from(partition).unwrap();
            let mut request = Vec::with_capacity(1 << 20);
            let mut response = Vec::new();
            let mut next_offset = None;
            for (correlation, batch) in (0..).zip(records.chunks(500)) {
                encode_produce(&mut request, correlation, &topic, partition, batch);
                stream.write_all(&request).await.unwrap();
                let length = usize::try_from(stream.read_i32().await.unwrap()).unwrap();
                response.resize(length, 0);
                stream.read_exact(&mut response).await.unwrap();
                let (answered, error, base_offset) = produce_answer(&response);
                assert_eq!(
                    (answered, error),
                    (correlation, 0),
                    "partition {partition}: answer {answered} to request {correlation}, error {error}"
                );
                let expected = next_offset.unwrap_or(base_offset);
                assert_eq!(
                    base_offset, expected,
                    "partition {partition}: a batch went missing or twice"
                );
                next_offset = Some(base_offset + i64::try_from(batch.len()).unwrap());
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let name = format!("own_encoding_floor{}", super::ALLOCATOR_SUFFIX);
    super::report(&name, count, started.elapsed());
    super::report_cpu(&name, count, cpu);
    read_back(brokers, topic, first_partition, &sample).await;
}

/// Asserts that rskafka reads the first records of `partition` as `sent`.
async fn read_back(brokers: &str, topic: &str, partition: u32, sent: &[KafkaRecord]) {
    let client = rskafka::client::ClientBuilder::new(vec![brokers.to_owned()])
        .build()
        .await
        .unwrap();
    let partition = client
        .partition_client(
            topic,
            i32::try_from(partition).unwrap(),
            rskafka::client::partition::UnknownTopicHandling::Error,
        )
        .await
        .unwrap();
    let (fetched, _) = partition.fetch_records(0, 1..1_000_000, 1_000).await.unwrap();
    assert!(fetched.len() >= sent.len(), "fetched {} records", fetched.len());
    for (got, sent) in fetched.iter().zip(sent) {
        let sent_headers: BTreeMap<String, Vec<u8>> = sent.headers.iter().cloned().collect();
        assert_eq!(
            (&got.record.key, &got.record.value, &got.record.headers),
            (&sent.key, &sent.value, &sent_headers),
            "offset {}",
            got.offset
        );
    }
}

/// Writes a whole `Produce` v3 request (size prefix included) for one
/// partition's `records` into `buf`.
fn encode_produce(
    buf: &mut Vec<u8>,
    correlation: i32,
    topic: &str,
    partition: i32,
    records: &[(KafkaRecord, i64)],
) {
    buf.clear();
    let size_at = reserve(buf, 4);
    for part in PRODUCE {
        buf.extend_from_slice(&part.to_be_bytes());
    }
    buf.extend_from_slice(&correlation.to_be_bytes());
    string(buf, CLIENT_ID);
    buf.extend_from_slice(&(-1_i16).to_be_bytes()); // no transactional id
    buf.extend_from_slice(&(-1_i16).to_be_bytes()); // acks = all
    buf.extend_from_slice(&30_000_i32.to_be_bytes()); // timeout ms
    buf.extend_from_slice(&1_i32.to_be_bytes()); // one topic
    string(buf, topic);
    buf.extend_from_slice(&1_i32.to_be_bytes()); // one partition
    buf.extend_from_slice(&partition.to_be_bytes());
    let records_size_at = reserve(buf, 4);
    let batch_at = buf.len();
    encode_batch(buf, records);
    patch_size(buf, records_size_at, batch_at);
    patch_size(buf, size_at, size_at + 4);
}

/// Appends a `RecordBatch` v2 of `records`, uncompressed.
fn encode_batch(buf: &mut Vec<u8>, records: &[(KafkaRecord, i64)]) {
    let first = records.first().map_or(0, |(_, t)| *t);
    let max = records.iter().map(|(_, t)| *t).max().unwrap_or(first);
    buf.extend_from_slice(&0_i64.to_be_bytes()); // base offset
    let length_at = reserve(buf, 4);
    buf.extend_from_slice(&(-1_i32).to_be_bytes()); // partition leader epoch
    buf.push(2); // magic
    let crc_at = reserve(buf, 4);
    buf.extend_from_slice(&0_i16.to_be_bytes()); // attributes: no compression, create time
    let last_delta = i32::try_from(records.len()).unwrap() - 1;
    buf.extend_from_slice(&last_delta.to_be_bytes());
    buf.extend_from_slice(&first.to_be_bytes());
    buf.extend_from_slice(&max.to_be_bytes());
    buf.extend_from_slice(&(-1_i64).to_be_bytes()); // producer id
    buf.extend_from_slice(&(-1_i16).to_be_bytes()); // producer epoch
    buf.extend_from_slice(&(-1_i32).to_be_bytes()); // base sequence
    buf.extend_from_slice(&i32::try_from(records.len()).unwrap().to_be_bytes());
    for (delta, (record, time)) in (0..).zip(records) {
        encode_record(buf, delta, time - first, record);
    }
    let crc = crc32c::crc32c(&buf[crc_at + 4..]);
    buf[crc_at..crc_at + 4].copy_from_slice(&crc.to_be_bytes());
    patch_size(buf, length_at, length_at + 4);
}

fn encode_record(buf: &mut Vec<u8>, offset_delta: i32, time_delta: i64, record: &KafkaRecord) {
    let bytes = |b: &Option<Vec<u8>>| b.as_ref().map_or(varint_len(-1), |b| len_prefixed(b.len()));
    let body = 1
        + varint_len(time_delta)
        + varint_len(offset_delta.into())
        + bytes(&record.key)
        + bytes(&record.value)
        + varint_len(record.headers.len() as i64)
        + record
            .headers
            .iter()
            .map(|(n, v)| len_prefixed(n.len()) + len_prefixed(v.len()))
            .sum::<usize>();
    varint(buf, body as i64);
    buf.push(0); // attributes
    varint(buf, time_delta);
    varint(buf, offset_delta.into());
    for part in [&record.key, &record.value] {
        match part {
            Some(b) => {
                varint(buf, b.len() as i64);
                buf.extend_from_slice(b);
            }
            None => varint(buf, -1),
        }
    }
    varint(buf, record.headers.len() as i64);
    for (name, value) in &record.headers {
        varint(buf, name.len() as i64);
        buf.extend_from_slice(name.as_bytes());
        varint(buf, value.len() as i64);
        buf.extend_from_slice(value);
    }
}

/// The correlation id, the error code and the base offset of a `Produce` v3
/// answer about one partition.
fn produce_answer(response: &[u8]) -> (i32, i16, i64) {
    let i32_at = |at: usize| i32::from_be_bytes(response[at..at + 4].try_into().unwrap());
    let correlation = i32_at(0);
    // correlation, topic count, topic name, partition count, partition index
    let name_len = usize::from(u16::from_be_bytes(response[8..10].try_into().unwrap()));
    let at = 10 + name_len + 4 + 4;
    let error = i16::from_be_bytes(response[at..at + 2].try_into().unwrap());
    let base_offset = i64::from_be_bytes(response[at + 2..at + 10].try_into().unwrap());
    (correlation, error, base_offset)
}

fn string(buf: &mut Vec<u8>, text: &str) {
    buf.extend_from_slice(&i16::try_from(text.len()).unwrap().to_be_bytes());
    buf.extend_from_slice(text.as_bytes());
}

/// Appends `n` placeholder bytes and returns where they are.
fn reserve(buf: &mut Vec<u8>, n: usize) -> usize {
    let at = buf.len();
    buf.resize(at + n, 0);
    at
}

/// Writes at `at` the size of what follows from `from` to the end.
fn patch_size(buf: &mut [u8], at: usize, from: usize) {
    let size = i32::try_from(buf.len() - from).unwrap();
    buf[at..at + 4].copy_from_slice(&size.to_be_bytes());
}

/// Kafka's signed varint: zig-zag, then 7 bits per byte.
fn varint(buf: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn varint_len(value: i64) -> usize {
    let v = ((value << 1) ^ (value >> 63)) as u64;
    (64 - v.leading_zeros() as usize).max(1).div_ceil(7)
}

fn len_prefixed(len: usize) -> usize {
    varint_len(len as i64) + len
}
