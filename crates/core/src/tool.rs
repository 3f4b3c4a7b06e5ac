//! The built-in tools and which handle kinds each applies to.

use crate::kind::HandleKind;
use serde::{Deserialize, Serialize};

/// A built-in tool an agent can call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tool {
    /// `query_db {credential_handle, query, params?}`
    QueryDb,
    /// `http_request {credential_handle, method, path_or_url, headers?, body?}`
    HttpRequest,
    /// `send_email {credential_handle, to, cc?, subject, body, reply_to?}`
    SendEmail,
    /// `run_command {credential_handle, args}`
    RunCommand,
    /// `share_secret {credential_handle, recipient, views?, expires_in?}`: a one-time link to
    /// the handle's secret, delivered to a configured recipient, never to the agent.
    ShareSecret,
    /// `request_lease {credential_handle, scope, ttl_seconds, tables?, buckets?, task_id?}`
    RequestLease,
    /// `s3_object {credential_handle, operation, bucket, key?, body?}`: an object operation
    /// on a lease of an aws handle, signed by the broker with the lease's STS credentials.
    S3Object,
    /// `connect_account {credential_handle, owner}`: a one-time link (10 minutes) for the named
    /// owner to connect their account at an `oauth` handle's provider. The agent never sees a
    /// code or a token.
    ConnectAccount,
    /// `connect_status {credential_handle, connect_id?}`: `pending`, `connected`, `denied` or
    /// `expired` for a connect link; `connected`, `needs-reauth` or `not-connected` for the
    /// handle's account.
    ConnectStatus,
    /// `request_secret {handle, description, kind, recipient, ...}`: a one-time, end-to-end
    /// encrypted intake link for a person to send a secret in; it lands as a new handle bound
    /// as the request says. Decided by policy on the proposed handle (`resource.requested`).
    RequestSecret,
    /// `request_status {request_id}`: `pending`, `received`, `approved`, `rejected` or
    /// `expired` for one of the caller's own requests.
    RequestStatus,
}

impl Tool {
    /// Every tool, in a stable order.
    pub const ALL: &'static [Tool] = &[Tool::QueryDb, Tool::HttpRequest, Tool::SendEmail, Tool::RunCommand, Tool::ShareSecret, Tool::RequestLease, Tool::S3Object, Tool::ConnectAccount, Tool::ConnectStatus, Tool::RequestSecret, Tool::RequestStatus];

    /// The tool's wire name.
    pub fn name(self) -> &'static str {
        match self {
            Tool::QueryDb => "query_db",
            Tool::HttpRequest => "http_request",
            Tool::SendEmail => "send_email",
            Tool::RunCommand => "run_command",
            Tool::ShareSecret => "share_secret",
            Tool::RequestLease => "request_lease",
            Tool::S3Object => "s3_object",
            Tool::ConnectAccount => "connect_account",
            Tool::ConnectStatus => "connect_status",
            Tool::RequestSecret => "request_secret",
            Tool::RequestStatus => "request_status",
        }
    }

    /// Parses a wire name (exact match).
    pub fn parse(s: &str) -> Option<Tool> {
        Tool::ALL.iter().copied().find(|t| t.name() == s)
    }

    /// Whether this tool can use a handle of `kind`.
    pub fn applies_to(self, kind: HandleKind) -> bool {
        match self {
            Tool::QueryDb => kind.is_database(),
            Tool::HttpRequest => kind.is_http(),
            Tool::SendEmail => kind == HandleKind::Smtp,
            Tool::RunCommand => kind == HandleKind::Command,
            // Any secret can be handed to a person; policy decides which. Not an oauth handle's:
            // its secret is the client's, and its tokens never leave the broker.
            Tool::ShareSecret => kind != HandleKind::Oauth,
            // Leases narrow a database handle (and on PostgreSQL and MySQL can be real roles),
            // or mint STS credentials from an aws handle.
            Tool::RequestLease => kind.is_database() || kind == HandleKind::Aws,
            // Only ever on a lease of an aws handle: a grant of it on the handle itself is
            // refused at load, and the broker refuses it on any configured handle.
            Tool::S3Object => kind == HandleKind::Aws,
            Tool::ConnectAccount | Tool::ConnectStatus => kind == HandleKind::Oauth,
            // The resource is the handle a request proposes, never a configured one (a grant
            // of it is refused at load): an http key, a database URL or a plain secret.
            Tool::RequestSecret => matches!(kind, HandleKind::Http | HandleKind::Postgres | HandleKind::Mysql | HandleKind::Generic),
            // Asks about the caller's own requests; no handle.
            Tool::RequestStatus => false,
        }
    }
}
