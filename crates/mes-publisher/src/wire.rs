//! The bytes of the Kafka requests the publisher's own produce path sends:
//! `Metadata` v4 (where a partition's leader is), `Produce` v3 with one
//! `RecordBatch` v2, and `SaslHandshake`/`SaslAuthenticate` v1. These
//! versions are answered by every Kafka since 1.0 (4.0 included), Redpanda
//! and tansu, and none uses the flexible (tagged-field) encoding.
//!
//! Records are written straight from the publisher's encoded events into
//! one reused buffer: no record, header or batch object in between, which
//! is where rskafka spends most of its time per event.
//!
//! Answers are read with bounds checks throughout: a short or malformed
//! answer is a [`WireError`], never a panic.

use std::fmt;

use crate::Compression;

const API_PRODUCE: i16 = 0;
const API_METADATA: i16 = 3;
const API_SASL_HANDSHAKE: i16 = 17;
const API_SASL_AUTHENTICATE: i16 = 36;
const PRODUCE_VERSION: i16 = 3;
const METADATA_VERSION: i16 = 4;
/// `SaslHandshake` v1 and `SaslAuthenticate` v1: the SASL exchange in Kafka
/// frames, answered since Kafka 1.0 (4.0 included).
const SASL_VERSION: i16 = 1;
/// Where the correlation id sits in a request with its size prefix: size,
/// API key, API version.
const CORRELATION_AT: usize = 4 + 2 + 2;

/// One record as the produce request needs it.
pub(crate) trait WireRecord {
    fn key(&self) -> Option<&[u8]>;
    fn value(&self) -> Option<&[u8]>;
    /// The headers, in order.
    fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])>;
    /// Creation time, milliseconds since the epoch.
    fn timestamp_ms(&self) -> i64;
}

/// An answer that cannot be read.
#[derive(Debug)]
pub(crate) struct WireError(String);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed answer from the broker: {}", self.0)
    }
}

impl std::error::Error for WireError {}

/// Writes the request header (after a size placeholder) into `buf`.
fn header(buf: &mut Vec<u8>, api_key: i16, version: i16, client_id: &str) {
    buf.clear();
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&api_key.to_be_bytes());
    buf.extend_from_slice(&version.to_be_bytes());
    buf.extend_from_slice(&0_i32.to_be_bytes()); // correlation id, set per send
    string(buf, client_id);
}

/// Sets the correlation id of a request written by this module.
pub(crate) fn set_correlation(request: &mut [u8], correlation: i32) {
    if let Some(slot) = request.get_mut(CORRELATION_AT..CORRELATION_AT + 4) {
        slot.copy_from_slice(&correlation.to_be_bytes());
    }
}

/// A `Metadata` v4 request for one topic, never creating it.
pub(crate) fn metadata_request(buf: &mut Vec<u8>, client_id: &str, topic: &str) {
    header(buf, API_METADATA, METADATA_VERSION, client_id);
    buf.extend_from_slice(&1_i32.to_be_bytes());
    string(buf, topic);
    buf.push(0); // allow_auto_topic_creation = false
    patch_size(buf, 0, 4);
}

/// A `Produce` v3 request (acks = all) for one partition's `records`,
/// compressed with `compression`; an error only when compressing fails.
pub(crate) fn produce_request<R: WireRecord>(
    buf: &mut Vec<u8>,
    client_id: &str,
    timeout_ms: i32,
    topic: &str,
    partition: i32,
    records: &[R],
    compression: Compression,
) -> std::io::Result<()> {
    header(buf, API_PRODUCE, PRODUCE_VERSION, client_id);
    buf.extend_from_slice(&(-1_i16).to_be_bytes()); // no transactional id
    buf.extend_from_slice(&(-1_i16).to_be_bytes()); // acks = all
    buf.extend_from_slice(&timeout_ms.to_be_bytes());
    buf.extend_from_slice(&1_i32.to_be_bytes()); // one topic
    string(buf, topic);
    buf.extend_from_slice(&1_i32.to_be_bytes()); // one partition
    buf.extend_from_slice(&partition.to_be_bytes());
    let records_size_at = reserve(buf, 4);
    record_batch(buf, records, compression)?;
    patch_size(buf, records_size_at, records_size_at + 4);
    patch_size(buf, 0, 4);
    Ok(())
}

