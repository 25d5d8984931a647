//! The `RecordBatch` v2 (magic 2) format of Kafka's record sets: a writer
//! for produce requests and a reader for fetch answers.
//!
//! A batch is a header (base offset, length, leader epoch, magic, CRC-32C,
//! attributes, offset and timestamp bases, producer stamp, record count)
//! followed by its records, compressed as a whole when the attributes name
//! a codec. The CRC covers everything from the attributes on.
//!
//! The reader, [`read_record_batches`], walks the batches of one
//! partition's record set as a fetch answer carries them. It is built for a
//! consumer that must never stop on one bad record:
//!
//! - a batch cut off at the end (the broker stops at `max_bytes` inside a
//!   batch) ends the walk and is reported by [`RecordBatches::is_partial`];
//! - a bad CRC, an old message format (magic 0 or 1), an unknown codec or
//!   one whose feature is not compiled in, or a batch that decompresses to
//!   more than the cap fails that batch alone ([`BatchError`]);
//! - a record that cannot be decoded fails alone ([`RecordError`], with its
//!   offset), and the batch's other records are still read;
//! - control batches (transaction markers) are yielded without records, so
//!   the fetch position can move past them.
//!
//! Decompression is streamed with a limit ([`MAX_DECOMPRESSED_BYTES`]
//! unless [`RecordBatches::max_decompressed_bytes`] says otherwise): a
//! declared size is never trusted, so a small batch cannot make the reader
//! allocate more than the cap. Nothing here panics.

use std::borrow::Cow;
use std::fmt;

use super::primitives::{DecodeError, Reader, Writer, varint_bytes_len, varlong_len};

/// How many bytes the records of one batch may decompress to, unless
/// [`RecordBatches::max_decompressed_bytes`] sets another cap: 64 MiB, far
/// above what a broker accepts in one batch (`message.max.bytes`, 1 MiB by
/// default) at any realistic compression ratio, and small enough that a
/// compression bomb cannot exhaust memory.
pub const MAX_DECOMPRESSED_BYTES: usize = 64 * 1024 * 1024;

/// Base offset (8) and batch length (4): what precedes the length's bytes.
const BATCH_PREFIX: usize = 12;
/// The bytes of a v2 batch header after its length field.
const HEADER_AFTER_LENGTH: usize = 49;
/// The smallest record: length, attributes, timestamp delta, offset delta,
/// key length, value length and header count, one byte each.
const MIN_RECORD_BYTES: usize = 7;
/// The smallest header: a name length and a value length of one byte each.
const MIN_HEADER_BYTES: usize = 2;

/// Attribute bits of a batch.
const CODEC_MASK: i16 = 0b111;
const LOG_APPEND_TIME: i16 = 1 << 3;
const TRANSACTIONAL: i16 = 1 << 4;
const CONTROL: i16 = 1 << 5;

/// Compression of a record batch's records.
///
/// Each codec is there only with its Cargo feature: `compression-gzip`,
/// `compression-snappy`, `compression-lz4`, `compression-zstd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    /// None (the default).
    #[default]
    None,
    /// gzip (feature `compression-gzip`).
    #[cfg(feature = "compression-gzip")]
    Gzip,
    /// Snappy (feature `compression-snappy`); written as raw snappy, which
    /// Kafka's and librdkafka's readers accept.
    #[cfg(feature = "compression-snappy")]
    Snappy,
    /// LZ4 (feature `compression-lz4`), as an LZ4 frame of independent blocks.
    #[cfg(feature = "compression-lz4")]
    Lz4,
    /// Zstandard (feature `compression-zstd`).
    #[cfg(feature = "compression-zstd")]
    Zstd,
}

impl Compression {
    /// The codec's number in a batch's attributes (0 none, 1 gzip,
    /// 2 snappy, 3 lz4, 4 zstd).
    pub fn codec_id(self) -> i16 {
        match self {
            Self::None => 0,
            #[cfg(feature = "compression-gzip")]
            Self::Gzip => 1,
            #[cfg(feature = "compression-snappy")]
            Self::Snappy => 2,
            #[cfg(feature = "compression-lz4")]
            Self::Lz4 => 3,
            #[cfg(feature = "compression-zstd")]
            Self::Zstd => 4,
        }
    }
}

/// One record as [`write_record_batch`] needs it.
pub trait WireRecord {
    /// The key; `None` is Kafka's null key.
    fn key(&self) -> Option<&[u8]>;
    /// The value; `None` is a tombstone.
    fn value(&self) -> Option<&[u8]>;
    /// The headers, in order (names may repeat).
    fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])>;
    /// Creation time, milliseconds since the epoch.
    fn timestamp_ms(&self) -> i64;
}

/// The producer fields of a batch header: who wrote it and the sequence of
/// its first record, for idempotent producing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    /// The producer id from `InitProducerId`, or -1.
    pub producer_id: i64,
    /// The producer epoch, or -1.
    pub producer_epoch: i16,
    /// The sequence number of the batch's first record, or -1.
    pub base_sequence: i32,
}

impl ProducerStamp {
    /// No producer id: plain, non-idempotent producing.
    pub const NONE: Self = Self {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    };
}

