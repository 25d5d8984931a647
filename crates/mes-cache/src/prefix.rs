//! Key prefixes, keys and glob escaping.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// The entity kind part of a cache key: `mes:cache:{prefix}:{id}`.
///
/// The ten prefixes the fleet uses are variants; any other string is
/// [`CacheKeyPrefix::Other`]. [`CacheKeyPrefix::new`] (and `FromStr`) map a
/// known name to its variant, so `CacheKeyPrefix::new("part") ==
/// CacheKeyPrefix::Part`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum CacheKeyPrefix {
    /// `user`
    User,
    /// `part`
    Part,
    /// `work_center`
    WorkCenter,
    /// `site`
    Site,
    /// `area`
    Area,
    /// `product`
    Product,
    /// `routing`
    Routing,
    /// `operation`
    Operation,
    /// `skill`
    Skill,
    /// `tool`
    Tool,
    /// Any other prefix, written as is. Prefer [`CacheKeyPrefix::new`],
    /// which maps the known names to their variants.
    Other(Cow<'static, str>),
}

impl CacheKeyPrefix {
    /// The ten prefixes of the fleet.
    pub const KNOWN: [CacheKeyPrefix; 10] = [
        Self::User,
        Self::Part,
        Self::WorkCenter,
        Self::Site,
        Self::Area,
        Self::Product,
        Self::Routing,
        Self::Operation,
        Self::Skill,
        Self::Tool,
    ];

    /// A prefix from its name: a known name gives its variant, anything else
    /// [`CacheKeyPrefix::Other`].
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        let name = name.into();
        Self::KNOWN
            .into_iter()
            .find(|known| known.as_str() == name)
            .unwrap_or(Self::Other(name))
    }

    /// The prefix as it appears in keys.
    pub fn as_str(&self) -> &str {
        match self {
            Self::User => "user",
            Self::Part => "part",
            Self::WorkCenter => "work_center",
            Self::Site => "site",
            Self::Area => "area",
            Self::Product => "product",
            Self::Routing => "routing",
            Self::Operation => "operation",
            Self::Skill => "skill",
            Self::Tool => "tool",
            Self::Other(name) => name,
        }
    }
}

impl fmt::Display for CacheKeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CacheKeyPrefix {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s.to_owned()))
    }
}

impl From<&'static str> for CacheKeyPrefix {
    fn from(name: &'static str) -> Self {
        Self::new(name)
    }
}

impl From<String> for CacheKeyPrefix {
    fn from(name: String) -> Self {
        Self::new(name)
    }
}

/// A type that is cached under one prefix, so that
/// [`ReferenceDataCache::typed`](crate::ReferenceDataCache::typed) can bind
/// type and prefix once and a part can never be read as a user.
///
/// ```
/// use mes_cache::{CacheEntity, CacheKeyPrefix};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Part { part_number: String }
///
/// impl CacheEntity for Part {
///     const PREFIX: CacheKeyPrefix = CacheKeyPrefix::Part;
/// }
/// ```
pub trait CacheEntity: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static {
    /// The prefix values of this type live under.
    const PREFIX: CacheKeyPrefix;
}

/// Escapes the glob metacharacters of Redis `MATCH` patterns (`*`, `?`, `[`,
/// `]`, `\`) so that `text` matches only itself.
///
/// ```
/// assert_eq!(mes_cache::escape_glob("P-1*"), r"P-1\*");
/// ```
pub fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `namespace:prefix:id`.
pub(crate) fn key(namespace: &str, prefix: &CacheKeyPrefix, id: &str) -> String {
    let prefix = prefix.as_str();
    let mut key = String::with_capacity(namespace.len() + prefix.len() + id.len() + 2);
    key.push_str(namespace);
    key.push(':');
    key.push_str(prefix);
    key.push(':');
    key.push_str(id);
    key
}

