//! `[handles.X.results]`: what happens to a handle's results besides scrubbing.

use serde::Deserialize;

/// `[handles.X.results]`: what happens to a handle's results besides scrubbing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsPolicy {
    /// Active markup (Markdown images and links, HTML that fetches or navigates) pointing
    /// anywhere but the handle's own destinations (T11).
    #[serde(default)]
    pub markup: MarkupPolicy,
}

/// What to do with active markup in a handle's results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MarkupPolicy {
    /// Defang it (readable, neither clickable nor fetchable) and say so in the result.
    #[default]
    Neutralize,
    /// Leave it and say in the result that it is there.
    Flag,
    /// Nothing: for handles whose data is trusted.
    Off,
}
