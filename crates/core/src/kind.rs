//! Handle kinds: what sort of credential a handle holds.
//!
//! A module of its own so that both the configuration (which validates handles of each kind)
//! and the tools (which apply to some kinds only) depend on it, and not on each other.

use serde::{Deserialize, Serialize};

/// What kind of credential a handle holds, which decides the tools that may use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HandleKind {
    /// A PostgreSQL server.
    Postgres,
    /// A MySQL or MariaDB server.
    Mysql,
    /// A SQLite database file.
    Sqlite,
    /// An HTTP API.
    Http,
    /// A value with no executor (for sharing or leasing only).
    Generic,
    /// An SMTP server account (`send_email`).
    Smtp,
    /// A program run with the secret on its stdin, in a private file or (if the handle says so)
    /// in an environment variable (`run_command`).
    Command,
    /// An AWS access key pair. Never used directly by an agent: a lease on it is a short-lived
    /// STS session (`AssumeRole` with a session policy) used with `s3_object`.
    Aws,
    /// An OAuth account connected by a person: the handle holds the provider's configuration and
    /// the client secret; airlock holds the account's token set and puts a fresh access token
    /// into each `http_request` (never into a result).
    Oauth,
}

impl HandleKind {
    /// True for the SQL kinds.
    pub fn is_database(self) -> bool {
        matches!(self, HandleKind::Postgres | HandleKind::Mysql | HandleKind::Sqlite)
    }

    /// True for the kinds `http_request` runs on (an `http` handle's static secret, or an `oauth`
    /// handle's current access token).
    pub fn is_http(self) -> bool {
        matches!(self, HandleKind::Http | HandleKind::Oauth)
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            HandleKind::Postgres => "postgres",
            HandleKind::Mysql => "mysql",
            HandleKind::Sqlite => "sqlite",
            HandleKind::Http => "http",
            HandleKind::Generic => "generic",
            HandleKind::Smtp => "smtp",
            HandleKind::Command => "command",
            HandleKind::Aws => "aws",
            HandleKind::Oauth => "oauth",
        }
    }
}