/// Appends a `RecordBatch` v2 of `records` to `buf`: base offset 0 (the
/// broker assigns offsets), create time, the codec in the attributes, the
/// producer fields from `producer`, and the CRC-32C over the batch from the
/// attributes on. Only the records are compressed; the header stays
/// readable. An error only when compressing fails.
pub fn write_record_batch<R: WireRecord>(
    buf: &mut Vec<u8>,
    records: &[R],
    compression: Compression,
    producer: ProducerStamp,
) -> std::io::Result<()> {
    let first = records.first().map_or(0, WireRecord::timestamp_ms);
    let max = records
        .iter()
        .map(WireRecord::timestamp_ms)
        .max()
        .unwrap_or(first);
    let count = i32::try_from(records.len()).unwrap_or(i32::MAX);
    buf.put_i64(0); // base offset
    let length_at = buf.reserve_at(4);
    buf.put_i32(-1); // partition leader epoch
    buf.put_i8(2); // magic
    let crc_at = buf.reserve_at(4);
    buf.put_i16(compression.codec_id()); // attributes: the codec
    buf.put_i32(count - 1); // last offset delta
    buf.put_i64(first);
    buf.put_i64(max);
    buf.put_i64(producer.producer_id);
    buf.put_i16(producer.producer_epoch);
    buf.put_i32(producer.base_sequence);
    buf.put_i32(count);
    let records_at = buf.len();
    for (delta, record) in (0..).zip(records) {
        write_record(buf, delta, record.timestamp_ms().wrapping_sub(first), record);
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
    buf.patch_size(length_at, length_at + 4);
    Ok(())
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
    let bytes_len = |b: Option<&[u8]>| b.map_or(varlong_len(-1), |b| varint_bytes_len(b.len()));
    let mut headers = 0;
    let mut headers_len = 0;
    for (name, value) in record.headers() {
        headers += 1;
        headers_len += varint_bytes_len(name.len()) + varint_bytes_len(value.len());
    }
    let body = 1
        + varlong_len(time_delta)
        + varlong_len(offset_delta)
        + bytes_len(record.key())
        + bytes_len(record.value())
        + varlong_len(headers)
        + headers_len;
    buf.put_varlong(i64::try_from(body).unwrap_or(i64::MAX));
    buf.put_i8(0); // attributes
    buf.put_varlong(time_delta);
    buf.put_varlong(offset_delta);
    buf.put_varint_bytes(record.key());
    buf.put_varint_bytes(record.value());
    buf.put_varlong(headers);
    for (name, value) in record.headers() {
        buf.put_varint_bytes(Some(name));
        buf.put_varint_bytes(Some(value));
    }
}

/// One record read from a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its offset: the batch's base offset plus the record's offset delta
    /// (ignored when the record is written; -1 from [`Record::new`]).
    pub offset: i64,
    /// Milliseconds since the epoch: the batch's first timestamp plus the
    /// record's delta, or the batch's max timestamp when the batch carries
    /// log-append time.
    pub timestamp_ms: i64,
    /// The key; `None` is Kafka's null key.
    pub key: Option<Vec<u8>>,
    /// The value; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// The headers in order, duplicates kept. Names are raw bytes (Kafka
    /// means them as UTF-8 but does not check); a null header value, which
    /// Kafka allows, reads as empty.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Record {
    /// A record to produce of `key` and `value`, no headers, created now
    /// (its offset, -1, is the broker's to give).
    pub fn new(key: Option<Vec<u8>>, value: Option<Vec<u8>>) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX));
        Self {
            offset: -1,
            timestamp_ms: now,
            key,
            value,
            headers: Vec::new(),
        }
    }

    /// Adds a header after the others (a name already there is kept too).
    #[must_use]
    pub fn header(mut self, name: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the creation time, milliseconds since the epoch.
    #[must_use]
    pub fn at(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = timestamp_ms;
        self
    }
}

/// A record read back can be written again (to a dead-letter topic, say).
impl WireRecord for Record {
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
        self.timestamp_ms
    }
}

/// The header of one batch, as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// The offset of the batch's first record (before compaction).
    pub base_offset: i64,
    /// The offset of the batch's last record (before compaction):
    /// `base_offset + last_offset_delta`. A fetcher moves past a batch to
    /// `last_offset + 1`, even when compaction left no record in it.
    pub last_offset: i64,
    /// The leader epoch of the partition when the batch was appended.
    pub partition_leader_epoch: i32,
    /// The raw attributes (codec, timestamp type, transactional, control).
    pub attributes: i16,
    /// The timestamp the records' deltas are from.
    pub first_timestamp: i64,
    /// The largest timestamp in the batch (the append time when
    /// [`BatchHeader::is_log_append_time`]).
    pub max_timestamp: i64,
    /// The producer id, or -1.
    pub producer_id: i64,
    /// The producer epoch, or -1.
    pub producer_epoch: i16,
    /// The sequence of the batch's first record, or -1.
    pub base_sequence: i32,
    /// How many records the header says the batch holds.
    pub record_count: i32,
}

impl BatchHeader {
    /// The codec number (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn codec_id(&self) -> i16 {
        self.attributes & CODEC_MASK
    }

    /// Whether the timestamps are the broker's append time (attribute bit 3).
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & LOG_APPEND_TIME != 0
    }

    /// Whether the batch is part of a transaction (attribute bit 4).
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL != 0
    }

    /// Whether the batch holds a transaction marker rather than records
    /// (attribute bit 5).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL != 0
    }
}

/// One batch read: its header and its records, each read or failed alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBatch {
    /// The batch's header.
    pub header: BatchHeader,
    /// The records at or after the walk's `from_offset`, in order. Empty for
    /// a control batch (whose markers are not records for a consumer) and
    /// for a batch wholly before `from_offset`.
    pub records: Vec<Result<Record, RecordError>>,
}

/// A record, or the rest of a batch, that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    /// The first offset concerned.
    pub first_offset: i64,
    /// The last offset concerned: the same as `first_offset` for one
    /// undecodable record; the batch's last offset when the records'
    /// framing broke and the rest of the batch could not be read.
    pub last_offset: i64,
    /// What was wrong.
    pub error: DecodeError,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first_offset == self.last_offset {
            write!(f, "record at offset {}: {}", self.first_offset, self.error)
        } else {
            write!(
                f,
                "records at offsets {}..={}: {}",
                self.first_offset, self.last_offset, self.error
            )
        }
    }
}

impl std::error::Error for RecordError {}

/// A batch that could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    /// The batch's base offset (for a magic 0/1 message, its offset field).
    pub base_offset: i64,
    /// The batch's last offset when its header could be read that far, so a
    /// fetcher can move past it; `None` when it could not.
    pub last_offset: Option<i64>,
    /// What was wrong.
    pub error: DecodeError,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.last_offset {
            Some(last) => write!(
                f,
                "record batch at offsets {}..={}: {}",
                self.base_offset, last, self.error
            ),
            None => write!(f, "record batch at offset {}: {}", self.base_offset, self.error),
        }
    }
}

impl std::error::Error for BatchError {}

/// Walks the concatenated batches of one partition's record set (a fetch
/// answer's `records`), yielding each batch or its [`BatchError`].
///
/// The walk ends at the end of `bytes`, at a batch cut off by the end
/// (then [`RecordBatches::is_partial`] is true), or after a batch whose
/// length is negative (yielded as an error: nothing after it can be found).
/// Set [`RecordBatches::from_offset`] to skip the records before the fetch
/// position, and [`RecordBatches::max_decompressed_bytes`] to change the
/// decompression cap ([`MAX_DECOMPRESSED_BYTES`]).
///
/// Typical use: `let mut batches = read_record_batches(records).from_offset(position);`,
/// then `for batch in &mut batches { ... }`, then `batches.next_offset()` and
/// `batches.is_partial()` for where to fetch next.
pub fn read_record_batches(bytes: &[u8]) -> RecordBatches<'_> {
    RecordBatches {
        rest: bytes,
        from_offset: i64::MIN,
        max_decompressed: MAX_DECOMPRESSED_BYTES,
        partial: false,
        done: false,
        next_offset: None,
    }
}

/// The iterator of [`read_record_batches`]. Iterate it by `&mut` to ask
/// [`RecordBatches::is_partial`] and [`RecordBatches::next_offset`] after.
#[derive(Debug, Clone)]
pub struct RecordBatches<'a> {
    rest: &'a [u8],
    from_offset: i64,
    max_decompressed: usize,
    partial: bool,
    done: bool,
    next_offset: Option<i64>,
}

