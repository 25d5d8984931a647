//! Where an event goes: topic, key and partition, as pure functions.

use std::num::NonZeroU32;

use crate::Error;

/// The topic of events whose type has fewer than two dot-separated segments.
pub const FALLBACK_TOPIC: &str = "mes.domain.events";

/// The Kafka topic for an event type, as the legacy services route it:
/// `mes.{first segment}.events`, or [`FALLBACK_TOPIC`] for a type with fewer
/// than two segments.
///
/// Fails when the first segment would make an illegal Kafka topic name
/// (empty, or characters other than ASCII letters, digits, `.`, `_`, `-`).
///
/// ```
/// use mes_events_types::topic_for_type;
///
/// assert_eq!(topic_for_type("workorder.status.changed").unwrap(), "mes.workorder.events");
/// assert_eq!(topic_for_type("heartbeat").unwrap(), "mes.domain.events");
/// assert!(topic_for_type("bad domain.x").is_err());
/// ```
pub fn topic_for_type(event_type: &str) -> Result<String, Error> {
    let Some((domain, _)) = event_type.split_once('.') else {
        return Ok(FALLBACK_TOPIC.to_owned());
    };
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if domain.is_empty() || !domain.chars().all(legal) {
        return Err(Error::InvalidAttribute {
            name: "type",
            reason: format!("{event_type:?} does not start with a domain usable in a topic name"),
        });
    }
    Ok(format!("mes.{domain}.events"))
}

const MURMUR2_SEED: u32 = 0x9747_b28c;

/// Kafka's murmur2 hash of `data`, bit for bit as the Java client and kafkajs
/// compute it (`Utils.murmur2`), as an unsigned value.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Java works on an int length; keys are far below 2^31 bytes, and the
    // wrap matches Java's for longer ones too.
    let length = data.len() as u32;
    let mut h = MURMUR2_SEED ^ length;
    let (chunks, tail) = data.as_chunks::<4>();
    for chunk in chunks {
        let mut k = u32::from_le_bytes(*chunk);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if !tail.is_empty() {
        for (i, byte) in tail.iter().enumerate().rev() {
            h ^= u32::from(*byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition the Java client's and kafkajs's default partitioner pick for
/// a key: `(murmur2(key) & 0x7fffffff) % partition_count`.
///
/// ```
/// use std::num::NonZeroU32;
/// use mes_events_types::partition_for_key;
///
/// let six = NonZeroU32::new(6).unwrap();
/// assert_eq!(partition_for_key(b"WO-1001", six), 5);
/// ```
pub fn partition_for_key(key: &[u8], partition_count: NonZeroU32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partition_count.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_own_test_vectors() {
        // From Kafka's UtilsTest.testMurmur2, as signed Java ints.
        let cases: [(&str, i32); 6] = [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            ("abc", 479_470_107),
        ];
        for (input, expected) in cases {
            assert_eq!(murmur2(input.as_bytes()) as i32, expected, "murmur2({input:?})");
        }
    }

    #[test]
    fn short_types_go_to_the_fallback_topic() {
        assert_eq!(topic_for_type("x").unwrap(), FALLBACK_TOPIC);
        assert_eq!(topic_for_type("material.").unwrap(), "mes.material.events");
        assert!(topic_for_type(".part.updated").is_err());
    }
}
