//! AWS credentials as airlock stores them: a JSON object in a [`Secret`].
//!
//! The base handle's secret is `{"access_key_id": "...", "secret_access_key": "..."}` (plus
//! `"session_token"` when the broker itself runs on temporary credentials); a lease's sealed
//! secret has the same shape with the STS session's three values.

use airlock_core::Secret;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// An access key pair and an optional session token. Zeroized on drop, never printed.
#[derive(Clone, Deserialize, Serialize, Zeroize, ZeroizeOnDrop)]
#[serde(deny_unknown_fields)]
pub struct AwsCredentials {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) session_token: Option<String>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AwsCredentials([hidden])")
    }
}

impl AwsCredentials {
    /// Parses a secret of the shape above. The error says what is wrong, never a value.
    pub fn from_secret(s: &Secret) -> Result<AwsCredentials, &'static str> {
        let c: AwsCredentials = serde_json::from_slice(s.expose_secret())
            .map_err(|_| "an aws secret is JSON {\"access_key_id\": ..., \"secret_access_key\": ...}")?;
        let plausible = |v: &str| !v.is_empty() && v.len() <= 4096 && v.bytes().all(|b| b.is_ascii_graphic());
        if !plausible(&c.access_key_id) || !plausible(&c.secret_access_key) || c.session_token.as_deref().is_some_and(|t| !plausible(t)) {
            return Err("an aws secret's values are non-empty printable ASCII");
        }
        Ok(c)
    }

    /// The same credentials as a secret, for the vault.
    pub fn to_secret(&self) -> Secret {
        Secret::new(serde_json::to_vec(self).expect("strings serialize"))
    }

    pub(crate) fn new(access_key_id: String, secret_access_key: String, session_token: Option<String>) -> AwsCredentials {
        AwsCredentials { access_key_id, secret_access_key, session_token }
    }
}

/// The values of an aws secret that the scrubber must know one by one (the access key id, the
/// secret key and the session token), besides the whole JSON text. Empty when the secret is
/// not of that shape.
pub fn secret_parts(s: &Secret) -> Vec<Secret> {
    match AwsCredentials::from_secret(s) {
        Ok(c) => {
            let mut v = vec![Secret::from_str_value(&c.access_key_id), Secret::from_str_value(&c.secret_access_key)];
            if let Some(t) = &c.session_token {
                v.push(Secret::from_str_value(t));
            }
            v
        }
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_parses_round_trips_and_splits_into_its_values() {
        let s = Secret::from_str_value(r#"{"access_key_id":"AKIAEXAMPLE1","secret_access_key":"wJalrXUtnFEMI/K7MDENG"}"#);
        let c = AwsCredentials::from_secret(&s).unwrap();
        assert_eq!(format!("{c:?}"), "AwsCredentials([hidden])");
        let back = AwsCredentials::from_secret(&c.to_secret()).unwrap();
        assert_eq!((back.access_key_id.as_str(), back.session_token.as_deref()), ("AKIAEXAMPLE1", None));
        let parts: Vec<String> = secret_parts(&s).iter().map(|p| p.expose_str().unwrap().to_owned()).collect();
        assert_eq!(parts, ["AKIAEXAMPLE1", "wJalrXUtnFEMI/K7MDENG"]);
        let t = AwsCredentials::new("ASIA1".into(), "sk".into(), Some("tok en".into()));
        assert_eq!(secret_parts(&t.to_secret()).len(), 0, "a value with a space is not a credential");
    }

    #[test]
    fn malformed_secrets_are_refused_without_echoing_them() {
        for bad in [r#"AKIA:secret"#, r#"{"access_key_id":"A"}"#, r#"{"access_key_id":"","secret_access_key":"x"}"#, r#"{"access_key_id":"A","secret_access_key":"x","extra":1}"#] {
            let e = AwsCredentials::from_secret(&Secret::from_str_value(bad)).unwrap_err();
            assert!(!e.contains("AKIA") && !e.contains("secret\""), "{e}");
        }
    }
}