/// Appends a `RecordBatch` v2 of `records`: create time, no producer id.
fn record_batch<R: WireRecord>(
    buf: &mut Vec<u8>,
    records: &[R],
    compression: Compression,
) -> std::io::Result<()> {
    let first = records.first().map_or(0, WireRecord::timestamp_ms);
    let max = records
        .iter()
        .map(WireRecord::timestamp_ms)
        .max()
        .unwrap_or(first);
    let count = i32::try_from(records.len()).unwrap_or(i32::MAX);
    buf.extend_from_slice(&0_i64.to_be_bytes()); // base offset
    let length_at = reserve(buf, 4);
    buf.extend_from_slice(&(-1_i32).to_be_bytes()); // partition leader epoch
    buf.push(2); // magic
    let crc_at = reserve(buf, 4);
    buf.extend_from_slice(&codec_id(compression).to_be_bytes()); // attributes: the codec
    buf.extend_from_slice(&(count - 1).to_be_bytes()); // last offset delta
    buf.extend_from_slice(&first.to_be_bytes());
    buf.extend_from_slice(&max.to_be_bytes());
    buf.extend_from_slice(&(-1_i64).to_be_bytes()); // producer id
    buf.extend_from_slice(&(-1_i16).to_be_bytes()); // producer epoch
    buf.extend_from_slice(&(-1_i32).to_be_bytes()); // base sequence
    buf.extend_from_slice(&count.to_be_bytes());
    let records_at = buf.len();
    for (delta, record) in (0..).zip(records) {
        write_record(buf, delta, record.timestamp_ms() - first, record);
    }
    if compression != Compression::None {
        // Only the records are compressed; the batch header stays readable.
        let plain = buf.split_off(records_at);
        compress(compression, &plain, buf)?;
    }
    let crc = crc32c::crc32c(buf.get(crc_at + 4..).unwrap_or_default());
    if let Some(slot) = buf.get_mut(crc_at..crc_at + 4) {
        slot.copy_from_slice(&crc.to_be_bytes());
    }
    patch_size(buf, length_at, length_at + 4);
    Ok(())
}

/// The codec's number in a batch's attributes.
fn codec_id(compression: Compression) -> i16 {
    match compression {
        Compression::None => 0,
        #[cfg(feature = "compression-gzip")]
        Compression::Gzip => 1,
        #[cfg(feature = "compression-snappy")]
        Compression::Snappy => 2,
        #[cfg(feature = "compression-lz4")]
        Compression::Lz4 => 3,
        #[cfg(feature = "compression-zstd")]
        Compression::Zstd => 4,
    }
}

/// Appends `input` compressed as Kafka reads each codec: a gzip stream,
/// raw snappy, an LZ4 frame of independent blocks, a zstd frame.
#[cfg_attr(
    not(any(
        feature = "compression-gzip",
        feature = "compression-lz4",
        feature = "compression-snappy",
        feature = "compression-zstd"
    )),
    allow(unused_variables)
)]
fn compress(compression: Compression, input: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
    #[cfg(any(
        feature = "compression-gzip",
        feature = "compression-lz4",
        feature = "compression-zstd"
    ))]
    use std::io::Write;
    match compression {
        Compression::None => out.extend_from_slice(input),
        #[cfg(feature = "compression-gzip")]
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            encoder.write_all(input)?;
            encoder.finish()?;
        }
        #[cfg(feature = "compression-snappy")]
        Compression::Snappy => {
            let start = out.len();
            out.resize(start + snap::raw::max_compress_len(input.len()), 0);
            let written = snap::raw::Encoder::new()
                .compress(input, out.get_mut(start..).unwrap_or_default())
                .map_err(std::io::Error::other)?;
            out.truncate(start + written);
        }
        #[cfg(feature = "compression-lz4")]
        Compression::Lz4 => {
            let mut encoder = lz4::EncoderBuilder::new()
                // The only block mode Kafka reads.
                .block_mode(lz4::liblz4::BlockMode::Independent)
                .build(out)?;
            encoder.write_all(input)?;
            encoder.finish().1?;
        }
        #[cfg(feature = "compression-zstd")]
        Compression::Zstd => {
            let mut encoder = zstd::Encoder::new(out, 0)?;
            encoder.write_all(input)?;
            encoder.finish()?;
        }
    }
    Ok(())
}

