//! `[handles.X.aws]`: what the leases of an aws handle may grant.

use super::database::{default_lease_scopes, Scope};
use super::defaults;
use super::problem::ProblemCode;
use super::source::{FieldPath, Report};
use serde::Deserialize;

/// Constraints of an `aws` handle: what its leases may grant. None of them comes from the agent.
///
/// The handle's secret is the broker's own access key pair, as JSON:
/// `{"access_key_id": "...", "secret_access_key": "..."}` (plus `"session_token"` when the
/// broker itself runs on temporary credentials). Agents never use it: each lease calls STS
/// `AssumeRole` for `role_arn` with a session policy naming only the lease's buckets and
/// actions, and the agent uses the temporary credentials through `s3_object` on the lease
/// handle. STS credentials cannot be revoked early: a lease's duration is its exposure bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsConstraints {
    /// The region requests are signed for (`us-east-1`).
    pub region: String,
    /// An endpoint for STS and S3 (scheme, host and port; for an emulator or a private
    /// endpoint), used path-style. `None`: `https://sts.{region}.amazonaws.com` and
    /// `https://s3.{region}.amazonaws.com`.
    pub endpoint: Option<String>,
    /// The role every lease assumes.
    pub role_arn: String,
    /// The buckets a lease may name.
    pub buckets: Vec<String>,
    /// The scopes a lease may take: `read_only` (GetObject, ListBucket) and `read_write`
    /// (also PutObject, DeleteObject). Default `read_only` only.
    pub scopes: Vec<Scope>,
    /// Longest lease, in seconds: 900 (STS's minimum, the default) to 43200.
    pub max_ttl_seconds: u64,
    /// Largest object read or written through `s3_object`, in bytes.
    pub max_object_bytes: usize,
    /// Most keys a `list` returns.
    pub max_keys: usize,
    /// Whole-request timeout for STS and S3.
    pub timeout_ms: u64,
}

/// The shortest session STS grants, and so the shortest aws lease.
pub const AWS_MIN_TTL_SECONDS: u64 = 900;
/// The longest session STS grants for a role.
pub const AWS_MAX_TTL_SECONDS: u64 = 43_200;

/// `[handles.X.aws]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAws {
    region: String,
    #[serde(default)]
    endpoint: Option<String>,
    role_arn: String,
    buckets: Vec<String>,
    #[serde(default = "default_lease_scopes")]
    scopes: Vec<Scope>,
    #[serde(default = "default_aws_ttl")]
    max_ttl_seconds: u64,
    #[serde(default = "defaults::max_bytes")]
    max_object_bytes: usize,
    #[serde(default = "default_max_keys")]
    max_keys: usize,
    #[serde(default = "defaults::http_timeout_ms")]
    timeout_ms: u64,
}

/// S3 bucket naming rules: 3 to 63 characters of `a-z`, `0-9`, `.` and `-`, starting and ending
/// with a letter or digit, no `..`, not an IPv4 address.
pub fn valid_bucket_name(b: &str) -> bool {
    let bytes = b.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && !b.contains("..")
        && b.parse::<std::net::Ipv4Addr>().is_err()
}

/// A role ARN: `arn:PARTITION:iam::ACCOUNT:role/NAME`.
fn valid_role_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.split(':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && matches!(parts[1], "aws" | "aws-cn" | "aws-us-gov")
        && parts[2] == "iam"
        && parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && parts[5].strip_prefix("role/").is_some_and(|n| !n.is_empty())
        && arn.len() <= 2048
        && arn.bytes().all(|b| b.is_ascii_graphic())
}

impl RawAws {
    /// Checks every setting; drops repeated buckets.
    pub(super) fn check(self, r: &mut Report<'_, '_>, at: &FieldPath) -> Option<AwsConstraints> {
        let before = r.count();
        let region = &self.region;
        if region.is_empty() || region.len() > 32 || !region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            r.problem(&at.join("region"), ProblemCode::BadRegion, "not a region name (such as us-east-1)");
        }
        let endpoint = self.endpoint.as_deref().and_then(|e| check_endpoint(r, &at.join("endpoint"), e));
        if !valid_role_arn(&self.role_arn) {
            r.problem(&at.join("role_arn"), ProblemCode::BadRoleArn, "not a role ARN (arn:aws:iam::123456789012:role/NAME)");
        }
        if self.buckets.is_empty() {
            r.problem(&at.join("buckets"), ProblemCode::EmptyList, "list at least one bucket");
        }
        let mut buckets = Vec::new();
        for b in &self.buckets {
            if !valid_bucket_name(b) {
                r.problem(&at.join("buckets"), ProblemCode::BadBucketName, format!("'{}' is not an S3 bucket name", b.escape_debug()));
            }
            if !buckets.contains(b) {
                buckets.push(b.clone());
            }
        }
        if self.scopes.is_empty() {
            r.problem(&at.join("scopes"), ProblemCode::EmptyList, "name at least one scope");
        }
        if !(AWS_MIN_TTL_SECONDS..=AWS_MAX_TTL_SECONDS).contains(&self.max_ttl_seconds) {
            r.problem(
                &at.join("max_ttl_seconds"),
                ProblemCode::OutOfRange,
                format!("must be between {AWS_MIN_TTL_SECONDS} (STS's minimum) and {AWS_MAX_TTL_SECONDS}"),
            );
        }
        if self.max_object_bytes == 0 || self.max_object_bytes > 64 << 20 {
            r.problem(&at.join("max_object_bytes"), ProblemCode::OutOfRange, "must be between 1 and 67108864");
        }
        if self.max_keys == 0 || self.max_keys > 1000 {
            r.problem(&at.join("max_keys"), ProblemCode::OutOfRange, "must be between 1 and 1000");
        }
        if self.timeout_ms == 0 {
            r.problem(&at.join("timeout_ms"), ProblemCode::OutOfRange, "must be at least 1");
        }
        if r.count() != before {
            return None;
        }
        Some(AwsConstraints {
            region: self.region,
            endpoint,
            role_arn: self.role_arn,
            buckets,
            scopes: self.scopes,
            max_ttl_seconds: self.max_ttl_seconds,
            max_object_bytes: self.max_object_bytes,
            max_keys: self.max_keys,
            timeout_ms: self.timeout_ms,
        })
    }
}

/// An endpoint is an http(s) origin; returned as one, without a trailing `/`.
fn check_endpoint(r: &mut Report<'_, '_>, at: &FieldPath, e: &str) -> Option<String> {
    let u = match url::Url::parse(e) {
        Ok(u) => u,
        Err(err) => {
            r.problem(at, ProblemCode::BadUrl, format!("not a URL: {err}"));
            return None;
        }
    };
    if u.scheme() != "https" && u.scheme() != "http" {
        r.problem(at, ProblemCode::BadUrl, "scheme must be https or http");
        return None;
    }
    if !u.username().is_empty() || u.password().is_some() || u.query().is_some() || u.fragment().is_some() || u.path() != "/" || u.host().is_none() {
        r.problem(at, ProblemCode::BadUrl, "an endpoint is scheme, host and port only");
        return None;
    }
    Some(u.origin().ascii_serialization())
}

fn default_aws_ttl() -> u64 {
    AWS_MIN_TTL_SECONDS
}
fn default_max_keys() -> usize {
    1000
}
