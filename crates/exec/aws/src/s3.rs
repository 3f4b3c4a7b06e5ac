//! `s3_object {operation: get|put|list|delete, bucket, key?, body?}` on a lease of an aws handle.

use crate::creds::AwsCredentials;
use crate::sign::{signature_headers, Service, SignRequest};
use crate::{transport, AWS_URI};
use crate::{error_code, read_capped, s3_base, AwsExecutor, MAX_META_BYTES};
use airlock_core::config::{Handle, Scope};
use airlock_core::{CallError, ErrorCode, Secret};
use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, AsciiSet};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

/// Longest object key S3 accepts, in bytes.
const MAX_KEY_BYTES: usize = 1024;

/// What AWS leaves unencoded in a URI: `A-Z a-z 0-9 - _ . ~`.
/// The same in a key's path, where `/` separates segments.
const AWS_PATH: &AsciiSet = &AWS_URI.remove(b'/');

/// The arguments of `s3_object` besides `credential_handle`.
///
/// The doc comments of the fields are the descriptions in the tool's JSON Schema (`schemars`).
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Args {
    /// `get`, `put`, `list` or `delete`.
    pub operation: String,
    /// One of the lease's buckets.
    pub bucket: String,
    /// The object key (get, put, delete) or the key prefix (list).
    #[serde(default)]
    #[schemars(length(min = 1, max = MAX_KEY_BYTES))]
    pub key: Option<String>,
    /// The object's content, as text (put only).
    #[serde(default)]
    pub body: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Get,
    Put,
    List,
    Delete,
}

/// An `s3_object` call admitted against a lease: the bucket is one it names, the operation is
/// within its scope, the key and body are within limits. Holds no secret.
#[derive(Clone, Debug)]
pub struct ValidatedS3 {
    op: Op,
    bucket: String,
    key: Option<String>,
    body: Option<Vec<u8>>,
}

impl ValidatedS3 {
    /// True for put and delete, which change the bucket.
    pub fn writes(&self) -> bool {
        matches!(self.op, Op::Put | Op::Delete)
    }
}

fn bad(message: &str) -> CallError {
    CallError::with_message(ErrorCode::InvalidArguments, message)
}

