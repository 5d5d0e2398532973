//! The one error type of the load tester: every way a run can be refused or fail, with enough
//! context (the flag, the scenario key and line, the file) to fix it without reading the code.

use std::path::PathBuf;

/// Why a benchmark could not be planned, run or reported.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A command-line value is invalid (URL, header, duration, threshold...).
    #[error("{0}")]
    Invalid(String),
    /// A scenario file could not be parsed or does not describe a valid run.
    #[error("{path}: {message}")]
    Scenario {
        /// The scenario file.
        path: PathBuf,
        /// What is wrong, with the key and line when known.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A JSON report could not be read (for `compare`).
    #[error("{path}: not a portcullis bench report: {message}")]
    Report {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The target host could not be resolved.
    #[error("cannot resolve {host}: {message}")]
    Resolve {
        /// `host:port`.
        host: String,
        /// The resolver's message.
        message: String,
    },
    /// TLS could not be set up (certificate file, roots).
    #[error("TLS: {0}")]
    Tls(String),
}

impl BenchError {
    /// An invalid input, with a message.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
}