impl RecordBatches<'_> {
    /// Skips records (and record errors) before `offset`: a fetch from
    /// inside a batch gets the whole batch. A batch wholly before `offset`
    /// is yielded with no records, and is neither checked nor decompressed.
    #[must_use]
    pub fn from_offset(mut self, offset: i64) -> Self {
        self.from_offset = offset;
        self
    }

    /// Caps how many bytes one batch's records may decompress to; a batch
    /// over it is a [`BatchError`].
    #[must_use]
    pub fn max_decompressed_bytes(mut self, max: usize) -> Self {
        self.max_decompressed = max;
        self
    }

    /// Whether the walk ended inside a batch: the record set was cut off
    /// (as a broker does at `max_bytes`). With no batch yielded, this tells
    /// "the first batch is larger than what was fetched" from "nothing there".
    pub fn is_partial(&self) -> bool {
        self.partial
    }

    /// The offset after the last batch walked so far (read or failed, as
    /// far as its header tells): where the next fetch starts. `None` before
    /// any such batch.
    pub fn next_offset(&self) -> Option<i64> {
        self.next_offset
    }

    /// Reads one whole batch (the bytes after its length field).
    fn batch(&self, base_offset: i64, bytes: &[u8]) -> Result<RecordBatch, BatchError> {
        let fail = |last_offset: Option<i64>, error: String| BatchError {
            base_offset,
            last_offset,
            error: DecodeError::new(error),
        };
        let mut r = Reader::new(bytes);
        let partition_leader_epoch = r.i32().map_err(|e| fail(None, format!("header: {e}")))?;
        let magic = r.i8().map_err(|e| fail(None, format!("header: {e}")))?;
        if magic != 2 {
            // A magic 0/1 message's offset field is its last offset.
            let last = matches!(magic, 0 | 1).then_some(base_offset);
            return Err(fail(
                last,
                format!(
                    "message format v{magic} (magic {magic}) is not read: only record batch v2 \
                     (magic 2, Kafka 0.11 and later) is; old message sets need the broker to \
                     convert them"
                ),
            ));
        }
        let crc = r.u32().map_err(|e| fail(None, format!("header: {e}")))?;
        let checked = r.rest();
        let short = |_| {
            fail(
                None,
                format!(
                    "header cut short: {} bytes, {HEADER_AFTER_LENGTH} wanted",
                    bytes.len()
                ),
            )
        };
        let attributes = r.i16().map_err(short)?;
        let last_offset_delta = r.i32().map_err(short)?;
        let last_offset = base_offset.wrapping_add(i64::from(last_offset_delta));
        let short = |_| {
            fail(
                Some(last_offset),
                format!(
                    "header cut short: {} bytes, {HEADER_AFTER_LENGTH} wanted",
                    bytes.len()
                ),
            )
        };
        let header = BatchHeader {
            base_offset,
            last_offset,
            partition_leader_epoch,
            attributes,
            first_timestamp: r.i64().map_err(short)?,
            max_timestamp: r.i64().map_err(short)?,
            producer_id: r.i64().map_err(short)?,
            producer_epoch: r.i16().map_err(short)?,
            base_sequence: r.i32().map_err(short)?,
            record_count: r.i32().map_err(short)?,
        };
        let batch = |records| RecordBatch { header, records };
        if last_offset < self.from_offset {
            return Ok(batch(Vec::new()));
        }
        let actual = crc32c::crc32c(checked);
        if actual != crc {
            return Err(fail(
                Some(last_offset),
                format!("CRC-32C mismatch: the batch says {crc:#010x}, its bytes give {actual:#010x}"),
            ));
        }
        if header.is_control() {
            return Ok(batch(Vec::new()));
        }
        if header.record_count < 0 {
            return Err(fail(
                Some(last_offset),
                format!("negative record count {}", header.record_count),
            ));
        }
        let records = decompress(header.codec_id(), r.rest(), self.max_decompressed)
            .map_err(|e| fail(Some(last_offset), e.to_string()))?;
        Ok(batch(read_records(&header, &records, self.from_offset)))
    }
}

impl Iterator for RecordBatches<'_> {
    type Item = Result<RecordBatch, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.rest.is_empty() {
            return None;
        }
        let mut r = Reader::new(self.rest);
        let (Ok(base_offset), Ok(length)) = (r.i64(), r.i32()) else {
            return self.cut_off();
        };
        let Ok(length) = usize::try_from(length) else {
            self.done = true;
            return Some(Err(BatchError {
                base_offset,
                last_offset: None,
                error: DecodeError::new(format!(
                    "negative batch length {length}: the rest of the record set ({} bytes) cannot be \
                     framed",
                    self.rest.len().saturating_sub(BATCH_PREFIX)
                )),
            }));
        };
        let Ok(bytes) = r.take(length) else {
            return self.cut_off();
        };
        self.rest = r.rest();
        let item = self.batch(base_offset, bytes);
        let last = match &item {
            Ok(batch) => Some(batch.header.last_offset),
            Err(error) => error.last_offset,
        };
        if let Some(next) = last.map(|last| last.saturating_add(1)) {
            self.next_offset = Some(self.next_offset.map_or(next, |seen| seen.max(next)));
        }
        Some(item)
    }
}

impl RecordBatches<'_> {
    fn cut_off(&mut self) -> Option<Result<RecordBatch, BatchError>> {
        self.partial = true;
        self.done = true;
        None
    }
}

/// Reads the records of a batch (decompressed), each failing alone.
fn read_records(header: &BatchHeader, bytes: &[u8], from_offset: i64) -> Vec<Result<Record, RecordError>> {
    let count = usize::try_from(header.record_count).unwrap_or(0);
    // The count is checked against the bytes before it sizes anything.
    let mut records = Vec::with_capacity(count.min(bytes.len() / MIN_RECORD_BYTES));
    let mut r = Reader::new(bytes);
    // Where the next record is expected, for one whose offset delta is unreadable.
    let mut expected = header.base_offset;
    for index in 0..count {
        let framed = if r.is_empty() {
            Err(DecodeError::new(format!(
                "the batch declares {count} records, its bytes hold {index}"
            )))
        } else {
            r.varint().and_then(|len| {
                let len = usize::try_from(len)
                    .map_err(|_| DecodeError::new(format!("record {index} has negative length {len}")))?;
                r.take(len).map_err(|e| {
                    DecodeError::new(format!("record {index} of {count} runs past the batch: {e}"))
                })
            })
        };
        let body = match framed {
            Ok(body) => body,
            Err(error) => {
                // Where the next record starts is unknown: the rest is lost.
                if header.last_offset >= from_offset {
                    records.push(Err(RecordError {
                        first_offset: expected.max(from_offset),
                        last_offset: header.last_offset.max(expected),
                        error,
                    }));
                }
                break;
            }
        };
        match read_record(header, body) {
            Ok(record) => {
                expected = record.offset.wrapping_add(1);
                if record.offset >= from_offset {
                    records.push(Ok(record));
                }
            }
            Err((offset, error)) => {
                let offset = offset.unwrap_or(expected);
                expected = offset.wrapping_add(1);
                if offset >= from_offset {
                    records.push(Err(RecordError {
                        first_offset: offset,
                        last_offset: offset,
                        error,
                    }));
                }
            }
        }
    }
    records
}

