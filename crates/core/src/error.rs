//! The stable error codes of the public contract, listed in one place.
//!
//! Every refusal or failure an agent can see is one of these codes with a fixed message. Detail
//! meant for the operator travels separately in [`CallError::detail`] and is scrubbed before it is
//! logged; it never reaches the agent.

use serde::Serialize;
use std::fmt;

/// A stable, kebab-case error code. The wire form is [`ErrorCode::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, strum::VariantArray)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// No token, a malformed token, an unknown, revoked or expired agent.
    Unauthenticated,
    /// The handle does not exist, or this agent may not use it with this tool. Both cases are
    /// indistinguishable on purpose (T13, T16).
    HandleUnavailable,
    /// The tool name is not a built-in tool.
    UnknownTool,
    /// The arguments do not match the tool's schema.
    InvalidArguments,
    /// The SQL text does not parse as one statement of the handle's dialect.
    InvalidSql,
    /// The statement kind is not allowed for the handle's scope (a write on a read-only handle,
    /// including data-modifying CTEs, locking clauses and sequence functions), or it uses a
    /// forbidden clause.
    StatementNotAllowed,
    /// The statement reads or writes a table outside the handle's allow-list or a system catalog.
    TableNotAllowed,
    /// The statement calls a function that is neither on the dialect's allow-list of functions
    /// that read nothing beyond their arguments (string, numeric, date/time, JSON, aggregate,
    /// window, conditional) nor in the handle's `allow_functions`, or a function qualified
    /// with a schema other than the server's own catalog. The message names the function (T25).
    FunctionNotAllowed,
    /// The statement names a column that the handle's column rules do not allow, reads a
    /// restricted table with `*` or as a whole row, or joins it with `NATURAL`. The message
    /// names the column or the table (T25).
    ColumnNotAllowed,
    /// The URL, scheme, host, port, path or method is outside the handle's bound destinations.
    DestinationNotAllowed,
    /// The destination resolved to an address the handle does not bind (loopback, private,
    /// link-local, metadata).
    AddressRefused,
    /// The agent exceeded its call rate.
    RateLimited,
    /// A size limit on the request was exceeded.
    LimitExceeded,
    /// The upstream service could not be reached or failed.
    UpstreamUnavailable,
    /// The upstream service or the database did not answer in time.
    UpstreamTimeout,
    /// The database refused or failed the statement.
    QueryFailed,
    /// The secret behind the handle could not be resolved.
    SecretUnavailable,
    /// The audit record could not be written, so the call was refused.
    AuditUnavailable,
    /// The request body is not valid JSON or not the expected shape.
    BadRequest,
    /// The route does not exist.
    NotFound,
    /// An unexpected failure inside airlock.
    Internal,
    /// An e-mail header value (to, cc, subject, reply_to) contains CR or LF. Refused, never
    /// stripped (T10).
    HeaderInjection,
    /// An e-mail recipient is outside the handle's allow-list; nothing was sent (T10).
    RecipientNotAllowed,
    /// The outgoing message contains a known secret or one of its encodings; nothing was sent,
    /// since an e-mail cannot be redacted after it leaves (T10).
    OutboundContainsSecret,
    /// A command argument is missing, unknown, or outside the handle's argument template (T08).
    ArgumentNotAllowed,
    /// The command did not finish in time; its whole process group was killed.
    CommandTimeout,
    /// The command could not be started.
    CommandFailed,
    /// The per-call sandbox for `run_command` cannot be built on this host (bubblewrap missing,
    /// user namespaces refused by AppArmor or a container's seccomp profile, ...), so the command
    /// was not run: a command never runs unsandboxed unless `[sandbox] insecure_no_sandbox` is
    /// set (T23). The message gives the reason.
    SandboxUnavailable,
    /// The one-time link is unknown, used up or expired; the three are indistinguishable on
    /// purpose (T17). A wrong proof gets the same answer.
    ShareUnavailable,
    /// The share request or link is malformed (bad id, proof, ciphertext or limits).
    InvalidShare,
    /// The lease asked for is wider than the handle's lease policy allows (TTL over the limit,
    /// a scope the handle does not grant, or a handle that cannot be leased).
    LeaseNotAllowed,
    /// A sub-agent was asked for a grant its parent does not hold, or for a longer life.
    GrantNotAllowed,
    /// A sub-agent was refused because its parent already has as many live children as its
    /// limit allows, or because the chain of sub-agents would be deeper than the limit (T27).
    ChildLimit,
    /// The lease no longer stands: the grant that allowed it was removed or its agent's chain
    /// was revoked. The lease has been revoked; nothing ran (T27).
    LeaseRevoked,
    /// The resource exists but is in a state that forbids the operation (a closed task).
    Conflict,
    /// The call needs a person's approval first. Nothing was executed; the response carries the
    /// approval's id and the page where an approver decides. Repeat the same call, with the same
    /// arguments, once it is approved: an approval is bound to that exact call and used once.
    ApprovalRequired,
    /// An approver denied this exact call. Nothing was executed.
    ApprovalDenied,
    /// An S3 bucket outside the handle's or the lease's buckets; nothing was requested.
    BucketNotAllowed,
    /// The operation is outside the lease's scope (a write on a `read_only` lease); nothing
    /// was requested.
    OperationNotAllowed,
    /// An `http_request` header the agent may not set: credentials, routing, framing, hop-by-hop,
    /// `Range`, method and path overrides, `Forwarded`/`X-Forwarded-*`, `Accept-Encoding`, or a
    /// name given twice. Refused before any secret is resolved; nothing was sent (T24).
    HeaderNotAllowed,
    /// The upstream answered with a `Content-Encoding` (or transfer coding) airlock does not
    /// decode, or a body that fails to decode. It is refused rather than returned undecoded,
    /// since the scrubber cannot see a secret inside compressed bytes (T24).
    UndecodableResponse,
    /// The `oauth` handle has no connected account yet: call `connect_account` and have the
    /// owner finish the link. Nothing was sent.
    AccountNotConnected,
    /// The provider refused the account's refresh token (`invalid_grant`: revoked, expired or
    /// used twice) or a refresh may have spent it without an answer; the owner must connect the
    /// account again (`connect_account`). Nothing was sent.
    NeedsReauth,
    /// The connect link is unknown, used, expired or was finished in another browser; the cases
    /// are indistinguishable on purpose (T31).
    ConnectUnavailable,
    /// The owner named in `connect_account` is not one the handle allows.
    OwnerNotAllowed,
    /// The agent's token (of a trusted issuer whose scopes limit the tools) does not carry the
    /// scope `airlock:TOOL` for this tool. Nothing ran. Over MCP the answer is HTTP 403 with
    /// `WWW-Authenticate: Bearer error="insufficient_scope"`, so the client can ask for it.
    InsufficientScope,
    /// The intake link of a secret request is unknown, used, expired, or its proof is wrong;
    /// the cases are indistinguishable on purpose.
    RequestUnavailable,
    /// The handle a `request_secret` proposes already exists (a configured handle, or a request
    /// that is pending, received or approved).
    HandleExists,
    /// A submitted value does not open for this request: tampered ciphertext or context, or
    /// another request's key. Nothing was stored; the link stays usable.
    InvalidSubmission,
    /// A submitted value does not match the request's format hints (prefix, length, pattern).
    /// Nothing was stored; the link stays usable.
    ValueRejected,
}

