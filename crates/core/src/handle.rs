//! Handle names: `[A-Z][A-Z0-9_]{0,63}`, exact match, no wildcards, no case folding (T16).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A validated handle name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct HandleName(String);

/// Why a string is not a handle name. The message never repeats the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a handle is 1 to 64 characters: an uppercase ASCII letter, then uppercase ASCII letters, digits or '_'")]
pub struct InvalidHandle;

impl HandleName {
    /// Parses a handle name, refusing anything outside the grammar (lowercase, non-ASCII
    /// look-alikes, spaces, wildcards).
    pub fn parse(s: &str) -> Result<Self, InvalidHandle> {
        let b = s.as_bytes();
        if b.is_empty() || b.len() > 64 || !b[0].is_ascii_uppercase() {
            return Err(InvalidHandle);
        }
        if !b.iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_') {
            return Err(InvalidHandle);
        }
        Ok(HandleName(s.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HandleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for HandleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HandleName({})", self.0)
    }
}

impl<'de> Deserialize<'de> for HandleName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HandleName::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for HandleName {
    type Err = InvalidHandle;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HandleName::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t16_handle_grammar_is_strict() {
        for ok in ["DB_PROD", "A", "X9_", &"A".repeat(64)] {
            assert!(HandleName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "db_prod", "Db_PROD", "DB_PROD ", " DB_PROD", "DB-PROD", "DB_*", "DB_PR\u{041E}D",
            "\u{0414}B", "9DB", "_DB", "DB\u{200B}PROD", &"A".repeat(65), "DB_PROD\n",
        ] {
            assert!(HandleName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
