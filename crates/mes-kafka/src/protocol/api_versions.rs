//! `ApiVersions` (key 18): which versions of which APIs the broker speaks.

use std::ops::RangeInclusive;

use super::Request;
use super::primitives::{DecodeError, Reader};

/// Asks the broker for the versions it speaks. Sent first on every
/// connection (after SASL), in version 0, which every broker answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApiVersionsRequest;

/// The versions the broker speaks, per API key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiVersionsResponse {
    /// 0, or why the broker refused the request.
    pub error_code: i16,
    /// `(api_key, min_version..=max_version)`.
    pub apis: Vec<(i16, RangeInclusive<i16>)>,
    /// How long the broker throttled the request (v1+).
    pub throttle_time_ms: i32,
}

impl ApiVersionsResponse {
    /// The versions of `api_key` the broker speaks, if any.
    pub fn versions(&self, api_key: i16) -> Option<RangeInclusive<i16>> {
        self.apis
            .iter()
            .find(|(key, _)| *key == api_key)
            .map(|(_, range)| range.clone())
    }
}

impl Request for ApiVersionsRequest {
    const API_KEY: i16 = 18;
    const NAME: &'static str = "ApiVersions";
    const VERSIONS: RangeInclusive<i16> = 0..=2;
    type Response = ApiVersionsResponse;

    fn encode(&self, _version: i16, _buf: &mut Vec<u8>) {}

    fn decode_response(version: i16, body: &[u8]) -> Result<Self::Response, DecodeError> {
        let mut r = Reader::new(body);
        let error_code = r.i16()?;
        let count = r.array_len(6)?;
        let mut apis = Vec::with_capacity(count);
        for _ in 0..count {
            let key = r.i16()?;
            let min = r.i16()?;
            let max = r.i16()?;
            apis.push((key, min..=max));
        }
        // A broker that does not know the version asked answers in v0 with
        // UNSUPPORTED_VERSION and no throttle time.
        let throttle_time_ms = if version >= 1 && !r.is_empty() {
            r.i32()?
        } else {
            0
        };
        Ok(ApiVersionsResponse {
            error_code,
            apis,
            throttle_time_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::primitives::Writer;

    #[test]
    fn answers_are_read_in_each_version_and_truncation_is_an_error() {
        let mut body = Vec::new();
        body.put_i16(0);
        body.put_i32(2);
        for (key, min, max) in [(0_i16, 3_i16, 9_i16), (1, 4, 12)] {
            body.put_i16(key);
            body.put_i16(min);
            body.put_i16(max);
        }
        let v0 = ApiVersionsRequest::decode_response(0, &body).unwrap();
        assert_eq!(v0.versions(1), Some(4..=12));
        assert_eq!(v0.versions(2), None);
        body.put_i32(7);
        let v1 = ApiVersionsRequest::decode_response(1, &body).unwrap();
        assert_eq!(v1.throttle_time_ms, 7);
        for end in 0..body.len() - 4 {
            assert!(
                ApiVersionsRequest::decode_response(1, &body[..end]).is_err(),
                "{end}"
            );
        }
    }
}