fn write_record<R: WireRecord>(buf: &mut Vec<u8>, offset_delta: i64, time_delta: i64, record: &R) {
    let bytes_len = |b: Option<&[u8]>| b.map_or(varint_len(-1), |b| prefixed_len(b.len()));
    let mut headers = 0;
    let mut headers_len = 0;
    for (name, value) in record.headers() {
        headers += 1;
        headers_len += prefixed_len(name.len()) + prefixed_len(value.len());
    }
    let body = 1
        + varint_len(time_delta)
        + varint_len(offset_delta)
        + bytes_len(record.key())
        + bytes_len(record.value())
        + varint_len(headers)
        + headers_len;
    varint(buf, i64::try_from(body).unwrap_or(i64::MAX));
    buf.push(0); // attributes
    varint(buf, time_delta);
    varint(buf, offset_delta);
    for part in [record.key(), record.value()] {
        match part {
            Some(bytes) => prefixed(buf, bytes),
            None => varint(buf, -1),
        }
    }
    varint(buf, headers);
    for (name, value) in record.headers() {
        prefixed(buf, name);
        prefixed(buf, value);
    }
}

/// A `SaslHandshake` v1 request for `mechanism`.
pub(crate) fn sasl_handshake_request(buf: &mut Vec<u8>, client_id: &str, mechanism: &str) {
    header(buf, API_SASL_HANDSHAKE, SASL_VERSION, client_id);
    string(buf, mechanism);
    patch_size(buf, 0, 4);
}

/// Reads a `SaslHandshake` v1 answer: correlation id, error code and the
/// mechanisms the broker offers.
pub(crate) fn sasl_handshake_answer(answer: &[u8]) -> Result<(i32, i16, Vec<String>), WireError> {
    let mut r = Reader(answer);
    let correlation = r.i32()?;
    let error_code = r.i16()?;
    let mechanisms = (0..r.count()?).map(|_| r.string()).collect::<Result<_, _>>()?;
    Ok((correlation, error_code, mechanisms))
}

/// A `SaslAuthenticate` v1 request carrying one SASL message.
pub(crate) fn sasl_authenticate_request(buf: &mut Vec<u8>, client_id: &str, message: &[u8]) {
    header(buf, API_SASL_AUTHENTICATE, SASL_VERSION, client_id);
    buf.extend_from_slice(&i32::try_from(message.len()).unwrap_or(i32::MAX).to_be_bytes());
    buf.extend_from_slice(message);
    patch_size(buf, 0, 4);
}

/// What a `SaslAuthenticate` v1 answer says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SaslAnswer {
    pub(crate) correlation: i32,
    pub(crate) error_code: i16,
    pub(crate) error_message: Option<String>,
    /// The broker's SASL message.
    pub(crate) message: Vec<u8>,
}

/// Reads a `SaslAuthenticate` v1 answer.
pub(crate) fn sasl_authenticate_answer(answer: &[u8]) -> Result<SaslAnswer, WireError> {
    let mut r = Reader(answer);
    let correlation = r.i32()?;
    let error_code = r.i16()?;
    let error_message = r.nullable_string()?;
    let len = usize::try_from(r.i32()?).unwrap_or(0);
    let (message, rest) =
        r.0.split_at_checked(len)
            .ok_or_else(|| WireError("SASL message runs past the answer".to_owned()))?;
    r.0 = rest;
    r.i64()?; // session lifetime
    Ok(SaslAnswer {
        correlation,
        error_code,
        error_message,
        message: message.to_vec(),
    })
}

/// What a `Produce` v3 answer says about the one partition it was asked about.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ProduceAnswer {
    pub(crate) correlation: i32,
    pub(crate) error_code: i16,
    pub(crate) base_offset: i64,
}