impl ErrorCode {
    /// Every code, in declaration order, for documentation and uniqueness tests. Derived from
    /// the enum itself, so a new code is listed without anyone having to remember it.
    pub const ALL: &'static [ErrorCode] = <ErrorCode as strum::VariantArray>::VARIANTS;

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::HandleUnavailable => "handle-unavailable",
            ErrorCode::UnknownTool => "unknown-tool",
            ErrorCode::InvalidArguments => "invalid-arguments",
            ErrorCode::InvalidSql => "invalid-sql",
            ErrorCode::StatementNotAllowed => "statement-not-allowed",
            ErrorCode::TableNotAllowed => "table-not-allowed",
            ErrorCode::FunctionNotAllowed => "function-not-allowed",
            ErrorCode::ColumnNotAllowed => "column-not-allowed",
            ErrorCode::DestinationNotAllowed => "destination-not-allowed",
            ErrorCode::AddressRefused => "address-refused",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::LimitExceeded => "limit-exceeded",
            ErrorCode::UpstreamUnavailable => "upstream-unavailable",
            ErrorCode::UpstreamTimeout => "upstream-timeout",
            ErrorCode::QueryFailed => "query-failed",
            ErrorCode::SecretUnavailable => "secret-unavailable",
            ErrorCode::AuditUnavailable => "audit-unavailable",
            ErrorCode::BadRequest => "bad-request",
            ErrorCode::NotFound => "not-found",
            ErrorCode::Internal => "internal",
            ErrorCode::HeaderInjection => "header-injection",
            ErrorCode::RecipientNotAllowed => "recipient-not-allowed",
            ErrorCode::OutboundContainsSecret => "outbound-contains-secret",
            ErrorCode::ArgumentNotAllowed => "argument-not-allowed",
            ErrorCode::CommandTimeout => "command-timeout",
            ErrorCode::CommandFailed => "command-failed",
            ErrorCode::SandboxUnavailable => "sandbox-unavailable",
            ErrorCode::ShareUnavailable => "share-unavailable",
            ErrorCode::InvalidShare => "invalid-share",
            ErrorCode::LeaseNotAllowed => "lease-not-allowed",
            ErrorCode::GrantNotAllowed => "grant-not-allowed",
            ErrorCode::ChildLimit => "child-limit",
            ErrorCode::LeaseRevoked => "lease-revoked",
            ErrorCode::Conflict => "conflict",
            ErrorCode::ApprovalRequired => "approval-required",
            ErrorCode::ApprovalDenied => "approval-denied",
            ErrorCode::BucketNotAllowed => "bucket-not-allowed",
            ErrorCode::OperationNotAllowed => "operation-not-allowed",
            ErrorCode::HeaderNotAllowed => "header-not-allowed",
            ErrorCode::UndecodableResponse => "undecodable-response",
            ErrorCode::AccountNotConnected => "account-not-connected",
            ErrorCode::NeedsReauth => "needs-reauth",
            ErrorCode::ConnectUnavailable => "connect-unavailable",
            ErrorCode::OwnerNotAllowed => "owner-not-allowed",
            ErrorCode::InsufficientScope => "insufficient-scope",
            ErrorCode::RequestUnavailable => "request-unavailable",
            ErrorCode::HandleExists => "handle-exists",
            ErrorCode::InvalidSubmission => "invalid-submission",
            ErrorCode::ValueRejected => "value-rejected",
        }
    }

    /// The HTTP status that carries this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Unauthenticated => 401,
            ErrorCode::HandleUnavailable
            | ErrorCode::StatementNotAllowed
            | ErrorCode::TableNotAllowed
            | ErrorCode::FunctionNotAllowed
            | ErrorCode::ColumnNotAllowed
            | ErrorCode::DestinationNotAllowed
            | ErrorCode::AddressRefused
            | ErrorCode::RecipientNotAllowed
            | ErrorCode::OutboundContainsSecret
            | ErrorCode::ArgumentNotAllowed
            | ErrorCode::LeaseNotAllowed
            | ErrorCode::GrantNotAllowed
            | ErrorCode::ChildLimit
            | ErrorCode::LeaseRevoked
            // Not executed, as for any other refusal by policy; the body says what to do next.
            | ErrorCode::ApprovalRequired
            | ErrorCode::ApprovalDenied => 403,
            | ErrorCode::BucketNotAllowed
            | ErrorCode::OperationNotAllowed => 403,
            ErrorCode::OwnerNotAllowed => 403,
            ErrorCode::InsufficientScope => 403,
            ErrorCode::Conflict | ErrorCode::AccountNotConnected | ErrorCode::NeedsReauth => 409,
            ErrorCode::ConnectUnavailable | ErrorCode::RequestUnavailable => 404,
            ErrorCode::HandleExists => 409,
            ErrorCode::InvalidSubmission => 400,
            ErrorCode::ValueRejected => 422,
            ErrorCode::UnknownTool | ErrorCode::NotFound | ErrorCode::ShareUnavailable => 404,
            ErrorCode::InvalidArguments
            | ErrorCode::InvalidSql
            | ErrorCode::BadRequest
            | ErrorCode::HeaderInjection
            | ErrorCode::InvalidShare
            | ErrorCode::HeaderNotAllowed => 400,
            ErrorCode::RateLimited => 429,
            ErrorCode::LimitExceeded => 413,
            ErrorCode::QueryFailed => 422,
            ErrorCode::UpstreamUnavailable
            | ErrorCode::CommandFailed
            | ErrorCode::UndecodableResponse => 502,
            ErrorCode::UpstreamTimeout | ErrorCode::CommandTimeout => 504,
            ErrorCode::SecretUnavailable | ErrorCode::AuditUnavailable | ErrorCode::SandboxUnavailable => 503,
            ErrorCode::Internal => 500,
        }
    }

    /// The fixed message shown with this code when the caller gives none.
    pub fn default_message(self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "missing, malformed, unknown, revoked or expired agent token",
            ErrorCode::HandleUnavailable => "the handle is not available to this agent for this tool",
            ErrorCode::UnknownTool => "no such tool",
            ErrorCode::InvalidArguments => "the arguments do not match the tool's schema",
            ErrorCode::InvalidSql => "the query is not one valid SQL statement",
            ErrorCode::StatementNotAllowed => "this kind of statement is not allowed on this handle",
            ErrorCode::TableNotAllowed => "the statement touches a table this handle does not allow",
            ErrorCode::FunctionNotAllowed => "the statement calls a function this handle does not allow",
            ErrorCode::ColumnNotAllowed => "the statement names a column this handle does not allow",
            ErrorCode::DestinationNotAllowed => "the destination is not bound to this handle",
            ErrorCode::AddressRefused => "the destination address is not allowed for this handle",
            ErrorCode::RateLimited => "too many calls; retry later",
            ErrorCode::LimitExceeded => "a size limit was exceeded",
            ErrorCode::UpstreamUnavailable => "the upstream service could not be reached or failed",
            ErrorCode::UpstreamTimeout => "the upstream service did not answer in time",
            ErrorCode::QueryFailed => "the database rejected or failed the statement",
            ErrorCode::SecretUnavailable => "the credential behind this handle is unavailable",
            ErrorCode::AuditUnavailable => "the audit record could not be written; the call was refused",
            ErrorCode::BadRequest => "the request is not valid JSON of the expected shape",
            ErrorCode::NotFound => "not found",
            ErrorCode::Internal => "internal error",
            ErrorCode::HeaderInjection => "a header value contains CR or LF; nothing was sent",
            ErrorCode::RecipientNotAllowed => "a recipient is not allowed for this handle; nothing was sent",
            ErrorCode::OutboundContainsSecret => "the message contains a credential; nothing was sent",
            ErrorCode::ArgumentNotAllowed => "the arguments do not match this handle's argument template",
            ErrorCode::CommandTimeout => "the command did not finish in time and was killed",
            ErrorCode::CommandFailed => "the command could not be started",
            ErrorCode::SandboxUnavailable => "the command sandbox cannot be built on this host; the command was not run",
            ErrorCode::ShareUnavailable => "this link was already opened, has expired, or never existed",
            ErrorCode::InvalidShare => "the share request or link is malformed",
            ErrorCode::LeaseNotAllowed => "the lease is wider than this handle's lease policy allows",
            ErrorCode::GrantNotAllowed => "a sub-agent cannot hold more than its parent",
            ErrorCode::ChildLimit => "no more sub-agents: the live-children or depth limit is reached",
            ErrorCode::LeaseRevoked => "the lease was revoked: the grant that allowed it no longer stands",
            ErrorCode::Conflict => "the resource is in a state that does not allow this",
            ErrorCode::ApprovalRequired => "this call needs a person's approval; repeat it unchanged once approved",
            ErrorCode::ApprovalDenied => "an approver denied this call; nothing was executed",
            ErrorCode::BucketNotAllowed => "the bucket is not one this handle or lease names; nothing was requested",
            ErrorCode::OperationNotAllowed => "the operation is outside this lease's scope; nothing was requested",
            ErrorCode::HeaderNotAllowed => "a request header may not be set by the agent; nothing was sent",
            ErrorCode::UndecodableResponse => "the upstream response uses an unknown or corrupt content encoding; it was not returned",
            ErrorCode::AccountNotConnected => "no account is connected to this handle; ask its owner with connect_account",
            ErrorCode::NeedsReauth => "the connected account must be connected again by its owner (connect_account); nothing was sent",
            ErrorCode::ConnectUnavailable => "this connect link was already used, has expired, or never existed",
            ErrorCode::OwnerNotAllowed => "this owner may not connect an account to this handle",
            ErrorCode::InsufficientScope => "the token's scopes do not include this tool",
            ErrorCode::RequestUnavailable => "this request link is unknown, used or expired",
            ErrorCode::HandleExists => "a handle of this name exists or is already requested",
            ErrorCode::InvalidSubmission => "the submitted value does not open for this request",
            ErrorCode::ValueRejected => "the value does not match the format the request asks for",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused or failed call, as an executor or the broker reports it.
///
/// `message` is shown to the agent: it must be a fixed text or built only from agent-supplied,
/// non-secret facts (a column index, a table name the agent wrote). `detail` goes only to the
/// operator log, after scrubbing.
#[derive(Clone, Debug)]
pub struct CallError {
    /// The stable code.
    pub code: ErrorCode,
    /// The message the agent sees.
    pub message: String,
    /// Operator-only detail (for example a driver error). Scrubbed before it is logged.
    pub detail: Option<String>,
}

impl CallError {
    /// An error with the code's default message.
    pub fn new(code: ErrorCode) -> Self {
        CallError { code, message: code.default_message().to_owned(), detail: None }
    }

    /// An error with a specific agent-facing message.
    pub fn with_message(code: ErrorCode, message: impl Into<String>) -> Self {
        CallError { code, message: message.into(), detail: None }
    }

    /// Adds operator-only detail.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for CallError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_kebab_case_and_serialize_as_their_name() {
        let mut seen = HashSet::new();
        for c in ErrorCode::ALL {
            let s = c.as_str();
            assert!(seen.insert(s), "duplicate {s}");
            assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'), "{s}");
            assert_eq!(serde_json::to_value(c).unwrap(), serde_json::Value::String(s.into()));
            assert!((400..600).contains(&c.http_status()));
        }
    }

    #[test]
    fn all_lists_every_code_once_in_declaration_order() {
        // The first and the last variant, so that a list cut short or reordered shows.
        assert_eq!(ErrorCode::ALL.first(), Some(&ErrorCode::Unauthenticated));
        assert_eq!(ErrorCode::ALL.last(), Some(&ErrorCode::ValueRejected));
        assert_eq!(ErrorCode::ALL.iter().collect::<HashSet<_>>().len(), ErrorCode::ALL.len());
    }

    #[test]
    fn sql_function_and_column_refusals_have_their_own_codes() {
        // T25: refusals by policy, like table-not-allowed.
        assert_eq!(ErrorCode::FunctionNotAllowed.as_str(), "function-not-allowed");
        assert_eq!(ErrorCode::ColumnNotAllowed.as_str(), "column-not-allowed");
        assert_eq!(ErrorCode::FunctionNotAllowed.http_status(), 403);
        assert_eq!(ErrorCode::ColumnNotAllowed.http_status(), 403);
        assert!(ErrorCode::ALL.contains(&ErrorCode::FunctionNotAllowed));
        assert!(ErrorCode::ALL.contains(&ErrorCode::ColumnNotAllowed));
    }

    #[test]
    fn http_header_and_decoding_refusals_have_their_own_codes() {
        // T24: a refused request header is the agent's to fix (400); an undecodable body is the
        // upstream's fault (502). Both are part of the stable contract.
        assert_eq!(ErrorCode::HeaderNotAllowed.as_str(), "header-not-allowed");
        assert_eq!(ErrorCode::HeaderNotAllowed.http_status(), 400);
        assert_eq!(ErrorCode::UndecodableResponse.as_str(), "undecodable-response");
        assert_eq!(ErrorCode::UndecodableResponse.http_status(), 502);
        assert!(ErrorCode::ALL.contains(&ErrorCode::HeaderNotAllowed));
        assert!(ErrorCode::ALL.contains(&ErrorCode::UndecodableResponse));
    }
}
