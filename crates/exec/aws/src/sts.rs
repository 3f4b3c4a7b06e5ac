//! STS `AssumeRole` for a lease.

use crate::creds::AwsCredentials;
use crate::sign::{signature_headers, Service, SignRequest};
use crate::{error_code, read_capped, sts_url, transport, AwsExecutor, MAX_META_BYTES};
use airlock_core::config::{AwsConstraints, AWS_MAX_TTL_SECONDS, AWS_MIN_TTL_SECONDS};
use airlock_core::{CallError, ErrorCode, Secret};
use serde::Deserialize;
use std::time::Duration;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AssumeRoleResponse {
    assume_role_result: AssumeRoleResult,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AssumeRoleResult {
    credentials: StsCredentials,
}

#[derive(Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(rename_all = "PascalCase")]
struct StsCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
}

/// The form body of an `AssumeRole` call.
/// Values are percent-encoded as the AWS SDKs do (everything but `A-Z a-z 0-9 - _ . ~`).
pub(crate) fn assume_role_form(role_arn: &str, session_name: &str, duration: u64, policy: &str) -> String {
    let enc = |v: &str| percent_encoding::utf8_percent_encode(v, crate::AWS_URI).to_string();
    format!(
        "Action=AssumeRole&Version=2011-06-15&RoleArn={}&RoleSessionName={}&DurationSeconds={duration}&Policy={}",
        enc(role_arn),
        enc(session_name),
        enc(policy)
    )
}

fn unavailable(message: &str) -> CallError {
    CallError::with_message(ErrorCode::UpstreamUnavailable, message)
}

impl AwsExecutor {
    /// Calls STS `AssumeRole` for the handle's role with the broker's key pair `base`, the
    /// session `name`, the inline session `policy` and `duration` seconds (900 to 43200, as STS
    /// requires; checked again here). Returns the temporary credentials as a secret for the
    /// vault (see [`AwsCredentials`]). Nothing of STS's answer but its error code reaches the
    /// message; a transport failure is `upstream-unavailable` or `upstream-timeout`.
    pub async fn assume_role(
        &self,
        c: &AwsConstraints,
        base: &Secret,
        name: &str,
        policy: &str,
        duration: u64,
    ) -> Result<Secret, CallError> {
        if !(AWS_MIN_TTL_SECONDS..=AWS_MAX_TTL_SECONDS).contains(&duration) {
            return Err(CallError::new(ErrorCode::LeaseNotAllowed));
        }
        let creds = AwsCredentials::from_secret(base)
            .map_err(|m| CallError::new(ErrorCode::SecretUnavailable).detail(format!("aws handle secret: {m}")))?;
        let url = sts_url(c);
        let body = assume_role_form(&c.role_arn, name, duration, policy);
        let ctype = "application/x-www-form-urlencoded; charset=utf-8";
        let signed = signature_headers(&creds, &c.region, Service::Sts, &SignRequest { method: "POST", url: &url, headers: &[("content-type", ctype)], body: body.as_bytes() })
            .map_err(|e| CallError::new(ErrorCode::Internal).detail(e))?;
        let mut req = self
            .client
            .post(&url)
            .timeout(Duration::from_millis(c.timeout_ms))
            .header("content-type", ctype)
            .body(body);
        for (k, v) in &signed {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req.send().await.map_err(|e| transport(&e, "STS"))?;
        let status = resp.status();
        let (bytes, cut) = read_capped(resp, MAX_META_BYTES).await.map_err(|e| transport(&e, "STS"))?;
        let bytes = Zeroizing::new(bytes);
        if !status.is_success() {
            let code = error_code(&bytes).unwrap_or_else(|| "no error code".into());
            return Err(unavailable(&format!("STS refused AssumeRole ({code})")).detail(format!("STS status {status}")));
        }
        if cut {
            return Err(unavailable("STS answered with an oversized body"));
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| unavailable("STS answered with a body that is not UTF-8"))?;
        let mut parsed: AssumeRoleResponse =
            quick_xml::de::from_str(text).map_err(|_| unavailable("STS answered with a body that is not an AssumeRole result"))?;
        let sc = &mut parsed.assume_role_result.credentials;
        let out = AwsCredentials::new(
            std::mem::take(&mut sc.access_key_id),
            std::mem::take(&mut sc.secret_access_key),
            Some(std::mem::take(&mut sc.session_token)),
        );
        let secret = out.to_secret();
        // Check the shape the vault will hold (non-empty printable values).
        AwsCredentials::from_secret(&secret).map_err(|_| unavailable("STS answered with unusable credentials"))?;
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_assume_role_form_carries_role_session_duration_and_policy() {
        let f = assume_role_form("arn:aws:iam::123456789012:role/r", "bot@l1", 900, r#"{"Version":"2012-10-17"}"#);
        assert_eq!(
            f,
            "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fr&RoleSessionName=bot%40l1&DurationSeconds=900&Policy=%7B%22Version%22%3A%222012-10-17%22%7D"
        );
    }

    #[test]
    fn an_sts_answer_parses_into_credentials() {
        let xml = r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult><Credentials><AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey>sk/1+</SecretAccessKey><SessionToken>tok=</SessionToken><Expiration>2030-01-01T00:00:00Z</Expiration></Credentials><AssumedRoleUser><Arn>a</Arn><AssumedRoleId>b</AssumedRoleId></AssumedRoleUser></AssumeRoleResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></AssumeRoleResponse>"#;
        let p: AssumeRoleResponse = quick_xml::de::from_str(xml).unwrap();
        let c = &p.assume_role_result.credentials;
        assert_eq!((c.access_key_id.as_str(), c.secret_access_key.as_str(), c.session_token.as_str()), ("ASIA1", "sk/1+", "tok="));
    }
}
