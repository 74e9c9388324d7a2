//! The console's one error type; every variant becomes `{code, message}` for the UI.

use vdi_wire::console::ConsoleError;
use vdi_wire::{ErrorBody, FieldError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(String, Vec<FieldError>),
    #[error("no gateway {0} in the fleet")]
    NotFound(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("no answer within {0} s")]
    Timeout(u64),
    #[error("the gateway's {0} is not stored in the console; add it with Edit in the fleet view")]
    MissingKey(&'static str),
    /// The gateway answered with its error shape.
    #[error("{}", .1.message)]
    Api(u16, ErrorBody),
    #[error("unexpected answer from the gateway: {0}")]
    Decode(String),
    /// More than the console reads from a gateway's API
    /// ([`crate::client::MAX_ANSWER`]).
    #[error("{what} is larger than {} MiB; the console stopped reading it", limit / (1024 * 1024))]
    TooLarge { what: String, limit: usize },
    #[error("inventory database: {0}")]
    Inventory(#[from] rusqlite::Error),
    /// The console's data directory cannot be created or written.
    #[error("data directory: {0}")]
    DataDir(String),
    #[error("secret store: {0}")]
    Secrets(String),
    #[error("embedded gateway: {0}")]
    Embedded(String),
    #[error("demo cluster: {0}")]
    Cluster(String),
    #[error("{0}")]
    Ssh(#[from] crate::ssh::SshError),
    /// The console's own `known_hosts` cannot be written.
    #[error("known_hosts: {0}")]
    HostKeys(String),
    /// A service action ran but the unit did not end up as asked.
    #[error("{0}")]
    ActionFailed(String),
    #[error(
        "this console has no bundled gateway package (install the console's .deb, set VDI_GATEWAY_DEB, or give the package's path)"
    )]
    NoPackage,
    /// A package that is neither the bundled one nor confirmed by its hash.
    #[error(
        "{package} is not the package this console bundles; its SHA-256 is {sha256}{}. Compare it with the build's own checksum, then deploy it confirming that hash (CLI: --sha256 {sha256})",
        if let Some(g) = .given { format!(" (not {g}, the one given)") } else { String::new() }
    )]
    PackageUnconfirmed {
        package: String,
        sha256: String,
        given: Option<String>,
    },
    /// The copy on the host does not hash to what was sent: not installed.
    #[error(
        "the package on {host} has SHA-256 {found}, not {expected} as sent; it was removed and nothing was installed"
    )]
    PackageMismatch {
        host: String,
        expected: String,
        found: String,
    },
    #[error("audit log: {0}")]
    Audit(String),
    /// Host-local settings over SSH (refused by the host's CLI, not applied, …).
    #[error("{0}")]
    HostSettings(#[from] crate::host_local::HostSetError),
    /// A change applied in part: `applied` is in force, the rest failed.
    #[error("applied only {}: the rest failed: {source}", applied.join(", "))]
    Partial {
        applied: Vec<String>,
        source: Box<Error>,
    },
}

impl Error {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let m = message.into();
        Error::Invalid(format!("{field}: {m}"), vec![FieldError::new(field, m)])
    }

    /// Several fields' problems as one error, their sentences joined.
    pub fn of_fields(errors: Vec<FieldError>) -> Self {
        let message = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        Error::Invalid(message, errors)
    }

    /// Per-field problems, for forms.
    pub fn fields(&self) -> Vec<FieldError> {
        match self {
            Error::Invalid(_, f) => f.clone(),
            Error::Api(_, body) => body.fields.clone(),
            Error::HostSettings(e) => e.fields(),
            Error::Partial { source, .. } => source.fields(),
            _ => Vec::new(),
        }
    }

    pub fn code(&self) -> &str {
        match self {
            Error::Invalid(..) => "invalid_input",
            Error::NotFound(_) => "not_found",
            Error::Unreachable(_) => "unreachable",
            Error::Timeout(_) => "timeout",
            Error::MissingKey(_) => "missing_key",
            Error::Api(_, body) => &body.code,
            Error::Decode(_) => "bad_answer",
            Error::TooLarge { .. } => "too_large",
            Error::Inventory(_) => "inventory",
            Error::DataDir(_) => "data_dir",
            Error::Secrets(_) => "secrets",
            Error::Embedded(_) => "embedded",
            Error::Cluster(_) => "cluster",
            Error::Ssh(e) => e.code(),
            Error::HostKeys(_) => "known_hosts",
            Error::ActionFailed(_) => "action_failed",
            Error::NoPackage => "no_package",
            Error::PackageUnconfirmed { .. } => "package_unconfirmed",
            Error::PackageMismatch { .. } => "package_mismatch",
            Error::Audit(_) => "audit",
            Error::HostSettings(e) => e.code(),
            Error::Partial { .. } => "partially_applied",
        }
    }
}

impl From<Error> for ConsoleError {
    fn from(e: Error) -> Self {
        let fields = e.fields();
        let detail = match &e {
            Error::Ssh(s) => s.detail().map(Box::new),
            _ => None,
        };
        ConsoleError {
            code: e.code().to_string(),
            message: e.to_string(),
            fields,
            detail,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