/// Reads a `Produce` v3 answer (without its size prefix) about `partition`.
pub(crate) fn produce_answer(answer: &[u8], partition: i32) -> Result<ProduceAnswer, WireError> {
    let mut r = Reader(answer);
    let correlation = r.i32()?;
    for _ in 0..r.count()? {
        r.string()?;
        for _ in 0..r.count()? {
            let index = r.i32()?;
            let error_code = r.i16()?;
            let base_offset = r.i64()?;
            r.i64()?; // log append time
            if index == partition {
                return Ok(ProduceAnswer {
                    correlation,
                    error_code,
                    base_offset,
                });
            }
        }
    }
    Err(WireError(format!("no answer about partition {partition}")))
}

/// Where a `Metadata` v4 answer says a partition's leader is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Leader {
    /// The leader's `host:port`.
    At(String),
    /// The topic's or the partition's error code, or -1 when the partition
    /// has no leader or the topic is not in the answer.
    Unknown(i16),
}

/// Reads a `Metadata` v4 answer (without its size prefix): the correlation
/// id and where `partition` of `topic` has its leader.
pub(crate) fn metadata_leader(
    answer: &[u8],
    topic: &str,
    partition: i32,
) -> Result<(i32, Leader), WireError> {
    let mut r = Reader(answer);
    let correlation = r.i32()?;
    r.i32()?; // throttle time
    let mut brokers = Vec::new();
    for _ in 0..r.count()? {
        let node = r.i32()?;
        let host = r.string()?;
        let port = r.i32()?;
        r.nullable_string()?; // rack
        brokers.push((node, format!("{host}:{port}")));
    }
    r.nullable_string()?; // cluster id
    r.i32()?; // controller
    for _ in 0..r.count()? {
        let topic_error = r.i16()?;
        let name = r.string()?;
        r.i8()?; // is internal
        let mut leader = Leader::Unknown(if topic_error == 0 { -1 } else { topic_error });
        for _ in 0..r.count()? {
            let partition_error = r.i16()?;
            let index = r.i32()?;
            let leader_id = r.i32()?;
            for _ in 0..2 {
                // replicas, in-sync replicas
                for _ in 0..r.count()? {
                    r.i32()?;
                }
            }
            if name == topic && index == partition && topic_error == 0 {
                leader = match brokers.iter().find(|(node, _)| *node == leader_id) {
                    Some((_, address)) if partition_error == 0 => Leader::At(address.clone()),
                    _ => Leader::Unknown(if partition_error == 0 { -1 } else { partition_error }),
                };
            }
        }
        if name == topic {
            return Ok((correlation, leader));
        }
    }
    Ok((correlation, Leader::Unknown(-1)))
}

/// A cursor over an answer; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or_else(|| WireError("answer ends early".to_owned()))?;
        self.0 = rest;
        Ok(*head)
    }

    fn i8(&mut self) -> Result<i8, WireError> {
        self.take::<1>().map(i8::from_be_bytes)
    }

    fn i16(&mut self) -> Result<i16, WireError> {
        self.take::<2>().map(i16::from_be_bytes)
    }

    fn i32(&mut self) -> Result<i32, WireError> {
        self.take::<4>().map(i32::from_be_bytes)
    }

    fn i64(&mut self) -> Result<i64, WireError> {
        self.take::<8>().map(i64::from_be_bytes)
    }

    /// An array's length; a null array counts as empty.
    fn count(&mut self) -> Result<usize, WireError> {
        let count = self.i32()?;
        // Each element takes at least one byte: a larger count is garbage.
        let count = usize::try_from(count).unwrap_or(0);
        if count > self.0.len() {
            return Err(WireError(format!(
                "array of {count} elements in {} bytes",
                self.0.len()
            )));
        }
        Ok(count)
    }

    fn nullable_string(&mut self) -> Result<Option<String>, WireError> {
        let len = self.i16()?;
        let Ok(len) = usize::try_from(len) else {
            return Ok(None);
        };
        let (text, rest) = self
            .0
            .split_at_checked(len)
            .ok_or_else(|| WireError("string runs past the answer".to_owned()))?;
        self.0 = rest;
        Ok(Some(String::from_utf8_lossy(text).into_owned()))
    }

    fn string(&mut self) -> Result<String, WireError> {
        self.nullable_string().map(Option::unwrap_or_default)
    }
}