/// Whether a Redis glob pattern matches `text` (Redis `stringmatchlen`
/// semantics: `*`, `?`, `[abc]`, `[^a]`, `[a-z]`, `\x`). Used by the
/// in-memory backend.
pub(crate) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => {
            let rest = skip_stars(rest);
            if rest.is_empty() {
                return true;
            }
            (0..=text.len()).any(|i| text.get(i..).is_some_and(|t| glob_match(rest, t)))
        }
        Some((b'?', rest)) => text.split_first().is_some_and(|(_, t)| glob_match(rest, t)),
        Some((b'[', rest)) => {
            let Some((&c, t)) = text.split_first() else {
                return false;
            };
            let (negate, mut class) = match rest.split_first() {
                Some((b'^', r)) => (true, r),
                _ => (false, rest),
            };
            let mut matched = false;
            loop {
                match class {
                    [] => break,
                    [b']', r @ ..] => {
                        class = r;
                        break;
                    }
                    [b'\\', e, r @ ..] => {
                        matched |= *e == c;
                        class = r;
                    }
                    [lo, b'-', hi, r @ ..] if *hi != b']' => {
                        let (lo, hi) = if lo <= hi { (*lo, *hi) } else { (*hi, *lo) };
                        matched |= (lo..=hi).contains(&c);
                        class = r;
                    }
                    [x, r @ ..] => {
                        matched |= *x == c;
                        class = r;
                    }
                }
            }
            matched != negate && glob_match(class, t)
        }
        Some((b'\\', rest)) if !rest.is_empty() => match (rest.split_first(), text.split_first()) {
            (Some((p, prest)), Some((c, t))) if p == c => glob_match(prest, t),
            _ => false,
        },
        Some((p, rest)) => match text.split_first() {
            Some((c, t)) if c == p => glob_match(rest, t),
            _ => false,
        },
    }
}

fn skip_stars(mut pattern: &[u8]) -> &[u8] {
    while let Some((b'*', rest)) = pattern.split_first() {
        pattern = rest;
    }
    pattern
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_names_map_to_variants() {
        for known in CacheKeyPrefix::KNOWN {
            assert_eq!(CacheKeyPrefix::new(known.as_str().to_owned()), known);
        }
        assert_eq!(CacheKeyPrefix::new("work_center"), CacheKeyPrefix::WorkCenter);
        assert_eq!(
            CacheKeyPrefix::new("work_order"),
            CacheKeyPrefix::Other("work_order".into())
        );
        assert_eq!("tool".parse::<CacheKeyPrefix>().unwrap(), CacheKeyPrefix::Tool);
    }

    #[test]
    fn keys_are_the_legacy_ones() {
        assert_eq!(
            key("mes:cache", &CacheKeyPrefix::Part, "P-12345"),
            "mes:cache:part:P-12345"
        );
    }

    #[test]
    fn escaped_text_matches_only_itself() {
        for id in ["P-1*", "a?b", "[x]", r"back\slash", "plain", "*", "[^a]", "]["] {
            let escaped = escape_glob(id);
            assert!(glob_match(escaped.as_bytes(), id.as_bytes()), "{id}");
            for other in ["P-1", "P-10", "axb", "x", "backslash", "", "b", "a"] {
                if other != id {
                    assert!(
                        !glob_match(escaped.as_bytes(), other.as_bytes()),
                        "{id} vs {other}"
                    );
                }
            }
        }
    }

    #[test]
    fn glob_semantics() {
        assert!(glob_match(b"mes:cache:part:*", b"mes:cache:part:P-1"));
        assert!(!glob_match(b"mes:cache:part:*", b"mes:cache:user:P-1"));
        assert!(glob_match(b"work_order:*:P-123", b"work_order:42:P-123"));
        assert!(glob_match(b"h?llo", b"hello"));
        assert!(glob_match(b"h[ae]llo", b"hallo"));
        assert!(!glob_match(b"h[^e]llo", b"hello"));
        assert!(glob_match(b"h[a-c]llo", b"hbllo"));
        assert!(glob_match(b"*", b""));
        assert!(!glob_match(b"?", b""));
    }
}
