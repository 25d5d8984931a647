//! Kafka's primitive types: big-endian integers, strings and byte arrays
//! with `i16`/`i32` length prefixes, arrays with an `i32` count, and the
//! zig-zag varints of record batches.
//!
//! Reading is bounds-checked throughout: a short or malformed answer is a
//! [`DecodeError`], never a panic, and no length read off the wire is
//! allocated before it is checked against the bytes that are actually there.

use std::fmt;

/// An answer (or record batch) that cannot be read: what was being read and
/// what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    what: String,
}

impl DecodeError {
    /// A decode error saying `what` is wrong.
    pub(crate) fn new(what: impl Into<String>) -> Self {
        Self { what: what.into() }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for DecodeError {}

/// A cursor over received bytes; every read is bounds-checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// The bytes not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self.buf.split_first_chunk::<N>().ok_or_else(|| {
            DecodeError::new(format!("ends early: {N} bytes wanted, {} left", self.buf.len()))
        })?;
        self.buf = rest;
        Ok(*head)
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let (head, rest) = self.buf.split_at_checked(n).ok_or_else(|| {
            DecodeError::new(format!("ends early: {n} bytes wanted, {} left", self.buf.len()))
        })?;
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn i8(&mut self) -> Result<i8, DecodeError> {
        self.array::<1>().map(i8::from_be_bytes)
    }

    pub(crate) fn bool(&mut self) -> Result<bool, DecodeError> {
        self.i8().map(|b| b != 0)
    }

    pub(crate) fn i16(&mut self) -> Result<i16, DecodeError> {
        self.array::<2>().map(i16::from_be_bytes)
    }

    pub(crate) fn i32(&mut self) -> Result<i32, DecodeError> {
        self.array::<4>().map(i32::from_be_bytes)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array::<4>().map(u32::from_be_bytes)
    }

    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        self.array::<8>().map(i64::from_be_bytes)
    }

    /// An array's element count (`i32`; a null array, -1, counts as empty),
    /// checked against what is left: each element takes at least
    /// `min_element_bytes`, so a larger count is garbage and never becomes
    /// an allocation.
    pub(crate) fn array_len(&mut self, min_element_bytes: usize) -> Result<usize, DecodeError> {
        let count = self.i32()?;
        let Ok(count) = usize::try_from(count) else {
            return Ok(0);
        };
        if count.saturating_mul(min_element_bytes.max(1)) > self.buf.len() {
            return Err(DecodeError::new(format!(
                "array of {count} elements in {} bytes",
                self.buf.len()
            )));
        }
        Ok(count)
    }

    /// A nullable string (`i16` length, -1 for null). Not UTF-8 is an error.
    pub(crate) fn nullable_str(&mut self) -> Result<Option<&'a str>, DecodeError> {
        let len = self.i16()?;
        let Ok(len) = usize::try_from(len) else {
            return Ok(None);
        };
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|_| DecodeError::new("a string is not UTF-8"))
    }

    /// A string; null reads as empty.
    pub(crate) fn str(&mut self) -> Result<&'a str, DecodeError> {
        self.nullable_str().map(Option::unwrap_or_default)
    }

    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        self.str().map(str::to_owned)
    }

    pub(crate) fn nullable_string(&mut self) -> Result<Option<String>, DecodeError> {
        self.nullable_str().map(|s| s.map(str::to_owned))
    }

    /// Nullable bytes (`i32` length, -1 for null).
    pub(crate) fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        let len = self.i32()?;
        let Ok(len) = usize::try_from(len) else {
            return Ok(None);
        };
        self.take(len).map(Some)
    }

    /// Bytes; null reads as empty.
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        self.nullable_bytes().map(Option::unwrap_or_default)
    }

    /// A zig-zag varint of at most 64 bits (Kafka's `varlong`; `varint`
    /// values are read with it and range-checked by the caller).
    pub(crate) fn varlong(&mut self) -> Result<i64, DecodeError> {
        let mut value: u64 = 0;
        for shift in (0..70).step_by(7) {
            let [byte] = self.array::<1>()?;
            if shift == 63 && byte > 1 {
                return Err(DecodeError::new("varint longer than 64 bits"));
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(unzigzag(value));
            }
        }
        Err(DecodeError::new("varint longer than 64 bits"))
    }

    /// An unsigned varint (flexible versions: compact lengths, tag counts).
    pub(crate) fn unsigned_varint(&mut self) -> Result<u32, DecodeError> {
        let mut value: u32 = 0;
        for shift in (0..35).step_by(7) {
            let [byte] = self.array::<1>()?;
            if shift == 28 && byte > 0x0f {
                return Err(DecodeError::new("unsigned varint longer than 32 bits"));
            }
            value |= u32::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::new("unsigned varint longer than 32 bits"))
    }

    /// Skips a flexible version's tagged fields (none of which this crate
    /// reads).
    pub(crate) fn skip_tagged_fields(&mut self) -> Result<(), DecodeError> {
        let count = self.unsigned_varint()?;
        for _ in 0..count {
            self.unsigned_varint()?; // tag
            let size = self.unsigned_varint()?;
            self.take(size as usize)?;
        }
        Ok(())
    }

    /// A zig-zag varint that must fit an `i32`.
    pub(crate) fn varint(&mut self) -> Result<i32, DecodeError> {
        let value = self.varlong()?;
        i32::try_from(value).map_err(|_| DecodeError::new(format!("varint {value} out of range")))
    }

    /// Varint-length-prefixed bytes (-1 for null), as in a record.
    pub(crate) fn varint_bytes(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        let len = self.varint()?;
        let Ok(len) = usize::try_from(len) else {
            return Ok(None);
        };
        self.take(len).map(Some)
    }
}