fn string(buf: &mut Vec<u8>, text: &str) {
    buf.extend_from_slice(&i16::try_from(text.len()).unwrap_or(i16::MAX).to_be_bytes());
    buf.extend_from_slice(text.as_bytes());
}

/// Appends `n` placeholder bytes and returns where they start.
fn reserve(buf: &mut Vec<u8>, n: usize) -> usize {
    let at = buf.len();
    buf.resize(at + n, 0);
    at
}

/// Writes at `at` the size of what follows from `from` to the end.
fn patch_size(buf: &mut [u8], at: usize, from: usize) {
    let size = i32::try_from(buf.len().saturating_sub(from)).unwrap_or(i32::MAX);
    if let Some(slot) = buf.get_mut(at..at + 4) {
        slot.copy_from_slice(&size.to_be_bytes());
    }
}

/// A length as a varint, then the bytes.
fn prefixed(buf: &mut Vec<u8>, bytes: &[u8]) {
    varint(buf, i64::try_from(bytes.len()).unwrap_or(i64::MAX));
    buf.extend_from_slice(bytes);
}

fn prefixed_len(len: usize) -> usize {
    varint_len(i64::try_from(len).unwrap_or(i64::MAX)) + len
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)).cast_unsigned()
}

/// Kafka's signed varint: zig-zag, then seven bits a byte, low bits first.
fn varint(buf: &mut Vec<u8>, value: i64) {
    let mut v = zigzag(value);
    while v >= 0x80 {
        buf.push(u8::try_from(v & 0x7f).unwrap_or_default() | 0x80);
        v >>= 7;
    }
    buf.push(u8::try_from(v).unwrap_or_default());
}