/// Reads one record's body (what its length prefix frames). An error
/// carries the record's offset when the offset delta could be read.
fn read_record(header: &BatchHeader, body: &[u8]) -> Result<Record, (Option<i64>, DecodeError)> {
    let mut r = Reader::new(body);
    let early = |what: &str, e: DecodeError| (None, DecodeError::new(format!("record {what}: {e}")));
    r.i8().map_err(|e| early("attributes", e))?;
    let timestamp_delta = r.varlong().map_err(|e| early("timestamp delta", e))?;
    let offset_delta = r.varint().map_err(|e| early("offset delta", e))?;
    let offset = header.base_offset.wrapping_add(i64::from(offset_delta));
    let fail = |what: &str, e: DecodeError| (Some(offset), DecodeError::new(format!("record {what}: {e}")));
    let key = r.varint_bytes().map_err(|e| fail("key", e))?.map(<[u8]>::to_vec);
    let value = r
        .varint_bytes()
        .map_err(|e| fail("value", e))?
        .map(<[u8]>::to_vec);
    let count = r.varint().map_err(|e| fail("header count", e))?;
    let count = usize::try_from(count)
        .ok()
        .filter(|count| count.saturating_mul(MIN_HEADER_BYTES) <= r.remaining())
        .ok_or_else(|| {
            fail(
                "header count",
                DecodeError::new(format!("{count} headers in {} bytes", r.remaining())),
            )
        })?;
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let name = r
            .varint_bytes()
            .map_err(|e| fail("header name", e))?
            .ok_or_else(|| fail("header name", DecodeError::new("null")))?;
        let value = r.varint_bytes().map_err(|e| fail("header value", e))?;
        headers.push((name.to_vec(), value.unwrap_or_default().to_vec()));
    }
    if !r.is_empty() {
        return Err(fail(
            "length",
            DecodeError::new(format!("{} bytes left over after the headers", r.remaining())),
        ));
    }
    let timestamp_ms = if header.is_log_append_time() {
        header.max_timestamp
    } else {
        header.first_timestamp.wrapping_add(timestamp_delta)
    };
    Ok(Record {
        offset,
        timestamp_ms,
        key,
        value,
        headers,
    })
}

/// The records of a batch, decompressed with at most `max` bytes out.
#[cfg_attr(
    not(any(
        feature = "compression-gzip",
        feature = "compression-lz4",
        feature = "compression-snappy",
        feature = "compression-zstd"
    )),
    allow(unused_variables)
)]
fn decompress(codec: i16, bytes: &[u8], max: usize) -> Result<Cow<'_, [u8]>, DecodeError> {
    match codec {
        0 => Ok(Cow::Borrowed(bytes)),
        #[cfg(feature = "compression-gzip")]
        1 => read_capped("gzip", flate2::read::MultiGzDecoder::new(bytes), max).map(Cow::Owned),
        #[cfg(feature = "compression-snappy")]
        2 => snappy(bytes, max).map(Cow::Owned),
        #[cfg(feature = "compression-lz4")]
        3 => lz4(bytes, max).map(Cow::Owned),
        #[cfg(feature = "compression-zstd")]
        4 => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(bytes)
                .map_err(|e| DecodeError::new(format!("zstd: {e}")))?;
            // zstd allocates the window a frame declares before it decodes
            // a byte: refuse one larger than the cap allows.
            decoder
                .window_log_max(zstd_window_log_max(max))
                .map_err(|e| DecodeError::new(format!("zstd: {e}")))?;
            read_capped("zstd", decoder, max).map(Cow::Owned)
        }
        #[cfg(not(feature = "compression-gzip"))]
        1 => Err(not_compiled("gzip", "compression-gzip")),
        #[cfg(not(feature = "compression-snappy"))]
        2 => Err(not_compiled("snappy", "compression-snappy")),
        #[cfg(not(feature = "compression-lz4"))]
        3 => Err(not_compiled("lz4", "compression-lz4")),
        #[cfg(not(feature = "compression-zstd"))]
        4 => Err(not_compiled("zstd", "compression-zstd")),
        other => Err(DecodeError::new(format!("unknown compression codec {other}"))),
    }
}

#[cfg_attr(
    all(
        feature = "compression-gzip",
        feature = "compression-lz4",
        feature = "compression-snappy",
        feature = "compression-zstd"
    ),
    allow(dead_code)
)]
fn not_compiled(codec: &str, feature: &str) -> DecodeError {
    DecodeError::new(format!(
        "the batch is compressed with {codec}, which this build cannot read (Cargo feature `{feature}`)"
    ))
}

#[cfg(any(
    feature = "compression-gzip",
    feature = "compression-lz4",
    feature = "compression-snappy",
    feature = "compression-zstd"
))]
fn too_big(codec: &str, max: usize) -> DecodeError {
    DecodeError::new(format!(
        "{codec}: the records decompress to more than {max} bytes"
    ))
}

/// The largest zstd window (log 2) read under a cap of `max` bytes: twice
/// the cap, but at least 2^23 (8 MiB, the largest window zstd's levels
/// 1-19 write, so no batch from a usual producer is refused for it) and at
/// most 2^27 (zstd's default limit, which the default cap reaches). Without
/// it a 150-byte batch could make zstd allocate up to 128 MiB whatever the
/// cap.
#[cfg(feature = "compression-zstd")]
fn zstd_window_log_max(max: usize) -> u32 {
    let cap_log = usize::BITS - max.saturating_sub(1).leading_zeros();
    (cap_log + 1).clamp(23, 27)
}

/// Reads `reader` to its end, failing past `max` bytes (it stops reading
/// there: a bomb costs at most `max + 1` bytes).
#[cfg(any(
    feature = "compression-gzip",
    feature = "compression-lz4",
    feature = "compression-zstd"
))]
fn read_capped(codec: &str, reader: impl std::io::Read, max: usize) -> Result<Vec<u8>, DecodeError> {
    use std::io::Read;
    let mut out = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::new(format!("{codec}: {e}")))?;
    if out.len() > max {
        return Err(too_big(codec, max));
    }
    Ok(out)
}

/// An LZ4 frame, as Kafka writes it since magic 1.
#[cfg(feature = "compression-lz4")]
fn lz4(bytes: &[u8], max: usize) -> Result<Vec<u8>, DecodeError> {
    let mut decoder = lz4::Decoder::new(bytes).map_err(|e| DecodeError::new(format!("lz4: {e}")))?;
    let out = read_capped("lz4", &mut decoder, max)?;
    decoder
        .finish()
        .1
        .map_err(|_| DecodeError::new("lz4: the frame is cut short"))?;
    Ok(out)
}

