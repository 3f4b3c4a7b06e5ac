//! SigV4 through the AWS SDK's own signer (`aws-sigv4`), without the rest of the SDK.

use crate::creds::AwsCredentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use std::time::SystemTime;

/// Which service a request is signed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Service {
    Sts,
    S3,
    Kms,
}

/// The parts of a request that are signed.
#[derive(Clone, Copy)]
pub(crate) struct SignRequest<'a> {
    /// The method, uppercase.
    pub method: &'a str,
    /// The URL, already percent-encoded.
    pub url: &'a str,
    /// Other headers sent and signed.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body.
    pub body: &'a [u8],
}

/// The headers to add to a request so that it carries a SigV4 signature of `creds` for
/// `region` (`Authorization`, `X-Amz-Date`, `X-Amz-Security-Token` with a session token, and
/// `x-amz-content-sha256` for S3). `url` is already percent-encoded; `headers` are the other
/// headers the request sends and that are signed with it. The error names no value.
pub(crate) fn signature_headers(creds: &AwsCredentials, region: &str, service: Service, req: &SignRequest<'_>) -> Result<Vec<(String, String)>, String> {
    let SignRequest { method, url, headers, body } = *req;
    let identity = aws_credential_types::Credentials::new(
        creds.access_key_id.as_str(),
        creds.secret_access_key.as_str(),
        creds.session_token.clone(),
        None,
        "airlock",
    )
    .into();
    let mut settings = SigningSettings::default();
    let name = match service {
        Service::Sts => "sts",
        Service::Kms => "kms",
        Service::S3 => {
            // S3 signs the path as sent (no double encoding, no normalisation) and wants the
            // payload hash in x-amz-content-sha256.
            settings.percent_encoding_mode = PercentEncodingMode::Single;
            settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
            "s3"
        }
    };
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(name)
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .map_err(|e| format!("signing parameters: {e}"))?
        .into();
    let req = SignableRequest::new(method, url, headers.iter().copied(), SignableBody::Bytes(body))
        .map_err(|e| format!("request not signable: {e}"))?;
    let (instructions, _) = sign(req, &params).map_err(|e| format!("signing failed: {e}"))?.into_parts();
    let (hs, params) = instructions.into_parts();
    if !params.is_empty() {
        return Err("the signer asked for query parameters".into());
    }
    Ok(hs.into_iter().map(|h| (h.name().to_owned(), h.value().to_owned())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_requests_carry_the_payload_hash_and_the_session_token() {
        let c = AwsCredentials::new("ASIAEXAMPLE".into(), "secretkey".into(), Some("sessiontoken".into()));
        let hs = signature_headers(&c, "us-east-1", Service::S3, &SignRequest { method: "PUT", url: "http://127.0.0.1:9/b/k%20x", headers: &[], body: b"hello" }).unwrap();
        let get = |n: &str| hs.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone());
        // sha256("hello")
        assert_eq!(get("x-amz-content-sha256").as_deref(), Some("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"));
        assert_eq!(get("x-amz-security-token").as_deref(), Some("sessiontoken"));
        let auth = get("authorization").unwrap();
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/"), "{auth}");
        assert!(auth.contains("/us-east-1/s3/aws4_request"), "{auth}");
        assert!(!auth.contains("secretkey"));
        let sts = signature_headers(&c, "eu-west-1", Service::Sts, &SignRequest { method: "POST", url: "http://127.0.0.1:9/", headers: &[("content-type", "application/x-www-form-urlencoded")], body: b"Action=x" }).unwrap();
        assert!(sts.iter().all(|(k, _)| !k.eq_ignore_ascii_case("x-amz-content-sha256")));
        let auth = sts.iter().find(|(k, _)| k == "authorization").unwrap().1.clone();
        assert!(auth.contains("/eu-west-1/sts/aws4_request") && auth.contains("content-type"), "{auth}");
    }
}
