//! Points in time as the fleet writes them.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use crate::Error;

/// A point in time in UTC, written as RFC 3339 with a `Z` suffix.
///
/// The legacy services write JavaScript's `toISOString()`
/// (`2025-10-18T12:14:56.789Z`: millisecond precision). [`Timestamp::now`]
/// truncates to milliseconds so new events look exactly like that. A
/// timestamp parsed from another producer keeps its full precision (it is
/// written back with as many fractional digits as it needs, never fewer
/// than three) and is normalised to UTC: the instant is kept, the original
/// offset is not.
///
/// Years outside `0000..=9999` cannot be written in RFC 3339 and are
/// rejected.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// The current time, truncated to whole milliseconds.
    pub fn now() -> Self {
        let now = OffsetDateTime::from(SystemTime::now());
        // Infallible in practice: the system clock is within 0000..=9999.
        Self::truncated_to_millis(now)
    }

    /// The timestamp `millis` milliseconds after the Unix epoch (the legacy
    /// cache's `cachedAt`).
    pub fn from_unix_millis(millis: i64) -> Result<Self, Error> {
        let nanos = i128::from(millis) * 1_000_000;
        let value =
            OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| Error::InvalidTimestamp {
                value: millis.to_string(),
                reason: "out of range",
            })?;
        Self::try_from(value)
    }

    /// Milliseconds since the Unix epoch, rounded towards the past.
    pub fn unix_millis(&self) -> i64 {
        // Years 0..=9999 fit easily in i64 milliseconds.
        let nanos = self.0.unix_timestamp_nanos();
        i64::try_from(nanos.div_euclid(1_000_000)).unwrap_or(i64::MAX)
    }

    /// The time as a [`time::OffsetDateTime`] in UTC.
    pub fn to_offset_date_time(&self) -> OffsetDateTime {
        self.0
    }

    /// Parses an RFC 3339 date-time with any offset and normalises it to UTC.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let value = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| Error::InvalidTimestamp {
            value: text.to_owned(),
            reason: "not an RFC 3339 date-time",
        })?;
        Self::try_from(value)
    }

    fn truncated_to_millis(value: OffsetDateTime) -> Self {
        let millis = value.nanosecond() / 1_000_000 * 1_000_000;
        Self(value.replace_nanosecond(millis).unwrap_or(value))
    }
}

impl TryFrom<OffsetDateTime> for Timestamp {
    type Error = Error;

    fn try_from(value: OffsetDateTime) -> Result<Self, Error> {
        let utc = value.to_offset(UtcOffset::UTC);
        if !(0..=9999).contains(&utc.year()) {
            return Err(Error::InvalidTimestamp {
                value: value.to_string(),
                reason: "year outside 0000..=9999",
            });
        }
        Ok(Self(utc))
    }
}

impl From<Timestamp> for OffsetDateTime {
    fn from(value: Timestamp) -> Self {
        value.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )?;
        let nanos = t.nanosecond();
        if nanos.is_multiple_of(1_000_000) {
            write!(f, ".{:03}Z", nanos / 1_000_000)
        } else {
            let digits = format!("{nanos:09}");
            write!(f, ".{}Z", digits.trim_end_matches('0'))
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl FromStr for Timestamp {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_like_javascript_to_iso_string() {
        let t = Timestamp::from_unix_millis(1_760_789_696_789).unwrap();
        assert_eq!(t.to_string(), "2025-10-18T12:14:56.789Z");
        assert_eq!(Timestamp::parse("2025-10-18T12:14:56.789Z").unwrap(), t);
        assert_eq!(t.unix_millis(), 1_760_789_696_789);
    }

    #[test]
    fn whole_seconds_still_get_three_digits() {
        let t = Timestamp::parse("2025-10-18T12:14:56Z").unwrap();
        assert_eq!(t.to_string(), "2025-10-18T12:14:56.000Z");
    }

    #[test]
    fn foreign_precision_and_offsets_are_kept_as_instants() {
        let t = Timestamp::parse("2025-10-18T14:14:56.789123+02:00").unwrap();
        assert_eq!(t.to_string(), "2025-10-18T12:14:56.789123Z");
    }

    #[test]
    fn now_has_millisecond_precision() {
        assert_eq!(Timestamp::now().to_offset_date_time().nanosecond() % 1_000_000, 0);
    }

    #[test]
    fn rejects_garbage_and_unwritable_years() {
        assert!(Timestamp::parse("yesterday").is_err());
        assert!(Timestamp::parse("2025-10-18").is_err());
        assert!(Timestamp::from_unix_millis(i64::MIN).is_err());
        assert!(Timestamp::from_unix_millis(-62_167_219_200_001).is_err());
    }
}