fn unzigzag(value: u64) -> i64 {
    (value >> 1).cast_signed() ^ -((value & 1).cast_signed())
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)).cast_unsigned()
}

/// Writing Kafka's primitives to a request buffer.
pub(crate) trait Writer {
    fn put_i8(&mut self, value: i8);
    fn put_bool(&mut self, value: bool);
    fn put_i16(&mut self, value: i16);
    fn put_i32(&mut self, value: i32);
    fn put_i64(&mut self, value: i64);
    /// A string with an `i16` length (cut at `i16::MAX` bytes, which no
    /// name Kafka accepts comes near).
    fn put_str(&mut self, text: &str);
    fn put_nullable_str(&mut self, text: Option<&str>);
    /// Bytes with an `i32` length.
    fn put_bytes(&mut self, bytes: &[u8]);
    fn put_nullable_bytes(&mut self, bytes: Option<&[u8]>);
    /// An array's element count.
    fn put_len(&mut self, len: usize);
    fn put_varlong(&mut self, value: i64);
    fn put_unsigned_varint(&mut self, value: u32);
    /// A compact nullable string (flexible versions): length + 1 as an
    /// unsigned varint, 0 for null.
    fn put_compact_nullable_str(&mut self, text: Option<&str>);
    /// Bytes with a varint length (-1 for `None`), as in a record.
    fn put_varint_bytes(&mut self, bytes: Option<&[u8]>);
    /// Appends `n` placeholder bytes and returns where they start.
    fn reserve_at(&mut self, n: usize) -> usize;
    /// Writes at `at` (an `i32` placeholder) the size of what follows from
    /// `from` to the end.
    fn patch_size(&mut self, at: usize, from: usize);
}

impl Writer for Vec<u8> {
    fn put_i8(&mut self, value: i8) {
        self.extend_from_slice(&value.to_be_bytes());
    }

    fn put_bool(&mut self, value: bool) {
        self.push(u8::from(value));
    }

    fn put_i16(&mut self, value: i16) {
        self.extend_from_slice(&value.to_be_bytes());
    }

    fn put_i32(&mut self, value: i32) {
        self.extend_from_slice(&value.to_be_bytes());
    }

    fn put_i64(&mut self, value: i64) {
        self.extend_from_slice(&value.to_be_bytes());
    }

    fn put_str(&mut self, text: &str) {
        let bytes = text.as_bytes();
        let bytes = bytes.get(..usize::from(i16::MAX.unsigned_abs())).unwrap_or(bytes);
        self.put_i16(i16::try_from(bytes.len()).unwrap_or(i16::MAX));
        self.extend_from_slice(bytes);
    }

    fn put_nullable_str(&mut self, text: Option<&str>) {
        match text {
            Some(text) => self.put_str(text),
            None => self.put_i16(-1),
        }
    }

    fn put_bytes(&mut self, bytes: &[u8]) {
        self.put_i32(i32::try_from(bytes.len()).unwrap_or(i32::MAX));
        self.extend_from_slice(bytes);
    }

    fn put_nullable_bytes(&mut self, bytes: Option<&[u8]>) {
        match bytes {
            Some(bytes) => self.put_bytes(bytes),
            None => self.put_i32(-1),
        }
    }

    fn put_len(&mut self, len: usize) {
        self.put_i32(i32::try_from(len).unwrap_or(i32::MAX));
    }

    fn put_varlong(&mut self, value: i64) {
        let mut v = zigzag(value);
        while v >= 0x80 {
            self.push(u8::try_from(v & 0x7f).unwrap_or_default() | 0x80);
            v >>= 7;
        }
        self.push(u8::try_from(v).unwrap_or_default());
    }

    fn put_unsigned_varint(&mut self, value: u32) {
        let mut v = value;
        while v >= 0x80 {
            self.push(u8::try_from(v & 0x7f).unwrap_or_default() | 0x80);
            v >>= 7;
        }
        self.push(u8::try_from(v).unwrap_or_default());
    }

