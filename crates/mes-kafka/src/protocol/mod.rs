//! The Kafka protocol as this crate speaks it: primitives, the record batch,
//! and one module per API with its request and response.
//!
//! Non-flexible versions are spoken (no tagged fields), which every Kafka
//! since 2.4 (4.0 included), Redpanda and tansu answer; the one exception is
//! `InitProducerId`, whose flexible v3+ is the first to carry the producer id
//! and epoch (the Java client sends v4, and tansu needs them). Each request
//! type says which versions it can write and read ([`Request::VERSIONS`]);
//! a connection picks the highest one the broker also knows.
//!
//! Everything here is pure: bytes in, values out. Decoders never panic and
//! never allocate from a length read off the wire before checking it
//! against the bytes that are there (the fuzz targets of `cargo xtask fuzz`
//! and the property tests hold them to it).

use std::ops::RangeInclusive;

pub mod api_versions;
pub mod consumer_protocol;
pub mod create_topics;
pub mod describe_groups;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_fetch;
pub(crate) mod primitives;
pub mod produce;
pub mod record_batch;
pub mod sasl;
pub mod sync_group;

pub use primitives::DecodeError;

use primitives::Writer;

/// Where the correlation id sits in a request frame: size, API key, version.
pub(crate) const CORRELATION_AT: usize = 4 + 2 + 2;

/// A request of one Kafka API.
pub trait Request {
    /// The API key (`Produce` = 0, `Fetch` = 1, ...).
    const API_KEY: i16;
    /// The API's name, for errors and logs.
    const NAME: &'static str;
    /// The versions this crate writes and reads.
    const VERSIONS: RangeInclusive<i16>;
    /// What the broker answers.
    type Response;

    /// Writes the request body (what follows the request header) in `version`.
    fn encode(&self, version: i16, buf: &mut Vec<u8>);

    /// Reads the response body (what follows the response header) in `version`.
    fn decode_response(version: i16, body: &[u8]) -> Result<Self::Response, DecodeError>;

    /// Whether `version` is a flexible one (request header v2 and response
    /// header v1, with tagged fields). None is, but `InitProducerId` v2+.
    fn is_flexible(_version: i16) -> bool {
        false
    }
}

/// The body of an answer to `R` in `version`: after the tagged fields of the
/// response header, for flexible versions.
pub(crate) fn response_body<R: Request>(
    version: i16,
    after_correlation: &[u8],
) -> Result<&[u8], DecodeError> {
    if !R::is_flexible(version) {
        return Ok(after_correlation);
    }
    let mut r = primitives::Reader::new(after_correlation);
    r.skip_tagged_fields()?;
    Ok(r.rest())
}

/// Starts a request frame in `buf` (cleared first): a size placeholder and
/// the request header (v1: API key, version, correlation id placeholder,
/// client id). [`finish_frame`] writes the size.
pub(crate) fn start_frame(buf: &mut Vec<u8>, api_key: i16, version: i16, client_id: &str) {
    buf.clear();
    buf.put_i32(0);
    buf.put_i16(api_key);
    buf.put_i16(version);
    buf.put_i32(0);
    buf.put_str(client_id);
}

/// Writes the size of a frame begun with [`start_frame`].
pub(crate) fn finish_frame(buf: &mut Vec<u8>) {
    buf.patch_size(0, 4);
}

/// A whole request frame of `request` in `version`.
pub(crate) fn frame<R: Request>(buf: &mut Vec<u8>, request: &R, version: i16, client_id: &str) {
    start_frame(buf, R::API_KEY, version, client_id);
    if R::is_flexible(version) {
        buf.put_unsigned_varint(0); // no tagged fields in the header
    }
    request.encode(version, buf);
    finish_frame(buf);
}

/// Sets the correlation id of a frame.
pub(crate) fn set_correlation(frame: &mut [u8], correlation: i32) {
    if let Some(slot) = frame.get_mut(CORRELATION_AT..CORRELATION_AT + 4) {
        slot.copy_from_slice(&correlation.to_be_bytes());
    }
}