fn varint_len(value: i64) -> usize {
    let bits = 64 - zigzag(value).leading_zeros() as usize;
    bits.max(1).div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn varints_are_kafkas_zigzag_encoding() {
        for (value, bytes) in [
            (0_i64, vec![0x00]),
            (-1, vec![0x01]),
            (1, vec![0x02]),
            (63, vec![0x7e]),
            (-64, vec![0x7f]),
            (64, vec![0x80, 0x01]),
            (300, vec![0xd8, 0x04]),
        ] {
            let mut buf = Vec::new();
            varint(&mut buf, value);
            assert_eq!(buf, bytes, "{value}");
            assert_eq!(varint_len(value), bytes.len(), "{value}");
        }
    }

    /// The whole request of two records, byte by byte where it matters:
    /// sizes, counts, the CRC over the batch, each record's fields.
    #[test]
    fn a_produce_request_is_laid_out_as_kafka_reads_it() {
        let records = [
            Rec {
                key: Some(b"E-1".to_vec()),
                value: Some(b"{}".to_vec()),
                headers: vec![(b"ce-id".to_vec(), b"1".to_vec())],
                time: 1_000,
            },
            Rec {
                key: None,
                value: None,
                headers: vec![],
                time: 1_005,
            },
        ];
        let mut buf = Vec::new();
        produce_request(&mut buf, "me", 30_000, "t", 2, &records, Compression::None).unwrap();
        set_correlation(&mut buf, 7);
        let mut r = Reader(&buf);
        assert_eq!(usize::try_from(r.i32().unwrap()).unwrap(), buf.len() - 4);
        assert_eq!((r.i16().unwrap(), r.i16().unwrap(), r.i32().unwrap()), (0, 3, 7));
        assert_eq!(r.string().unwrap(), "me");
        assert_eq!(r.nullable_string().unwrap(), None);
        assert_eq!((r.i16().unwrap(), r.i32().unwrap()), (-1, 30_000));
        assert_eq!(r.count().unwrap(), 1);
        assert_eq!(r.string().unwrap(), "t");
        assert_eq!((r.count().unwrap(), r.i32().unwrap()), (1, 2));
        let records_size = usize::try_from(r.i32().unwrap()).unwrap();
        assert_eq!(records_size, r.0.len());
        assert_eq!(r.i64().unwrap(), 0);
        assert_eq!(usize::try_from(r.i32().unwrap()).unwrap(), r.0.len());
        assert_eq!((r.i32().unwrap(), r.i8().unwrap()), (-1, 2));
        let crc = u32::from_be_bytes(r.take::<4>().unwrap());
        assert_eq!(crc, crc32c::crc32c(r.0));
        assert_eq!((r.i16().unwrap(), r.i32().unwrap()), (0, 1));
        assert_eq!((r.i64().unwrap(), r.i64().unwrap()), (1_000, 1_005));
        assert_eq!(
            (r.i64().unwrap(), r.i16().unwrap(), r.i32().unwrap()),
            (-1, -1, -1)
        );
        assert_eq!(r.i32().unwrap(), 2);
        // length 19, attributes, time delta 0, offset delta 0, key "E-1",
        // value "{}", one header ce-id = 1
        let first = [
            38, 0, 0, 0, 6, b'E', b'-', b'1', 4, b'{', b'}', 2, 10, b'c', b'e', b'-', b'i', b'd', 2, b'1',
        ];
        assert_eq!(r.0.get(..first.len()).unwrap(), first);
        // length 6, attributes, time delta 5, offset delta 1, no key, no value, no headers
        assert_eq!(r.0.get(first.len()..).unwrap(), [12, 0, 10, 2, 1, 1, 0]);
    }

    fn answer(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn a_produce_answer_gives_the_partitions_error_and_base_offset() {
        let bytes = answer(&[
            &9_i32.to_be_bytes(),
            &1_i32.to_be_bytes(),
            &1_i16.to_be_bytes(),
            b"t",
            &1_i32.to_be_bytes(),
            &2_i32.to_be_bytes(),
            &0_i16.to_be_bytes(),
            &42_i64.to_be_bytes(),
            &(-1_i64).to_be_bytes(),
            &0_i32.to_be_bytes(),
        ]);
        assert_eq!(
            produce_answer(&bytes, 2).unwrap(),
            ProduceAnswer {
                correlation: 9,
                error_code: 0,
                base_offset: 42
            }
        );
        assert!(produce_answer(&bytes, 3).is_err());
        // Every truncation is an error, never a panic.
        for end in 0..bytes.len() - 4 {
            assert!(produce_answer(&bytes[..end], 2).is_err(), "{end}");
        }
    }

    #[test]
    fn a_metadata_answer_gives_the_leaders_address_or_why_not() {
        let partition = |error: i16, index: i32, leader: i32| -> Vec<u8> {
            answer(&[
                &error.to_be_bytes(),
                &index.to_be_bytes(),
                &leader.to_be_bytes(),
                &1_i32.to_be_bytes(),
                &leader.to_be_bytes(),
                &0_i32.to_be_bytes(),
            ])
        };
        let bytes = answer(&[
            &5_i32.to_be_bytes(),
            &0_i32.to_be_bytes(),
            &2_i32.to_be_bytes(),
            &1_i32.to_be_bytes(),
            &4_i16.to_be_bytes(),
            b"kafa",
            &9092_i32.to_be_bytes(),
            &(-1_i16).to_be_bytes(),
            &2_i32.to_be_bytes(),
            &4_i16.to_be_bytes(),
            b"kafb",
            &9093_i32.to_be_bytes(),
            &(-1_i16).to_be_bytes(),
            &(-1_i16).to_be_bytes(),
            &1_i32.to_be_bytes(),
            &1_i32.to_be_bytes(),
            &0_i16.to_be_bytes(),
            &1_i16.to_be_bytes(),
            b"t",
            &[0],
            &3_i32.to_be_bytes(),
            &partition(0, 0, 2),
            &partition(0, 1, 7),
            &partition(5, 2, -1),
        ]);
        assert_eq!(
            metadata_leader(&bytes, "t", 0).unwrap(),
            (5, Leader::At("kafb:9093".to_owned()))
        );
        assert_eq!(metadata_leader(&bytes, "t", 1).unwrap().1, Leader::Unknown(-1));
        assert_eq!(metadata_leader(&bytes, "t", 2).unwrap().1, Leader::Unknown(5));
        assert_eq!(metadata_leader(&bytes, "u", 0).unwrap().1, Leader::Unknown(-1));
        for end in 0..bytes.len() - 1 {
            assert!(metadata_leader(&bytes[..end], "t", 2).is_err(), "{end}");
        }
    }
}