    fn put_compact_nullable_str(&mut self, text: Option<&str>) {
        match text {
            Some(text) => {
                self.put_unsigned_varint(u32::try_from(text.len() + 1).unwrap_or(u32::MAX));
                self.extend_from_slice(text.as_bytes());
            }
            None => self.put_unsigned_varint(0),
        }
    }

    fn put_varint_bytes(&mut self, bytes: Option<&[u8]>) {
        match bytes {
            Some(bytes) => {
                self.put_varlong(i64::try_from(bytes.len()).unwrap_or(i64::MAX));
                self.extend_from_slice(bytes);
            }
            None => self.put_varlong(-1),
        }
    }

    fn reserve_at(&mut self, n: usize) -> usize {
        let at = self.len();
        self.resize(at + n, 0);
        at
    }

    fn patch_size(&mut self, at: usize, from: usize) {
        let size = i32::try_from(self.len().saturating_sub(from)).unwrap_or(i32::MAX);
        if let Some(slot) = self.get_mut(at..at + 4) {
            slot.copy_from_slice(&size.to_be_bytes());
        }
    }
}

/// How many bytes `value` takes as a zig-zag varint.
pub(crate) fn varlong_len(value: i64) -> usize {
    let bits = 64 - zigzag(value).leading_zeros() as usize;
    bits.max(1).div_ceil(7)
}

/// How many bytes `len` bytes take with their varint length prefix.
pub(crate) fn varint_bytes_len(len: usize) -> usize {
    varlong_len(i64::try_from(len).unwrap_or(i64::MAX)) + len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_kafkas_zigzag_encoding_both_ways() {
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
            buf.put_varlong(value);
            assert_eq!(buf, bytes, "{value}");
            assert_eq!(varlong_len(value), bytes.len(), "{value}");
            assert_eq!(Reader::new(&bytes).varlong().unwrap(), value);
        }
        for value in [i64::MIN, i64::MAX, i64::from(i32::MIN), 1 << 40] {
            let mut buf = Vec::new();
            buf.put_varlong(value);
            assert_eq!(Reader::new(&buf).varlong().unwrap(), value);
        }
    }

    #[test]
    fn unsigned_varints_and_tagged_fields() {
        for value in [0_u32, 1, 127, 128, 300, u32::MAX] {
            let mut buf = Vec::new();
            buf.put_unsigned_varint(value);
            assert_eq!(Reader::new(&buf).unsigned_varint().unwrap(), value);
        }
        assert!(
            Reader::new(&[0xff, 0xff, 0xff, 0xff, 0x1f])
                .unsigned_varint()
                .is_err()
        );
        // Two tagged fields (tag 0: 2 bytes, tag 5: 0 bytes), then a byte.
        let mut r = Reader::new(&[2, 0, 2, 0xaa, 0xbb, 5, 0, 7]);
        r.skip_tagged_fields().unwrap();
        assert_eq!(r.i8().unwrap(), 7);
        assert!(Reader::new(&[1, 0, 9]).skip_tagged_fields().is_err());
    }

    #[test]
    fn overlong_varints_and_huge_counts_are_errors() {
        assert!(Reader::new(&[0xff; 11]).varlong().is_err());
        assert!(Reader::new(&[0xff; 3]).varlong().is_err());
        let mut varint_too_big = Vec::new();
        varint_too_big.put_varlong(i64::from(i32::MAX) + 1);
        assert!(Reader::new(&varint_too_big).varint().is_err());
        // 2^31-1 elements claimed in 4 bytes: an error, not an allocation.
        let mut claim = Vec::new();
        claim.put_i32(i32::MAX);
        claim.put_i32(0);
        assert!(Reader::new(&claim).array_len(1).is_err());
        let mut null = Vec::new();
        null.put_i32(-1);
        assert_eq!(Reader::new(&null).array_len(4).unwrap(), 0);
    }

    #[test]
    fn strings_and_bytes_round_trip_and_null_is_kept() {
        let mut buf = Vec::new();
        buf.put_str("tëst");
        buf.put_nullable_str(None);
        buf.put_bytes(b"\x00\xff");
        buf.put_nullable_bytes(None);
        buf.put_varint_bytes(Some(b"k"));
        buf.put_varint_bytes(None);
        let mut r = Reader::new(&buf);
        assert_eq!(r.str().unwrap(), "tëst");
        assert_eq!(r.nullable_str().unwrap(), None);
        assert_eq!(r.bytes().unwrap(), b"\x00\xff");
        assert_eq!(r.nullable_bytes().unwrap(), None);
        assert_eq!(r.varint_bytes().unwrap(), Some(&b"k"[..]));
        assert_eq!(r.varint_bytes().unwrap(), None);
        assert!(r.is_empty());
        assert!(Reader::new(&[0, 2, 0xff, 0xfe]).str().is_err());
        assert!(Reader::new(&[0, 5, b'a']).str().is_err());
    }
}
