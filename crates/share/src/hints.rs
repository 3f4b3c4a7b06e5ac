//! What a value a person sends in must look like (`request_secret`'s format hints), checked on
//! the plaintext here, the one crate of the broker's that opens it, so that the broker only
//! learns yes or no.

use airlock_core::Secret;

/// Format hints of a request. Lengths count characters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hints {
    /// The value starts with this text.
    pub prefix: Option<String>,
    /// At least this many characters.
    pub min_length: Option<usize>,
    /// At most this many characters.
    pub max_length: Option<usize>,
    /// A regular expression the whole value must match.
    pub pattern: Option<String>,
}

/// Compiled size limit of a hint's pattern (it is agent text).
const PATTERN_SIZE_LIMIT: usize = 1 << 16;

/// Compiles a pattern anchored at both ends, within the size limit.
pub fn compile(pattern: &str) -> Option<regex::Regex> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$")).size_limit(PATTERN_SIZE_LIMIT).build().ok()
}

impl Hints {
    /// Whether `value` is non-empty UTF-8 text without NUL that matches every hint.
    pub fn matches(&self, value: &Secret) -> bool {
        let Some(text) = value.expose_str() else { return false };
        let chars = text.chars().count();
        chars > 0
            && !text.contains('\0')
            && self.prefix.as_deref().is_none_or(|p| text.starts_with(p))
            && self.min_length.is_none_or(|m| chars >= m)
            && self.max_length.is_none_or(|m| chars <= m)
            && self.pattern.as_deref().is_none_or(|p| compile(p).is_some_and(|r| r.is_match(text)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Secret {
        Secret::from_str_value(v)
    }

    #[test]
    fn every_hint_is_checked() {
        let h = Hints { prefix: Some("sk_".into()), min_length: Some(6), max_length: Some(8), pattern: Some("sk_[a-z0-9]+".into()) };
        assert!(h.matches(&s("sk_abc1")));
        assert!(!h.matches(&s("pk_abc1")), "prefix");
        assert!(!h.matches(&s("sk_ab")), "min_length");
        assert!(!h.matches(&s("sk_abcdefg")), "max_length");
        assert!(!h.matches(&s("sk_ABC1")), "pattern");
        assert!(!h.matches(&s("sk_abc1\nx")), "the pattern is anchored at both ends");
        assert!(!Hints::default().matches(&s("")), "empty");
        assert!(!Hints::default().matches(&Secret::new(vec![0xff, 0xfe])), "not UTF-8");
        assert!(Hints::default().matches(&s("anything")));
    }
}