/// Snappy as Kafka's producers write it: in xerial's framing (Java's
/// `SnappyOutputStream`: a 16-byte header, then blocks of a big-endian
/// `u32` length and raw snappy), or raw snappy (librdkafka, this writer).
/// Raw snappy declares its size up front; it is checked against the cap
/// and against how far snappy can expand the bytes there before anything
/// is allocated.
#[cfg(feature = "compression-snappy")]
fn snappy(bytes: &[u8], max: usize) -> Result<Vec<u8>, DecodeError> {
    const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
    const XERIAL_HEADER: usize = 16;
    let mut out = Vec::new();
    if bytes.starts_with(XERIAL_MAGIC) {
        let mut r = Reader::new(bytes);
        r.take(XERIAL_HEADER)
            .map_err(|e| DecodeError::new(format!("snappy: xerial header: {e}")))?;
        while !r.is_empty() {
            let block = r
                .u32()
                .and_then(|len| r.take(usize::try_from(len).unwrap_or(usize::MAX)))
                .map_err(|e| DecodeError::new(format!("snappy: xerial block: {e}")))?;
            snappy_block(block, &mut out, max)?;
        }
    } else {
        snappy_block(bytes, &mut out, max)?;
    }
    Ok(out)
}

#[cfg(feature = "compression-snappy")]
fn snappy_block(block: &[u8], out: &mut Vec<u8>, max: usize) -> Result<(), DecodeError> {
    /// No snappy element expands more than this (a 3-byte copy of 64 bytes).
    const MAX_EXPANSION: usize = 22;
    let len = snap::raw::decompress_len(block).map_err(|e| DecodeError::new(format!("snappy: {e}")))?;
    if len > max.saturating_sub(out.len()) {
        return Err(too_big("snappy", max));
    }
    if len > block.len().saturating_mul(MAX_EXPANSION) {
        return Err(DecodeError::new(format!(
            "snappy: {} bytes claim to decompress to {len}",
            block.len()
        )));
    }
    let start = out.len();
    out.resize(start + len, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, out.get_mut(start..).unwrap_or_default())
        .map_err(|e| DecodeError::new(format!("snappy: {e}")))?;
    out.truncate(start + written);
    Ok(())
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use proptest::prelude::*;

    use super::*;

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

    fn rec(key: &[u8], value: &[u8], time: i64) -> Rec {
        Rec {
            key: Some(key.to_vec()),
            value: Some(value.to_vec()),
            headers: vec![],
            time,
        }
    }

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

    /// A batch of `records` at `base_offset`.
    fn batch(records: &[Rec], compression: Compression, base_offset: i64) -> Vec<u8> {
        let mut buf = Vec::new();
        write_record_batch(&mut buf, records, compression, ProducerStamp::NONE).unwrap();
        buf[..8].copy_from_slice(&base_offset.to_be_bytes());
        buf
    }

    /// Recomputes the CRC of the one batch in `buf` after an edit.
    fn fix_crc(buf: &mut [u8]) {
        let crc = crc32c::crc32c(&buf[21..]);
        buf[17..21].copy_from_slice(&crc.to_be_bytes());
    }

    fn expected(records: &[Rec], base_offset: i64) -> Vec<Record> {
        (base_offset..)
            .zip(records)
            .map(|(offset, r)| Record {
                offset,
                timestamp_ms: r.time,
                key: r.key.clone(),
                value: r.value.clone(),
                headers: r.headers.clone(),
            })
            .collect()
    }

    fn read_ok(bytes: &[u8]) -> Vec<Record> {
        let mut batches = read_record_batches(bytes);
        let records = (&mut batches)
            .flat_map(|b| b.unwrap().records)
            .map(Result::unwrap)
            .collect();
        assert!(!batches.is_partial());
        records
    }

    /// The batch of two records, byte by byte where it matters: sizes,
    /// counts, the CRC over the batch, each record's fields.
    #[test]
    fn a_batch_is_laid_out_as_kafka_reads_it() {
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
        let stamp = ProducerStamp {
            producer_id: 77,
            producer_epoch: 3,
            base_sequence: 12,
        };
        write_record_batch(&mut buf, &records, Compression::None, stamp).unwrap();
        let mut r = Reader::new(&buf);
        assert_eq!(r.i64().unwrap(), 0);
        assert_eq!(usize::try_from(r.i32().unwrap()).unwrap(), r.remaining());
        assert_eq!((r.i32().unwrap(), r.i8().unwrap()), (-1, 2));
        let crc = r.u32().unwrap();
        assert_eq!(crc, crc32c::crc32c(r.rest()));
        assert_eq!((r.i16().unwrap(), r.i32().unwrap()), (0, 1));
        assert_eq!((r.i64().unwrap(), r.i64().unwrap()), (1_000, 1_005));
        assert_eq!(
            (r.i64().unwrap(), r.i16().unwrap(), r.i32().unwrap()),
            (77, 3, 12)
        );
        assert_eq!(r.i32().unwrap(), 2);
        // length 19, attributes, time delta 0, offset delta 0, key "E-1",
        // value "{}", one header ce-id = 1
        let first = [
            38, 0, 0, 0, 6, b'E', b'-', b'1', 4, b'{', b'}', 2, 10, b'c', b'e', b'-', b'i', b'd', 2, b'1',
        ];
        assert_eq!(&r.rest()[..first.len()], first);
        // length 6, attributes, time delta 5, offset delta 1, no key, no value, no headers
        assert_eq!(&r.rest()[first.len()..], [12, 0, 10, 2, 1, 1, 0]);

        let read: Vec<_> = read_record_batches(&buf).collect();
        let [Ok(batch)] = read.as_slice() else {
            panic!("{read:?}")
        };
        assert_eq!(batch.header.producer_id, 77);
        assert_eq!(batch.header.producer_epoch, 3);
        assert_eq!(batch.header.base_sequence, 12);
        assert_eq!((batch.header.base_offset, batch.header.last_offset), (0, 1));
        let got: Vec<_> = batch.records.iter().cloned().map(Result::unwrap).collect();
        assert_eq!(got, expected(&records, 0));
    }

    #[test]
    fn an_owned_record_keeps_its_headers_in_order_and_reads_back() {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let record = Record::new(Some(b"P-1".to_vec()), Some(b"{}".to_vec()))
            .header("ce_type", "a")
            .header("ce_type", "b")
            .header(vec![0xff], &b"\x00"[..]);
        assert!(i128::from(record.timestamp_ms) >= i128::try_from(before).unwrap());
        let record = record.at(1_234);
        let mut buf = Vec::new();
        write_record_batch(
            &mut buf,
            std::slice::from_ref(&record),
            Compression::None,
            ProducerStamp::NONE,
        )
        .unwrap();
        let read = read_ok(&buf);
        assert_eq!(read[0].key, record.key);
        assert_eq!(read[0].value, record.value);
        assert_eq!(read[0].headers, record.headers);
        assert_eq!(read[0].timestamp_ms, 1_234);
        assert_eq!(read[0].headers[1], (b"ce_type".to_vec(), b"b".to_vec()));
    }

    #[test]
    fn the_attributes_name_the_codec_and_each_codec_reads_back() {
        let records: Vec<_> = (0..50)
            .map(|i| rec(format!("key-{i}").as_bytes(), &[b'x'; 100], 1_000 + i))
            .collect();
        for compression in codecs() {
            let buf = batch(&records, compression, 500);
            assert_eq!(i16::from_be_bytes([buf[21], buf[22]]), compression.codec_id());
            assert_eq!(read_ok(&buf), expected(&records, 500), "{compression:?}");
        }
    }

    #[test]
    fn several_batches_are_read_in_order_and_next_offset_moves_past_them() {
        let mut set = batch(&[rec(b"a", b"1", 1), rec(b"b", b"2", 2)], Compression::None, 10);
        set.extend(batch(&[rec(b"c", b"3", 3)], Compression::None, 12));
        let mut batches = read_record_batches(&set);
        let offsets: Vec<_> = (&mut batches)
            .flat_map(|b| b.unwrap().records)
            .map(|r| r.unwrap().offset)
            .collect();
        assert_eq!(offsets, [10, 11, 12]);
        assert_eq!(batches.next_offset(), Some(13));
        assert!(!batches.is_partial());
    }

    #[test]
    fn a_batch_cut_off_at_the_end_ends_the_walk_as_partial() {
        let mut set = batch(&[rec(b"a", b"1", 1)], Compression::None, 0);
        let whole = set.len();
        set.extend(batch(&[rec(b"b", b"2", 2)], Compression::None, 1));
        for cut in 0..=set.len() {
            let mut batches = read_record_batches(&set[..cut]);
            let read: Vec<_> = (&mut batches).map(Result::unwrap).collect();
            let complete = usize::from(cut >= whole) + usize::from(cut == set.len());
            assert_eq!(read.len(), complete, "{cut}");
            assert_eq!(
                batches.is_partial(),
                cut != 0 && cut != whole && cut != set.len(),
                "{cut}"
            );
        }
        // Nothing there is not partial.
        let mut empty = read_record_batches(&[]);
        assert!(empty.next().is_none());
        assert!(!empty.is_partial());
    }

    #[test]
    fn a_bad_crc_fails_that_batch_alone() {
        let mut set = batch(&[rec(b"a", b"1", 1), rec(b"b", b"2", 2)], Compression::None, 0);
        let last = set.len() - 1;
        set[last] ^= 0x01;
        set.extend(batch(&[rec(b"c", b"3", 3)], Compression::None, 2));
        let mut batches = read_record_batches(&set);
        let first = batches.next().unwrap().unwrap_err();
        assert_eq!((first.base_offset, first.last_offset), (0, Some(1)));
        assert!(first.to_string().contains("CRC"), "{first}");
        let second = batches.next().unwrap().unwrap();
        assert_eq!(second.records.len(), 1);
        assert!(batches.next().is_none());
        assert_eq!(batches.next_offset(), Some(3));
    }

    #[test]
    fn an_old_message_format_fails_that_batch_alone_and_says_so() {
        // A magic 1 message: offset, size, crc, magic 1, attributes, timestamp, key, value.
        let mut v1 = Vec::new();
        v1.put_i64(7);
        let size_at = v1.reserve_at(4);
        v1.put_i32(0); // crc
        v1.put_i8(1);
        v1.put_i8(0);
        v1.put_i64(0);
        v1.put_i32(-1);
        v1.put_bytes(b"old");
        v1.patch_size(size_at, size_at + 4);
        v1.extend(batch(&[rec(b"c", b"3", 3)], Compression::None, 8));
        let mut batches = read_record_batches(&v1);
        let old = batches.next().unwrap().unwrap_err();
        assert_eq!((old.base_offset, old.last_offset), (7, Some(7)));
        assert!(old.to_string().contains("magic 1"), "{old}");
        assert_eq!(batches.next().unwrap().unwrap().records.len(), 1);
    }

    fn with_attributes(mut buf: Vec<u8>, attributes: i16) -> Vec<u8> {
        buf[21..23].copy_from_slice(&attributes.to_be_bytes());
        fix_crc(&mut buf);
        buf
    }

    #[test]
    fn an_unknown_codec_fails_that_batch_alone() {
        let mut set = with_attributes(batch(&[rec(b"a", b"1", 1)], Compression::None, 0), 6);
        set.extend(batch(&[rec(b"c", b"3", 3)], Compression::None, 1));
        let mut batches = read_record_batches(&set);
        let unknown = batches.next().unwrap().unwrap_err();
        assert!(
            unknown.to_string().contains("unknown compression codec 6"),
            "{unknown}"
        );
        assert!(batches.next().unwrap().is_ok());
    }

    #[cfg(not(feature = "compression-zstd"))]
    #[test]
    fn a_codec_not_compiled_in_names_its_feature() {
        let set = with_attributes(batch(&[rec(b"a", b"1", 1)], Compression::None, 0), 4);
        let error = read_record_batches(&set).next().unwrap().unwrap_err();
        assert!(error.to_string().contains("`compression-zstd`"), "{error}");
    }

    #[test]
    fn a_decompression_bomb_stops_at_the_cap() {
        let records = [rec(b"k", &vec![0; 1 << 20], 1)];
        for compression in codecs().into_iter().skip(1) {
            let buf = batch(&records, compression, 0);
            assert!(buf.len() < 100_000, "{compression:?}: {}", buf.len());
            let error = read_record_batches(&buf)
                .max_decompressed_bytes(64 * 1024)
                .next()
                .unwrap()
                .unwrap_err();
            assert!(error.to_string().contains("more than 65536 bytes"), "{error}");
            assert_eq!(read_ok(&buf).len(), 1);
        }
    }

    /// Found by `cargo xtask fuzz` (record_batches): a frame declaring a
    /// 64 MiB window and holding 5 bytes made zstd allocate the window.
    #[cfg(feature = "compression-zstd")]
    #[test]
    fn zstd_refuses_a_window_larger_than_the_cap_allows() {
        // Magic, no content size, the window descriptor, one raw last block of "hello".
        let frame = |window_descriptor: u8| {
            let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0x00, window_descriptor, 0x29, 0, 0];
            frame.extend_from_slice(b"hello");
            frame
        };
        let window_64_mib = frame(0x80);
        let window_8_mib = frame(0x68);
        let error = decompress(4, &window_64_mib, 1 << 20).unwrap_err();
        assert!(error.to_string().contains("zstd"), "{error}");
        assert_eq!(&*decompress(4, &window_8_mib, 1 << 20).unwrap(), b"hello");
        assert_eq!(
            &*decompress(4, &window_64_mib, MAX_DECOMPRESSED_BYTES).unwrap(),
            b"hello"
        );
        assert_eq!(zstd_window_log_max(MAX_DECOMPRESSED_BYTES), 27);
        assert_eq!(zstd_window_log_max(0), 23);
        assert_eq!(zstd_window_log_max(usize::MAX), 27);
    }

    #[cfg(feature = "compression-snappy")]
    #[test]
    fn snappy_reads_xerial_framing_and_refuses_impossible_sizes() {
        let plain: Vec<u8> = (0..100_000_u32).flat_map(|i| (i % 251).to_be_bytes()).collect();
        let mut framed = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
        for chunk in plain.chunks(32 * 1024) {
            let block = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
            framed.put_i32(i32::try_from(block.len()).unwrap());
            framed.extend_from_slice(&block);
        }
        assert_eq!(snappy(&framed, usize::MAX).unwrap(), plain);
        assert!(snappy(&framed, plain.len() - 1).is_err());
        assert!(snappy(&framed[..framed.len() - 1], usize::MAX).is_err());
        // A 6-byte block claiming 2^28 bytes allocates nothing.
        let mut claim = Vec::new();
        claim.put_varlong(1 << 27);
        assert!(snappy(&claim, usize::MAX).is_err());
    }

    /// A record with a non-UTF-8 header name and duplicate names, and a
    /// record with a corrupted varint between two good ones.
    #[test]
    fn a_bad_record_fails_alone_with_its_offset() {
        let records = [
            Rec {
                key: Some(b"k0".to_vec()),
                value: Some(b"v0".to_vec()),
                headers: vec![
                    (vec![0xff, 0xfe, b'x'], b"1".to_vec()),
                    (b"dup".to_vec(), b"a".to_vec()),
                    (b"dup".to_vec(), b"b".to_vec()),
                ],
                time: 10,
            },
            rec(b"k1", b"v1", 11),
            rec(b"k2", b"v2", 12),
        ];
        let mut buf = batch(&records, Compression::None, 100);
        // The second record: length, attributes, time delta, offset delta,
        // then its key length, made an overlong varint (all continuation bits).
        let first_len = usize::try_from(Reader::new(&buf[61..]).varint().unwrap()).unwrap();
        let second = 61 + 1 + first_len;
        let second_len = usize::try_from(Reader::new(&buf[second..]).varint().unwrap()).unwrap();
        buf[second + 4..second + 1 + second_len].fill(0xff);
        fix_crc(&mut buf);
        let read: Vec<_> = read_record_batches(&buf).collect();
        let [Ok(batch)] = read.as_slice() else {
            panic!("{read:?}")
        };
        let want = expected(&records, 100);
        assert_eq!(batch.records.len(), 3);
        assert_eq!(batch.records[0].as_ref().unwrap(), &want[0]);
        let bad = batch.records[1].as_ref().unwrap_err();
        assert_eq!((bad.first_offset, bad.last_offset), (101, 101));
        assert!(bad.to_string().contains("offset 101"), "{bad}");
        assert_eq!(batch.records[2].as_ref().unwrap(), &want[2]);

        // A key length past the record's own length fails that record alone too.
        let mut buf = batch_bytes(&records, 100);
        buf[second + 4] = 0x7e; // key length 63
        fix_crc(&mut buf);
        let batch = read_record_batches(&buf).next().unwrap().unwrap();
        assert!(batch.records[0].is_ok() && batch.records[2].is_ok());
        assert_eq!(batch.records[1].as_ref().unwrap_err().first_offset, 101);
    }

    fn batch_bytes(records: &[Rec], base: i64) -> Vec<u8> {
        batch(records, Compression::None, base)
    }

    #[test]
    fn a_record_with_an_unreadable_offset_gets_the_next_expected_one() {
        let records = [rec(b"k0", b"v0", 0), rec(b"k1", b"v1", 1), rec(b"k2", b"v2", 2)];
        let mut buf = batch_bytes(&records, 5);
        let first_len = usize::try_from(Reader::new(&buf[61..]).varint().unwrap()).unwrap();
        let second = 61 + 1 + first_len;
        let second_len = usize::try_from(Reader::new(&buf[second..]).varint().unwrap()).unwrap();
        // Everything after the attributes is continuation bytes.
        buf[second + 2..second + 1 + second_len].fill(0x80);
        fix_crc(&mut buf);
        let batch = read_record_batches(&buf).next().unwrap().unwrap();
        let bad = batch.records[1].as_ref().unwrap_err();
        assert_eq!((bad.first_offset, bad.last_offset), (6, 6));
        assert_eq!(batch.records[2].as_ref().unwrap().offset, 7);
    }

    #[test]
    fn broken_record_framing_fails_the_rest_of_the_batch_as_one_range() {
        let records: Vec<_> = (0..4).map(|i| rec(b"k", b"v", i)).collect();
        let mut buf = batch_bytes(&records, 20);
        let first_len = usize::try_from(Reader::new(&buf[61..]).varint().unwrap()).unwrap();
        let second = 61 + 1 + first_len;
        buf[second] = 0x7e; // the second record claims 63 bytes: past the batch
        fix_crc(&mut buf);
        let batch = read_record_batches(&buf).next().unwrap().unwrap();
        assert_eq!(batch.records.len(), 2);
        assert_eq!(batch.records[0].as_ref().unwrap().offset, 20);
        let rest = batch.records[1].as_ref().unwrap_err();
        assert_eq!((rest.first_offset, rest.last_offset), (21, 23));

        // A count far above what the bytes hold: no allocation from it, and
        // the missing records are one error.
        let mut buf = batch_bytes(&records, 20);
        buf[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        fix_crc(&mut buf);
        let batch = read_record_batches(&buf).next().unwrap().unwrap();
        assert_eq!(batch.records.len(), 5);
        let missing = batch.records[4].as_ref().unwrap_err();
        assert_eq!(missing.first_offset, 24);
        assert!(missing.to_string().contains("hold 4"), "{missing}");
    }

    #[test]
    fn control_batches_are_skipped_but_move_the_position() {
        let mut set = with_attributes(batch_bytes(&[rec(b"", b"", 0)], 3), CONTROL | TRANSACTIONAL);
        set.extend(batch_bytes(&[rec(b"a", b"1", 1)], 4));
        let mut batches = read_record_batches(&set);
        let control = batches.next().unwrap().unwrap();
        assert!(control.header.is_control() && control.header.is_transactional());
        assert!(control.records.is_empty());
        assert_eq!(control.header.last_offset, 3);
        assert_eq!(batches.next().unwrap().unwrap().records.len(), 1);
        assert_eq!(batches.next_offset(), Some(5));
    }

    #[test]
    fn log_append_time_gives_every_record_the_max_timestamp() {
        let records = [rec(b"a", b"1", 100), rec(b"b", b"2", 90)];
        let mut buf = batch_bytes(&records, 0);
        buf[35..43].copy_from_slice(&5_000_i64.to_be_bytes());
        let buf = with_attributes(buf, LOG_APPEND_TIME);
        let times: Vec<_> = read_ok(&buf).iter().map(|r| r.timestamp_ms).collect();
        assert_eq!(times, [5_000, 5_000]);
        let plain: Vec<_> = read_ok(&batch_bytes(&records, 0))
            .iter()
            .map(|r| r.timestamp_ms)
            .collect();
        assert_eq!(plain, [100, 90]);
    }

    #[test]
    fn records_before_from_offset_are_skipped() {
        let records: Vec<_> = (0..5).map(|i| rec(b"k", b"v", i)).collect();
        let mut set = batch_bytes(&records, 10);
        set.extend(batch_bytes(&records, 15));
        let offsets = |from| {
            read_record_batches(&set)
                .from_offset(from)
                .flat_map(|b| b.unwrap().records)
                .map(|r| r.unwrap().offset)
                .collect::<Vec<_>>()
        };
        assert_eq!(offsets(13), [13, 14, 15, 16, 17, 18, 19]);
        assert_eq!(offsets(17), [17, 18, 19]);
        assert!(offsets(20).is_empty());
        // A batch wholly before is not even checked.
        let mut corrupt = batch_bytes(&records, 10);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        assert!(
            read_record_batches(&corrupt)
                .from_offset(15)
                .next()
                .unwrap()
                .is_ok()
        );
        assert!(
            read_record_batches(&corrupt)
                .from_offset(14)
                .next()
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn a_negative_batch_length_ends_the_walk_with_an_error() {
        let mut set = batch_bytes(&[rec(b"a", b"1", 1)], 0);
        let whole = set.len();
        set.extend(batch_bytes(&[rec(b"b", b"2", 2)], 1));
        set[whole + 8..whole + 12].copy_from_slice(&(-5_i32).to_be_bytes());
        let mut batches = read_record_batches(&set);
        assert!(batches.next().unwrap().is_ok());
        let error = batches.next().unwrap().unwrap_err();
        assert_eq!((error.base_offset, error.last_offset), (1, None));
        assert!(batches.next().is_none());
        assert!(!batches.is_partial());
        // A batch too short for its header fails alone.
        let mut short = Vec::new();
        short.put_i64(3);
        short.put_i32(10);
        short.extend_from_slice(&[0, 0, 0, 0, 2, 0, 0, 0, 0, 0]);
        short.extend(batch_bytes(&[rec(b"b", b"2", 2)], 4));
        let mut batches = read_record_batches(&short);
        assert!(
            batches
                .next()
                .unwrap()
                .unwrap_err()
                .to_string()
                .contains("cut short")
        );
        assert!(batches.next().unwrap().is_ok());
    }

    fn any_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), 0..max)
    }

    fn any_record() -> impl Strategy<Value = Rec> {
        (
            prop::option::of(any_bytes(40)),
            prop::option::of(any_bytes(200)),
            prop::collection::vec((any_bytes(12), any_bytes(20)), 0..5),
            any::<i64>(),
        )
            .prop_map(|(key, value, mut headers, time)| {
                // Sometimes a duplicate name.
                if let Some((name, _)) = headers.first().cloned()
                    && headers.len() > 2
                {
                    headers.push((name, b"again".to_vec()));
                }
                Rec {
                    key,
                    value,
                    headers,
                    time,
                }
            })
    }

    fn any_stamp() -> impl Strategy<Value = ProducerStamp> {
        prop_oneof![
            Just(ProducerStamp::NONE),
            (any::<i64>(), any::<i16>(), any::<i32>()).prop_map(
                |(producer_id, producer_epoch, base_sequence)| {
                    ProducerStamp {
                        producer_id,
                        producer_epoch,
                        base_sequence,
                    }
                }
            ),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn any_records_round_trip_with_every_codec(
            records in prop::collection::vec(any_record(), 1..12),
            stamp in any_stamp(),
            base in 0..i64::from(i32::MAX),
        ) {
            for compression in codecs() {
                let mut buf = Vec::new();
                write_record_batch(&mut buf, &records, compression, stamp).unwrap();
                buf[..8].copy_from_slice(&base.to_be_bytes());
                let mut batches = read_record_batches(&buf);
                let read: Vec<_> = (&mut batches).collect();
                prop_assert_eq!(read.len(), 1);
                let batch = read[0].as_ref().unwrap();
                prop_assert_eq!(batch.header.producer_id, stamp.producer_id);
                prop_assert_eq!(batch.header.producer_epoch, stamp.producer_epoch);
                prop_assert_eq!(batch.header.base_sequence, stamp.base_sequence);
                prop_assert_eq!(batch.header.codec_id(), compression.codec_id());
                let got: Vec<_> = batch.records.iter().cloned().map(Result::unwrap).collect();
                prop_assert_eq!(got, expected(&records, base));
                prop_assert_eq!(batches.next_offset(), Some(base + records.len() as i64));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in any_bytes(600), from in any::<i64>()) {
            for batch in read_record_batches(&bytes).from_offset(from) {
                let _ = batch.map(|b| b.records.len());
            }
        }

        #[test]
        fn mangled_batches_never_panic(
            records in prop::collection::vec(any_record(), 1..6),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            crc in any::<bool>(),
        ) {
            for compression in codecs() {
                let mut buf = batch(&records, compression, 0);
                for (at, byte) in &edits {
                    let at = at.index(buf.len());
                    buf[at] = *byte;
                }
                if crc && buf.len() > 21 {
                    fix_crc(&mut buf);
                }
                for batch in read_record_batches(&buf).max_decompressed_bytes(1 << 20) {
                    let _ = batch.map(|b| b.records.len());
                }
            }
        }

        #[test]
        fn a_cut_record_set_yields_the_whole_batches_before_the_cut(
            batches in prop::collection::vec(prop::collection::vec(any_record(), 1..4), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            for compression in codecs() {
                let mut set = Vec::new();
                let mut ends = Vec::new();
                let mut base = 0;
                for records in &batches {
                    set.extend(batch(records, compression, base));
                    base += records.len() as i64;
                    ends.push(set.len());
                }
                let cut = cut.index(set.len() + 1);
                let mut walk = read_record_batches(&set[..cut]);
                let read: Vec<_> = (&mut walk).map(Result::unwrap).collect();
                let whole = ends.iter().filter(|end| **end <= cut).count();
                prop_assert_eq!(read.len(), whole);
                prop_assert_eq!(walk.is_partial(), cut != 0 && !ends.contains(&cut));
                let mut offset = 0;
                for (records, batch) in batches.iter().zip(&read) {
                    let got: Vec<_> = batch.records.iter().cloned().map(Result::unwrap).collect();
                    prop_assert_eq!(got, expected(records, offset));
                    offset += records.len() as i64;
                }
            }
        }
    }
}
