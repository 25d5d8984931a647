//! Facts about the workspace's crates that `cargo xtask package` acts on and
//! `tests/invariants.rs` checks (it includes this file), so both read one list.

/// The crates published to the `mes` registry, each after the crates it
/// depends on: a crate's verification build resolves its internal
/// dependencies from the registry, so they must be there first.
pub(crate) const PUBLISH_ORDER: &[&str] = &[
    "mes-redact",
    "mes-events-types",
    "mes-kafka",
    "mes-cache",
    "mes-publisher",
    "mes-sync",
    "mes-cli",
];

/// Published crates that are a binary only (no library): they have no
/// public API for the external types check.
pub(crate) const BINARY_ONLY: &[&str] = &["mes-cli"];

/// Crates that do I/O or run an async runtime; a service that takes the
/// event schemas alone must not get any of them.
pub(crate) fn does_io(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "mio",
        "socket2",
        "fred",
        "rskafka",
        "rdkafka",
        "redis",
        "sqlx",
        "hyper",
        "h2",
        "reqwest",
        "ureq",
        "async-std",
        "smol",
        "async-io",
        "native-tls",
        "openssl",
        "tonic",
        "actix-web",
        "axum",
        "warp",
        "nats",
        "async-nats",
        "libc-net",
        "tokio",
    ];
    const PREFIXES: &[&str] = &[
        "tokio-", "rustls", "rdkafka-", "sqlx-", "hyper-", "openssl-", "redis-",
    ];
    EXACT.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}
