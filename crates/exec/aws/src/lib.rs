//! AWS for airlock: the lease provider of `aws` handles (STS `AssumeRole` with an inline session
//! policy) and the `s3_object` executor that uses a lease's temporary credentials.
//!
//! An `aws` handle holds the broker's own access key pair. Agents never use it: a lease calls
//! [`AwsExecutor::assume_role`] with a session policy built by [`session_policy`] from the
//! lease's scope and buckets (nothing else is ever granted), for the lease's duration (900
//! seconds at least, as STS requires). The temporary credentials are returned as a [`Secret`]
//! for the broker's vault; they never leave the broker. `s3_object` is checked with no secret
//! and no I/O ([`AwsExecutor::validate`]: the bucket must be one the lease names, the
//! operation within its scope, the key well-formed, the body within the cap) and then signed
//! with SigV4 by the AWS SDK's signer ([`AwsExecutor::execute`]), with results capped before
//! the body is read in full. Failures map to fixed codes; S3 and STS error bodies (which can
//! name the access key id) never reach the agent, only their error code.
//!
//! STS credentials cannot be revoked before they expire: revoking a lease makes the broker
//! forget them, but whoever held them could use them until their expiry. They never leave the
//! broker, and the lease's duration (default 900 s, STS's minimum) bounds the exposure.
#![forbid(unsafe_code)]

mod creds;
pub mod kms;
mod policy;
mod s3;
mod sign;
mod sts;
mod tool;

pub use creds::{secret_parts, AwsCredentials};
pub use policy::{session_name, session_policy};
pub use s3::{S3Args, ValidatedS3};

use airlock_core::{CallError, ErrorCode};
use std::time::Duration;

/// Characters AWS wants percent-encoded in a URI component (all but unreserved ones).
pub(crate) const AWS_URI: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// A transport failure: the code says timeout or unavailable; the detail (operator only) names
/// the service and reqwest's error, which carries no credential.
pub(crate) fn transport(e: &reqwest::Error, service: &str) -> CallError {
    let code = if e.is_timeout() { ErrorCode::UpstreamTimeout } else { ErrorCode::UpstreamUnavailable };
    CallError::with_message(code, format!("{service} could not be reached")).detail(format!("{service}: {e}"))
}

/// Bytes of an STS answer or an S3 error body read at most.
const MAX_META_BYTES: usize = 64 * 1024;

/// The executor: one HTTP client (rustls, no redirects) for STS and S3.
#[derive(Clone, Debug)]
pub struct AwsExecutor {
    client: reqwest::Client,
}

impl Default for AwsExecutor {
    fn default() -> Self {
        Self::new()
    }
}

impl AwsExecutor {
    /// A new executor.
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .no_proxy()
            .build()
            .expect("the HTTP client builds");
        AwsExecutor { client }
    }
}

/// The STS endpoint of a handle.
fn sts_url(c: &airlock_core::config::AwsConstraints) -> String {
    match &c.endpoint {
        Some(e) => format!("{e}/"),
        None => format!("https://sts.{}.amazonaws.com/", c.region),
    }
}

/// The S3 endpoint (path-style) of a handle, without a trailing slash.
fn s3_base(c: &airlock_core::config::AwsConstraints) -> String {
    match &c.endpoint {
        Some(e) => e.clone(),
        None => format!("https://s3.{}.amazonaws.com", c.region),
    }
}

/// The AWS error code of an error body (`<Code>AccessDenied</Code>`), if it is a plain word.
/// Only this reaches the agent: the rest of the body can name the access key id.
fn error_code(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<Code>")? + "<Code>".len();
    let end = start + text[start..].find("</Code>")?;
    let code = &text[start..end];
    (!code.is_empty() && code.len() <= 64 && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'))
        .then(|| code.to_owned())
}

/// Reads at most `cap` bytes of a response body; the bool says whether more was left.
async fn read_capped(resp: reqwest::Response, cap: usize) -> Result<(Vec<u8>, bool), reqwest::Error> {
    use futures::StreamExt;
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let room = cap - out.len();
        if chunk.len() > room {
            out.extend_from_slice(&chunk[..room]);
            return Ok((out, true));
        }
        out.extend_from_slice(&chunk);
    }
    Ok((out, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_aws_error_code_is_taken_from_an_error_body() {
        let body = b"<Error><Code>SignatureDoesNotMatch</Code><AWSAccessKeyId>ASIAEXAMPLE</AWSAccessKeyId></Error>";
        assert_eq!(error_code(body).as_deref(), Some("SignatureDoesNotMatch"));
        assert_eq!(error_code(b"<Error><Code>a b<x></Code></Error>"), None);
        assert_eq!(error_code(b"no xml"), None);
    }
}
