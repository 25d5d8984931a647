//! The tool's one error type, and the exit code of each kind.

use std::process::ExitCode;

/// Why a command failed. Each kind has its exit code (see `mes --help`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Error {
    /// The arguments or settings cannot be used.
    #[error("{0}")]
    Usage(String),

    /// What was asked for is not there.
    #[error("{0}")]
    NotFound(String),

    /// The operator answered no at the confirmation prompt.
    #[error("not confirmed: nothing was changed")]
    Declined,

    /// The cache's settings cannot be used (a malformed URL).
    #[error("Redis settings")]
    CacheSettings(#[source] mes_cache::Error),

    /// The cache failed (connecting, or a command).
    #[error("Redis at {url}")]
    Cache {
        /// The Redis URL, password redacted.
        url: String,
        /// The cache's error.
        #[source]
        source: mes_cache::Error,
    },

    /// Kafka failed.
    #[error("Kafka: {what}")]
    Kafka {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: mes_kafka::Error,
    },

    /// The dead letters could not be read or replayed.
    #[error("dead letters of {topic}")]
    DeadLetters {
        /// The topic.
        topic: String,
        /// mes-sync's error.
        #[source]
        source: mes_sync::Error,
    },

    /// Writing the output or reading the terminal failed.
    #[error("terminal")]
    Io(#[from] std::io::Error),
}

impl Error {
    pub(crate) fn kafka(what: impl Into<String>) -> impl FnOnce(mes_kafka::Error) -> Self {
        let what = what.into();
        move |source| Self::Kafka { what, source }
    }

    /// The exit code: 1 for a service that failed or could not be reached,
    /// 2 for bad usage or configuration, 3 for something not found, 4 for a
    /// declined confirmation.
    pub(crate) fn exit_code(&self) -> ExitCode {
        let code = match self {
            Self::Usage(_) | Self::CacheSettings(_) => 2,
            Self::NotFound(_) => 3,
            Self::Declined => 4,
            Self::Cache {
                source: mes_cache::Error::InvalidConfig { .. },
                ..
            }
            | Self::Kafka {
                source: mes_kafka::Error::Config { .. },
                ..
            }
            | Self::DeadLetters {
                source: mes_sync::Error::Config { .. },
                ..
            } => 2,
            Self::Kafka {
                source: mes_kafka::Error::UnknownTopic { .. },
                ..
            } => 3,
            Self::Cache { .. } | Self::Kafka { .. } | Self::DeadLetters { .. } | Self::Io(_) => 1,
        };
        ExitCode::from(code)
    }

    /// Whether this is stdout closed under us (`mes tail ... | head`): the
    /// reader has what it wanted, which is no failure.
    pub(crate) fn is_broken_pipe(&self) -> bool {
        matches!(self, Self::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// An error and its causes, `: `-separated, for the one line on stderr.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some causes repeat their own cause's text; say each thing once.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