/// A key S3 addresses as written: 1 to 1024 bytes, no control characters, and no `.` or `..`
/// segment (a URL parser would resolve it, and the request would name another path, or
/// another bucket, than the one checked).
fn check_key(k: &str) -> Result<(), CallError> {
    if k.is_empty() || k.len() > MAX_KEY_BYTES {
        return Err(bad("key must be 1 to 1024 bytes"));
    }
    if k.chars().any(char::is_control) {
        return Err(bad("key must not contain control characters"));
    }
    if k.split('/').any(|s| s == "." || s == "..") {
        return Err(bad("key must not contain a '.' or '..' segment"));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListBucketResult {
    #[serde(default)]
    is_truncated: bool,
    #[serde(default)]
    contents: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    key: String,
    #[serde(default)]
    size: u64,
}

impl AwsExecutor {
    /// Checks an `s3_object` call against the lease handle, with no secret and no I/O. The
    /// order is fixed: the operation, then the bucket (`bucket-not-allowed`), then the scope
    /// (`operation-not-allowed`), then the key and body.
    pub fn validate(handle: &Handle, a: &S3Args) -> Result<ValidatedS3, CallError> {
        let aws = handle.aws().ok_or_else(|| CallError::new(ErrorCode::HandleUnavailable))?;
        let op = match a.operation.as_str() {
            "get" => Op::Get,
            "put" => Op::Put,
            "list" => Op::List,
            "delete" => Op::Delete,
            _ => return Err(bad("operation must be one of get, put, list, delete")),
        };
        if !aws.buckets.contains(&a.bucket) {
            return Err(CallError::new(ErrorCode::BucketNotAllowed));
        }
        if matches!(op, Op::Put | Op::Delete) && !aws.scopes.contains(&Scope::ReadWrite) {
            return Err(CallError::with_message(ErrorCode::OperationNotAllowed, "this lease is read_only: get and list only"));
        }
        match (op, &a.key) {
            (Op::List, Some(k)) => check_key(k)?,
            (Op::List, None) => {}
            (_, Some(k)) => check_key(k)?,
            (_, None) => return Err(bad("key is required for get, put and delete")),
        }
        let body = match (op, &a.body) {
            (Op::Put, Some(b)) if b.len() > aws.max_object_bytes => {
                return Err(CallError::with_message(
                    ErrorCode::LimitExceeded,
                    format!("body is larger than this handle's {} bytes", aws.max_object_bytes),
                ))
            }
            (Op::Put, Some(b)) => Some(b.as_bytes().to_vec()),
            (Op::Put, None) => return Err(bad("body is required for put")),
            (_, Some(_)) => return Err(bad("body is only for put")),
            (_, None) => None,
        };
        Ok(ValidatedS3 { op, bucket: a.bucket.clone(), key: a.key.clone(), body })
    }

    /// Runs a validated call with the lease's temporary credentials, signing it with SigV4.
    pub async fn execute(&self, handle: &Handle, v: &ValidatedS3, secret: &Secret) -> Result<Value, CallError> {
        let aws = handle.aws().ok_or_else(|| CallError::new(ErrorCode::HandleUnavailable))?;
        // Checked again where the request is made: nothing leaves for another bucket.
        if !aws.buckets.contains(&v.bucket) {
            return Err(CallError::new(ErrorCode::BucketNotAllowed));
        }
        let creds = AwsCredentials::from_secret(secret)
            .map_err(|m| CallError::new(ErrorCode::SecretUnavailable).detail(format!("lease {}: {m}", handle.name)))?;
        let bucket = utf8_percent_encode(&v.bucket, AWS_URI).to_string();
        let base = format!("{}/{bucket}", s3_base(aws));
        let key = v.key.as_deref().map(|k| utf8_percent_encode(k, AWS_PATH).to_string());
        let (method, url) = match v.op {
            Op::Get => ("GET", format!("{base}/{}", key.unwrap_or_default())),
            Op::Put => ("PUT", format!("{base}/{}", key.unwrap_or_default())),
            Op::Delete => ("DELETE", format!("{base}/{}", key.unwrap_or_default())),
            Op::List => {
                let mut u = format!("{base}?list-type=2&max-keys={}", aws.max_keys);
                if let Some(p) = &v.key {
                    u.push_str("&prefix=");
                    u.push_str(&utf8_percent_encode(p, AWS_URI).to_string());
                }
                ("GET", u)
            }
        };
        let body = v.body.clone().unwrap_or_default();
        let signed = signature_headers(&creds, &aws.region, Service::S3, &SignRequest { method, url: &url, headers: &[], body: &body })
            .map_err(|e| CallError::new(ErrorCode::Internal).detail(e))?;
        let mut req = self
            .client
            .request(method.parse().expect("a fixed method"), &url)
            .timeout(Duration::from_millis(aws.timeout_ms));
        for (k, val) in &signed {
            req = req.header(k.as_str(), val.as_str());
        }
        if v.op == Op::Put {
            req = req.body(body);
        }
        let resp = req.send().await.map_err(|e| transport(&e, "S3"))?;
        let status = resp.status();
        if !status.is_success() {
            let (b, _) = read_capped(resp, MAX_META_BYTES).await.map_err(|e| transport(&e, "S3"))?;
            let code = error_code(&b).unwrap_or_else(|| "no error code".into());
            let c = if status.as_u16() == 404 { ErrorCode::NotFound } else { ErrorCode::UpstreamUnavailable };
            return Err(CallError::with_message(c, format!("S3 answered {} ({code})", status.as_u16())));
        }
        match v.op {
            Op::Get => {
                let content_type = resp
                    .headers()
                    .get("content-type")
                    .and_then(|h| h.to_str().ok())
                    .filter(|t| t.len() <= 128)
                    .map(str::to_owned);
                let (bytes, truncated) = read_capped(resp, aws.max_object_bytes).await.map_err(|e| transport(&e, "S3"))?;
                let (encoding, text) = body_text(bytes, truncated);
                Ok(json!({
                    "bucket": v.bucket, "key": v.key, "content_type": content_type,
                    "encoding": encoding, "body": text, "truncated": truncated,
                }))
            }
            Op::Put => {
                let etag = resp.headers().get("etag").and_then(|h| h.to_str().ok()).filter(|t| t.len() <= 128).map(str::to_owned);
                Ok(json!({"bucket": v.bucket, "key": v.key, "bytes": v.body.as_ref().map_or(0, Vec::len), "etag": etag}))
            }
            Op::Delete => Ok(json!({"bucket": v.bucket, "key": v.key, "deleted": true})),
            Op::List => {
                let cap = aws.max_keys * (MAX_KEY_BYTES * 6 + 512) + MAX_META_BYTES;
                let (bytes, cut) = read_capped(resp, cap).await.map_err(|e| transport(&e, "S3"))?;
                let unreadable = || CallError::with_message(ErrorCode::UpstreamUnavailable, "S3 answered with an unreadable listing");
                if cut {
                    return Err(unreadable());
                }
                let text = std::str::from_utf8(&bytes).map_err(|_| unreadable())?;
                let l: ListBucketResult = quick_xml::de::from_str(text).map_err(|_| unreadable())?;
                let keys: Vec<Value> = l.contents.iter().take(aws.max_keys).map(|e| json!({"key": e.key, "size": e.size})).collect();
                let truncated = l.is_truncated || l.contents.len() > aws.max_keys;
                Ok(json!({"bucket": v.bucket, "prefix": v.key, "keys": keys, "truncated": truncated}))
            }
        }
    }
}

/// An object's bytes as the agent sees them: UTF-8 text when they are (a character cut by the
/// cap is dropped), base64 otherwise.
fn body_text(mut bytes: Vec<u8>, truncated: bool) -> (&'static str, String) {
    match String::from_utf8(bytes) {
        Ok(s) => ("utf-8", s),
        Err(e) => {
            let utf8 = e.utf8_error();
            bytes = e.into_bytes();
            if truncated && utf8.error_len().is_none() {
                bytes.truncate(utf8.valid_up_to());
                return ("utf-8", String::from_utf8(bytes).expect("valid up to here"));
            }
            ("base64", base64::engine::general_purpose::STANDARD.encode(&bytes))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_core::config::{AwsConstraints, Constraints, SecretRef};
    use airlock_core::HandleName;

    fn lease(scope: Scope) -> Handle {
        Handle {
            name: HandleName::parse("S3__LABCDEF").unwrap(),
            kind: airlock_core::config::HandleKind::Aws,
            secret: SecretRef::Local("S3__LABCDEF".into()),
            description: String::new(),
            constraints: Constraints::Aws(AwsConstraints {
                region: "us-east-1".into(),
                endpoint: Some("http://127.0.0.1:9".into()),
                role_arn: "arn:aws:iam::123456789012:role/r".into(),
                buckets: vec!["leased".into()],
                scopes: vec![scope],
                max_ttl_seconds: 900,
                max_object_bytes: 8,
                max_keys: 10,
                timeout_ms: 1000,
            }),
        }
    }

    fn args(op: &str, bucket: &str, key: Option<&str>, body: Option<&str>) -> S3Args {
        S3Args { operation: op.into(), bucket: bucket.into(), key: key.map(Into::into), body: body.map(Into::into) }
    }

    fn code(r: Result<ValidatedS3, CallError>) -> &'static str {
        r.map(|_| "ok").unwrap_or_else(|e| e.code.as_str())
    }

    #[test]
    fn calls_outside_the_lease_are_refused_with_stable_codes() {
        let ro = lease(Scope::ReadOnly);
        let rw = lease(Scope::ReadWrite);
        assert_eq!(code(AwsExecutor::validate(&ro, &args("get", "leased", Some("a/b.txt"), None))), "ok");
        assert_eq!(code(AwsExecutor::validate(&ro, &args("list", "leased", None, None))), "ok");
        assert_eq!(code(AwsExecutor::validate(&ro, &args("get", "other", Some("k"), None))), "bucket-not-allowed");
        assert_eq!(code(AwsExecutor::validate(&ro, &args("get", "Leased", Some("k"), None))), "bucket-not-allowed");
        assert_eq!(code(AwsExecutor::validate(&ro, &args("put", "leased", Some("k"), Some("x")))), "operation-not-allowed");
        assert_eq!(code(AwsExecutor::validate(&ro, &args("delete", "leased", Some("k"), None))), "operation-not-allowed");
        assert_eq!(code(AwsExecutor::validate(&rw, &args("put", "leased", Some("k"), Some("x")))), "ok");
        assert_eq!(code(AwsExecutor::validate(&rw, &args("put", "leased", Some("k"), Some("123456789")))), "limit-exceeded");
        assert_eq!(code(AwsExecutor::validate(&rw, &args("copy", "leased", Some("k"), None))), "invalid-arguments");
        assert_eq!(code(AwsExecutor::validate(&rw, &args("get", "leased", None, None))), "invalid-arguments");
        assert_eq!(code(AwsExecutor::validate(&rw, &args("get", "leased", Some("k"), Some("x")))), "invalid-arguments");
        for key in ["", "a\nb", "../other/k", "a/./b", "a/..", &"k".repeat(1025)] {
            assert_eq!(code(AwsExecutor::validate(&rw, &args("get", "leased", Some(key), None))), "invalid-arguments", "{key:?}");
        }
    }

    #[test]
    fn bodies_are_text_when_utf8_and_base64_otherwise() {
        assert_eq!(body_text(b"hello".to_vec(), false), ("utf-8", "hello".to_owned()));
        assert_eq!(body_text(vec![0xff, 0x00], false), ("base64", "/wA=".to_owned()));
        // "é" cut in half by the cap: the half is dropped.
        assert_eq!(body_text(vec![b'a', 0xc3], true), ("utf-8", "a".to_owned()));
    }

    #[test]
    fn keys_are_encoded_as_aws_signs_them() {
        assert_eq!(utf8_percent_encode("a b/c+d~é", AWS_PATH).to_string(), "a%20b/c%2Bd~%C3%A9");
        assert_eq!(utf8_percent_encode("a/b", AWS_URI).to_string(), "a%2Fb");
    }
}
