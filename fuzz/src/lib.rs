//! The fuzz harnesses of `mes-kafka`'s decoders, shared by the targets in
//! `fuzz_targets/` and the seed writer in `examples/seeds.rs`.
//!
//! Besides "no input panics or aborts", every input is held to a memory
//! budget by [`Budgeted`], the global allocator of the fuzz binaries:
//!
//! - no single allocation may exceed [`MAX_ALLOCATION`] (as libFuzzer's
//!   `-malloc_limit_mb`, which only works under a sanitizer's allocator);
//! - the peak heap while one input is decoded may not exceed
//!   [`PEAK_RATIO`] times the bytes it could legitimately produce (the
//!   input, plus the decompression cap where records are decompressed)
//!   plus [`PEAK_SLACK`].
//!
//! Either breach aborts with a message, which libFuzzer reports as a crash
//! and saves the input for.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use mes_kafka::protocol::Request;
use mes_kafka::protocol::api_versions::ApiVersionsRequest;
use mes_kafka::protocol::consumer_protocol::{Assignment, Subscription, TopicPartitions};
use mes_kafka::protocol::create_topics::CreateTopicsRequest;
use mes_kafka::protocol::describe_groups::DescribeGroupsRequest;
use mes_kafka::protocol::fetch::FetchRequest;
use mes_kafka::protocol::find_coordinator::FindCoordinatorRequest;
use mes_kafka::protocol::heartbeat::HeartbeatRequest;
use mes_kafka::protocol::init_producer_id::InitProducerIdRequest;
use mes_kafka::protocol::join_group::JoinGroupRequest;
use mes_kafka::protocol::leave_group::LeaveGroupRequest;
use mes_kafka::protocol::list_groups::ListGroupsRequest;
use mes_kafka::protocol::list_offsets::ListOffsetsRequest;
use mes_kafka::protocol::metadata::MetadataRequest;
use mes_kafka::protocol::offset_commit::OffsetCommitRequest;
use mes_kafka::protocol::offset_fetch::OffsetFetchRequest;
use mes_kafka::protocol::produce::ProduceRequest;
use mes_kafka::protocol::record_batch::{
    Compression, Record, ProducerStamp, RecordBatches, read_record_batches, write_record_batch,
};
use mes_kafka::protocol::sasl::{SaslAuthenticateRequest, SaslHandshakeRequest};
use mes_kafka::protocol::sync_group::SyncGroupRequest;

/// The largest single allocation allowed: 64 MiB, as `-malloc_limit_mb=64`.
pub const MAX_ALLOCATION: usize = 64 << 20;
/// How many heap bytes one input may hold at its peak per byte it could
/// legitimately produce (see the module docs).
pub const PEAK_RATIO: usize = 128;
/// Heap every input may use whatever its size.
pub const PEAK_SLACK: usize = 256 << 10;
/// The decompression cap of the record-batch walks: far below
/// [`MAX_ALLOCATION`], so a legitimate capped batch never trips it.
pub const DECOMPRESSION_CAP: usize = 1 << 20;

/// The system allocator, counting the live heap and enforcing the limits.
pub struct Budgeted;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// The largest peak seen by [`budgeted`] so far, and its input's length,
/// for the "new heap peak" lines `cargo xtask fuzz` reports.
static MAX_PEAK: AtomicUsize = AtomicUsize::new(0);

#[global_allocator]
static ALLOCATOR: Budgeted = Budgeted;

fn die(what: &[u8], number: usize) -> ! {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = number;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(b"\n==mes-fuzz== ");
    let _ = err.write_all(what);
    let _ = err.write_all(&digits[at..]);
    let _ = err.write_all(b" bytes\n");
    std::process::abort();
}

