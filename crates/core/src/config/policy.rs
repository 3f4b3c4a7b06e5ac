//! `[policy]`: extra Cedar policy files.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `[policy]`
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Extra Cedar policy files, relative to the config.
    #[serde(default)]
    pub files: Vec<PathBuf>,
}

impl PolicyConfig {
    /// The same files, made absolute.
    pub(super) fn resolved(self, base: &Path) -> PolicyConfig {
        PolicyConfig { files: self.files.iter().map(|f| base.join(f)).collect() }
    }
}
