//! Plaintext credential material.
//!
//! [`Secret`] has no `Debug` output beyond a placeholder, no `Display`, no `Serialize`, and it
//! zeroizes its buffer on drop. Only executors, vault backends and the scrubber's matcher builder
//! call [`Secret::expose_secret`]; everything on the agent side of the boundary is built from types
//! that cannot hold one.

use std::fmt;
use zeroize::Zeroizing;

/// A plaintext secret. Cannot be printed or serialized; zeroized on drop.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Takes ownership of `bytes`; the buffer is zeroized when the secret is dropped.
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(Zeroizing::new(bytes))
    }

    /// Copies `s` into a new secret.
    pub fn from_str_value(s: &str) -> Self {
        Secret::new(s.as_bytes().to_vec())
    }

    /// The plaintext. Call only where the value is used for its purpose (an executor injecting it,
    /// a backend encrypting it, the scrubber building its matcher).
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// The plaintext as UTF-8, if it is.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Length in bytes (not secret in itself: one-time links pad to hide it).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the secret holds no byte.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([hidden])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::from_str_value("hunter2-canary");
        let shown = format!("{s:?} {:#?}", s);
        assert!(!shown.contains("hunter2"));
        assert_eq!(s.expose_str(), Some("hunter2-canary"));
    }
}