fn grew(size: usize) {
    if size > MAX_ALLOCATION {
        die(b"single allocation over -malloc_limit_mb (64 MiB): ", size);
    }
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is passed on to `System` unchanged; only counters are
// updated around it.
unsafe impl GlobalAlloc for Budgeted {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `decode` and checks the heap it held at its peak against `legit`,
/// the bytes the input can legitimately make it produce.
pub fn budgeted(input_len: usize, legit: usize, decode: impl FnOnce()) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    decode();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    let budget = legit.saturating_mul(PEAK_RATIO).saturating_add(PEAK_SLACK);
    if peak > budget {
        die(
            b"heap peak over budget (PEAK_RATIO x legitimate bytes + PEAK_SLACK): ",
            peak,
        );
    }
    // Report a new maximum when it grows by more than an eighth.
    let max = MAX_PEAK.load(Ordering::Relaxed);
    if peak > max + max / 8 {
        MAX_PEAK.store(peak, Ordering::Relaxed);
        eprintln!("==mes-fuzz== new heap peak: {peak} bytes for a {input_len}-byte input");
    }
}

/// Formats a value without allocating, to run its `Debug` code too.
fn touch(value: &impl std::fmt::Debug) {
    let _ = write!(std::io::sink(), "{value:?}");
}

/// Walks record batches every way a fetcher does, to their end.
fn walk(batches: RecordBatches<'_>) {
    let mut batches = batches;
    for batch in &mut batches {
        match batch {
            Ok(batch) => {
                for record in &batch.records {
                    match record {
                        Ok(record) => touch(record),
                        Err(error) => {
                            let _ = write!(std::io::sink(), "{error}");
                        }
                    }
                }
                touch(&batch.header);
            }
            Err(error) => {
                let _ = write!(std::io::sink(), "{error}");
            }
        }
    }
    touch(&(batches.is_partial(), batches.next_offset()));
}

/// The APIs of the `answers` target: name and versions, in selector order.
pub const APIS: &[(&str, std::ops::RangeInclusive<i16>)] = &[
    (ApiVersionsRequest::NAME, ApiVersionsRequest::VERSIONS),
    (MetadataRequest::NAME, MetadataRequest::VERSIONS),
    (
        <ProduceRequest<'static>>::NAME,
        <ProduceRequest<'static>>::VERSIONS,
    ),
    (FetchRequest::NAME, FetchRequest::VERSIONS),
    (ListOffsetsRequest::NAME, ListOffsetsRequest::VERSIONS),
    (CreateTopicsRequest::NAME, CreateTopicsRequest::VERSIONS),
    (SaslHandshakeRequest::NAME, SaslHandshakeRequest::VERSIONS),
    (SaslAuthenticateRequest::NAME, SaslAuthenticateRequest::VERSIONS),
    (InitProducerIdRequest::NAME, InitProducerIdRequest::VERSIONS),
    (FindCoordinatorRequest::NAME, FindCoordinatorRequest::VERSIONS),
    (JoinGroupRequest::NAME, JoinGroupRequest::VERSIONS),
    (SyncGroupRequest::NAME, SyncGroupRequest::VERSIONS),
    (HeartbeatRequest::NAME, HeartbeatRequest::VERSIONS),
    (LeaveGroupRequest::NAME, LeaveGroupRequest::VERSIONS),
    (OffsetCommitRequest::NAME, OffsetCommitRequest::VERSIONS),
    (OffsetFetchRequest::NAME, OffsetFetchRequest::VERSIONS),
    (DescribeGroupsRequest::NAME, DescribeGroupsRequest::VERSIONS),
    (ListGroupsRequest::NAME, ListGroupsRequest::VERSIONS),
];

/// The selector bytes of `answers` for API `index` of [`APIS`] in `version`.
pub fn answer_selector(index: usize, version: i16) -> [u8; 2] {
    let (_, versions) = &APIS[index];
    let offset = version - versions.start();
    [index as u8, offset as u8]
}

fn decode<R: Request>(selector: u8, body: &[u8]) -> Option<R::Response>
where
    R::Response: std::fmt::Debug,
{
    let span = R::VERSIONS.end() - R::VERSIONS.start() + 1;
    let version = R::VERSIONS.start() + i16::from(selector) % span;
    match R::decode_response(version, body) {
        Ok(response) => {
            touch(&response);
            Some(response)
        }
        Err(error) => {
            let _ = write!(std::io::sink(), "{error}");
            None
        }
    }
}

/// `answers`: byte 0 picks the API ([`APIS`], modulo their number), byte 1
/// the version within its `VERSIONS` (modulo their number), the rest is
/// the answer's body. What an answer carries for another decoder (record
/// sets, group member metadata and assignments) is decoded too.
pub fn answers(data: &[u8]) {
    let [api, version, body @ ..] = data else {
        return;
    };
    let legit = body.len() + DECOMPRESSION_CAP;
    budgeted(data.len(), legit, || match usize::from(*api) % APIS.len() {
        0 => drop(decode::<ApiVersionsRequest>(*version, body)),
        1 => drop(decode::<MetadataRequest>(*version, body)),
        2 => drop(decode::<ProduceRequest<'static>>(*version, body)),
        3 => {
            if let Some(response) = decode::<FetchRequest>(*version, body) {
                for partition in response.topics.iter().flat_map(|t| &t.partitions) {
                    if let Some(records) = &partition.records {
                        walk(records.batches().max_decompressed_bytes(DECOMPRESSION_CAP));
                    }
                }
            }
        }
        4 => drop(decode::<ListOffsetsRequest>(*version, body)),
        5 => drop(decode::<CreateTopicsRequest>(*version, body)),
        6 => drop(decode::<SaslHandshakeRequest>(*version, body)),
        7 => drop(decode::<SaslAuthenticateRequest>(*version, body)),
        8 => drop(decode::<InitProducerIdRequest>(*version, body)),
        9 => drop(decode::<FindCoordinatorRequest>(*version, body)),
        10 => {
            if let Some(response) = decode::<JoinGroupRequest>(*version, body) {
                for member in &response.members {
                    touch(&Subscription::decode(&member.metadata));
                }
            }
        }
        11 => {
            if let Some(response) = decode::<SyncGroupRequest>(*version, body) {
                touch(&Assignment::decode_sync(&response.assignment));
            }
        }
        12 => drop(decode::<HeartbeatRequest>(*version, body)),
        13 => drop(decode::<LeaveGroupRequest>(*version, body)),
        14 => drop(decode::<OffsetCommitRequest>(*version, body)),
        15 => drop(decode::<OffsetFetchRequest>(*version, body)),
        16 => {
            if let Some(response) = decode::<DescribeGroupsRequest>(*version, body) {
                for member in response.groups.iter().flat_map(|g| &g.members) {
                    touch(&Subscription::decode(&member.member_metadata));
                    touch(&Assignment::decode_sync(&member.member_assignment));
                }
            }
        }
        _ => drop(decode::<ListGroupsRequest>(*version, body)),
    });
}

/// Rewrites the CRC-32C of every whole magic-2 batch in `bytes`, so that
/// mutated inputs get past the CRC check to the decompression and record
/// code. `None` when nothing changed.
fn with_crcs_fixed(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut fixed = bytes.to_vec();
    let mut at = 0;
    let mut changed = false;
    while let Some(length) = fixed.get(at + 8..at + 12) {
        let Ok(length) = usize::try_from(i32::from_be_bytes(length.try_into().ok()?)) else {
            break;
        };
        let start = at + 12;
        let Some(end) = start.checked_add(length).filter(|end| *end <= fixed.len()) else {
            break;
        };
        // Leader epoch (4), magic (1), CRC (4), then what the CRC covers.
        if length >= 9 && fixed[start + 4] == 2 {
            let crc = crc32c_of(&fixed[start + 9..end]).to_be_bytes();
            if fixed[start + 5..start + 9] != crc {
                fixed[start + 5..start + 9].copy_from_slice(&crc);
                changed = true;
            }
        }
        at = end;
    }
    changed.then_some(fixed)
}

/// CRC-32C (Castagnoli), bit by bit: small inputs only.
fn crc32c_of(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `record_batches`: the input is a record set. It is walked whole with the
/// [`DECOMPRESSION_CAP`], from an offset near its first batch's base offset,
/// and with a tiny cap; then again with every batch's CRC made right.
pub fn record_batches(data: &[u8]) {
    let fixed = with_crcs_fixed(data);
    for bytes in std::iter::once(data).chain(fixed.as_deref()) {
        budgeted(bytes.len(), bytes.len() + DECOMPRESSION_CAP, || {
            walk(read_record_batches(bytes).max_decompressed_bytes(DECOMPRESSION_CAP));
            let base = bytes.first_chunk::<8>().map_or(0, |b| i64::from_be_bytes(*b));
            let nudge = bytes.last().map_or(0, |b| i64::from(b % 8) - 2);
            walk(
                read_record_batches(bytes)
                    .from_offset(base.wrapping_add(nudge))
                    .max_decompressed_bytes(DECOMPRESSION_CAP),
            );
            let tiny = bytes.last().map_or(0, |b| usize::from(*b));
            walk(read_record_batches(bytes).max_decompressed_bytes(tiny));
        });
    }
}

/// `consumer_protocol`: the input as a subscription and as an assignment.
pub fn consumer_protocol(data: &[u8]) {
    budgeted(data.len(), data.len(), || {
        touch(&Subscription::decode(data));
        touch(&Assignment::decode(data));
        touch(&Assignment::decode_sync(data));
    });
}

/// Valid inputs to start each target's corpus from: `(target, name, bytes)`.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let records = [
        Record::new(Some(b"P-1".to_vec()), Some(b"{\"a\":1}".to_vec()))
            .header("ce_type", "material.part.updated")
            .header("ce_type", "again"),
        Record::new(None, None),
        Record::new(Some(b"k".to_vec()), Some(vec![b'x'; 300])).at(1_700_000_000_000),
    ];
    let codecs = [
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ];
    let mut all = Vec::new();
    for (name, codec) in codecs {
        let mut batch = Vec::new();
        if write_record_batch(&mut batch, &records, codec, ProducerStamp::NONE).is_ok() {
            seeds.push(("record_batches", format!("batch-{name}"), batch.clone()));
            all.extend_from_slice(&batch);
        }
    }
    // Two batches and a third cut short, as a fetch at max_bytes returns.
    let mut cut = all.clone();
    cut.truncate(all.len() - 5);
    seeds.push(("record_batches", "batches-cut-short".into(), cut));

    // Every answer in every version: an all-zero body (empty arrays and
    // strings), which every decoder reads.
    for (index, (name, versions)) in APIS.iter().enumerate() {
        for version in versions.clone() {
            let mut input = answer_selector(index, version).to_vec();
            input.extend([0; 48]);
            seeds.push(("answers", format!("{name}-v{version}-zeros"), input));
        }
    }
    // A Fetch answer per version with one partition carrying the batches.
    for version in FetchRequest::VERSIONS {
        let mut input = answer_selector(3, version).to_vec();
        input.extend(0i32.to_be_bytes()); // throttle
        input.extend(1i32.to_be_bytes()); // one topic
        input.extend(1i16.to_be_bytes());
        input.push(b't');
        input.extend(1i32.to_be_bytes()); // one partition
        input.extend(0i32.to_be_bytes()); // index
        input.extend(0i16.to_be_bytes()); // error
        input.extend(10i64.to_be_bytes()); // high watermark
        input.extend(10i64.to_be_bytes()); // last stable
        if version >= 5 {
            input.extend(0i64.to_be_bytes()); // log start
        }
        input.extend((-1i32).to_be_bytes()); // no aborted transactions
        input.extend(i32::try_from(all.len()).unwrap_or(0).to_be_bytes());
        input.extend(&all);
        seeds.push(("answers", format!("Fetch-v{version}-records"), input));
    }
    let subscription = Subscription::new(vec!["orders".into(), "parts".into()]).encode();
    let assignment = Assignment::new(vec![TopicPartitions {
        topic: "orders".into(),
        partitions: vec![0, 1, 2],
    }])
    .encode();
    // A JoinGroup v2 answer with one member and its subscription.
    let mut join = answer_selector(10, 2).to_vec();
    join.extend([0, 0, 0, 0, 0, 0, 0, 0, 0, 1]); // throttle, error, generation
    for text in ["consumer", "m", "m"] {
        join.extend(i16::try_from(text.len()).unwrap_or(0).to_be_bytes());
        join.extend(text.as_bytes());
    }
    join.extend(1i32.to_be_bytes());
    join.extend([0, 1, b'm']);
    join.extend(i32::try_from(subscription.len()).unwrap_or(0).to_be_bytes());
    join.extend(&subscription);
    seeds.push(("answers", "JoinGroup-v2-member".into(), join));
    // A SyncGroup v1 answer with an assignment.
    let mut sync = answer_selector(11, 1).to_vec();
    sync.extend([0, 0, 0, 0, 0, 0]);
    sync.extend(i32::try_from(assignment.len()).unwrap_or(0).to_be_bytes());
    sync.extend(&assignment);
    seeds.push(("answers", "SyncGroup-v1-assignment".into(), sync));

    seeds.push(("consumer_protocol", "subscription".into(), subscription));
    seeds.push(("consumer_protocol", "assignment".into(), assignment));
    let mut java = Subscription::new(vec!["orders".into()]);
    java.version = 3;
    java.user_data = None;
    let mut java = java.encode();
    java.extend([0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff]); // v1+ fields, ignored
    seeds.push(("consumer_protocol", "subscription-v3".into(), java));
    seeds
}
