//! How the MES crates keep secrets out of logs, error messages and `Debug`
//! output, written once for all of them.
//!
//! - [`Secret`]: a value whose `Debug` shows [`REDACTED`] (SASL passwords,
//!   private keys, URLs with credentials);
//! - [`redact_url`]: a URL with the password of its user part, and every
//!   query parameter named like a password, replaced by [`REDACTED`].
//!
//! ```
//! use mes_redact::{Secret, redact_url};
//!
//! let password = Secret::new("s3cret".to_owned());
//! assert_eq!(format!("{password:?}"), "<redacted>");
//! assert_eq!(password.expose(), "s3cret");
//! assert_eq!(
//!     redact_url("redis-sentinel://app:s3cret@h:26379?sentinelPassword=p2&sentinelServiceName=m"),
//!     "redis-sentinel://app:<redacted>@h:26379?sentinelPassword=<redacted>&sentinelServiceName=m"
//! );
//! ```
//!
//! It has no dependencies and knows nothing of Kafka, Redis or MES events,
//! so it sits below every other crate of the workspace, `mes-kafka`
//! included.

use std::fmt;

/// What replaces a secret wherever one would be shown.
pub const REDACTED: &str = "<redacted>";

/// A value that `Debug` never shows; [`expose`](Self::expose) gives it to
/// the code that uses it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps `value`.
    pub const fn new(value: T) -> Self {
        Self(value)
    }

    /// The value itself, for the code that sends it (never for printing).
    pub const fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// `url` with its secrets replaced by [`REDACTED`], for logs and errors:
/// the password of the user part (`user:password@`; a user part without
/// `:` may be a bare password or token, so it goes whole), and the value of
/// every query parameter whose name contains "password" in any case
/// (`password=`, `sentinelPassword=`). Host, port, path and the other
/// parameters stay. A text without `scheme://` (`host:port`, a broker
/// list) is read the same way, from its user part on.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{user}:{REDACTED}@{host}"),
            None => format!("{REDACTED}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((query, fragment)) => (query, Some(fragment)),
                None => (query, None),
            };
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if name.to_ascii_lowercase().contains("password") => {
                        format!("{name}={REDACTED}")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            match fragment {
                Some(fragment) => format!("{path}?{}#{fragment}", query.join("&")),
                None => format!("{path}?{}", query.join("&")),
            }
        }
        None => tail.to_owned(),
    };
    format!("{scheme}{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_of_the_user_part_goes() {
        assert_eq!(
            redact_url("redis://app:s3cret@host:6379/1"),
            "redis://app:<redacted>@host:6379/1"
        );
        assert_eq!(
            redact_url("postgres://postgres:pw@127.0.0.1:5432/test"),
            "postgres://postgres:<redacted>@127.0.0.1:5432/test"
        );
        // A password may contain `@`; the host follows the last one.
        assert_eq!(
            redact_url("redis://app:p@ss@host:6379"),
            "redis://app:<redacted>@host:6379"
        );
    }

    #[test]
    fn a_user_part_without_a_colon_goes_whole() {
        assert_eq!(
            redact_url("redis://s3cret@host:6379"),
            "redis://<redacted>@host:6379"
        );
        assert_eq!(
            redact_url("redis://:p%40ss@host:6379"),
            "redis://:<redacted>@host:6379"
        );
    }

    #[test]
    fn query_parameters_named_like_a_password_go() {
        assert_eq!(
            redact_url(
                "redis-sentinel://u:p1@h:26379?node=h2:26379&sentinelPassword=p2&sentinelServiceName=m"
            ),
            "redis-sentinel://u:<redacted>@h:26379?node=h2:26379&sentinelPassword=<redacted>&sentinelServiceName=m"
        );
        // An `@` in the query is no user part.
        assert_eq!(
            redact_url("redis-sentinel://h:26379?sentinelServiceName=m&sentinelPassword=x@y"),
            "redis-sentinel://h:26379?sentinelServiceName=m&sentinelPassword=<redacted>"
        );
        assert_eq!(
            redact_url("postgres://h/db?PASSWORD=x&sslmode=require#frag"),
            "postgres://h/db?PASSWORD=<redacted>&sslmode=require#frag"
        );
    }

    #[test]
    fn what_holds_no_secret_stays() {
        for url in [
            "redis://host:6379",
            "redis-cluster://h1:7000?node=h2:7001&node=h3:7002",
            "postgres://h:5432/db?sslmode=disable",
            // An `@` after the authority is no user part.
            "https://h/path/a@b",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn a_text_without_scheme_is_read_from_its_user_part_on() {
        assert_eq!(redact_url("app:s3cret@host:6379"), "app:<redacted>@host:6379");
        assert_eq!(
            redact_url("127.0.0.1:9092,127.0.0.1:9093"),
            "127.0.0.1:9092,127.0.0.1:9093"
        );
        assert_eq!(redact_url(""), "");
    }

    #[test]
    fn a_secret_shows_only_the_marker() {
        let key = Secret::new(b"-----BEGIN PRIVATE KEY-----".to_vec());
        assert_eq!(format!("{key:?} {key:#?}"), "<redacted> <redacted>");
        assert_eq!(key.expose().len(), 27);
    }
}
