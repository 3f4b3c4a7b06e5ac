//! AWS KMS `Encrypt` and `Decrypt` (the JSON protocol, `TrentService`), signed with SigV4 like
//! every other AWS request airlock makes. Used to wrap the master key at rest
//! (`[store.master_key] wrap = "aws_kms"`): the key never leaves KMS; airlock keeps only the
//! ciphertext blob, and unwrapping needs `kms:Decrypt` on that key. An encryption context binds
//! the blob to its purpose. Errors name the KMS error type, never a value.

use crate::creds::AwsCredentials;
use crate::sign::{signature_headers, Service, SignRequest};
use airlock_core::Secret;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use std::time::Duration;

/// Where KMS is and who calls it.
pub struct Kms<'a> {
    /// The credentials.
    pub creds: &'a AwsCredentials,
    /// The region (`eu-west-1`).
    pub region: &'a str,
    /// The endpoint; `None`: `https://kms.{region}.amazonaws.com`.
    pub endpoint: Option<&'a str>,
}

/// The encryption context every master-key blob carries.
const CONTEXT: (&str, &str) = ("airlock", "master-key");

impl Kms<'_> {
    async fn call(&self, target: &str, body: Value) -> Result<Value, String> {
        let url = match self.endpoint {
            Some(e) => format!("{}/", e.trim_end_matches('/')),
            None => format!("https://kms.{}.amazonaws.com/", self.region),
        };
        let body = serde_json::to_vec(&body).expect("JSON");
        let target = format!("TrentService.{target}");
        let headers = [("content-type", "application/x-amz-json-1.1"), ("x-amz-target", target.as_str())];
        let signed = signature_headers(self.creds, self.region, Service::Kms, &SignRequest { method: "POST", url: &url, headers: &headers, body: &body })?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        let mut req = http.post(&url).body(body);
        for (k, v) in headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).chain(signed) {
            req = req.header(k, v);
        }
        let resp = req.send().await.map_err(|e| format!("KMS at {url} unreachable: {}", e.without_url()))?;
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.map_err(|_| format!("KMS answered {status} with something that is not JSON"))?;
        if status != 200 {
            let kind = v.get("__type").and_then(Value::as_str).unwrap_or("unknown error");
            let kind = kind.rsplit('#').next().unwrap_or(kind);
            return Err(format!("KMS {target} refused ({status} {kind})"));
        }
        Ok(v)
    }

    /// Encrypts `plain` under `key_id`; returns the ciphertext blob.
    pub async fn encrypt(&self, key_id: &str, plain: &Secret) -> Result<Vec<u8>, String> {
        let b64 = zeroize::Zeroizing::new(B64.encode(plain.expose_secret()));
        let v = self
            .call("Encrypt", json!({"KeyId": key_id, "Plaintext": b64.as_str(), "EncryptionContext": {CONTEXT.0: CONTEXT.1}}))
            .await?;
        let blob = v.get("CiphertextBlob").and_then(Value::as_str).ok_or("KMS Encrypt answered no CiphertextBlob")?;
        B64.decode(blob).map_err(|_| "KMS Encrypt answered a CiphertextBlob that is not base64".to_owned())
    }

    /// Decrypts a blob `encrypt` made, with the key it names.
    pub async fn decrypt(&self, key_id: &str, blob: &[u8]) -> Result<Secret, String> {
        let v = self
            .call("Decrypt", json!({"KeyId": key_id, "CiphertextBlob": B64.encode(blob), "EncryptionContext": {CONTEXT.0: CONTEXT.1}}))
            .await?;
        let p = v.get("Plaintext").and_then(Value::as_str).ok_or("KMS Decrypt answered no Plaintext")?;
        let bytes = zeroize::Zeroizing::new(B64.decode(p).map_err(|_| "KMS Decrypt answered a Plaintext that is not base64".to_owned())?);
        Ok(Secret::new(bytes.to_vec()))
    }
}
