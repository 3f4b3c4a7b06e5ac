//! The one door from an executor's output to a result: [`Scrubber::scrub_output`] takes
//! [`Unscrubbed`] output and gives [`Scrubbed`] output, which only this crate can make.

use crate::Scrubber;
use airlock_core::Unscrubbed;
use serde_json::Value;

/// Output that has passed through the scrubber: every known secret and encoding of one
/// redacted, and every cut's trailing fragment of one too.
#[derive(Debug)]
pub struct Scrubbed {
    value: Value,
    redactions: usize,
}

impl Scrubbed {
    /// The result.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The result, mutable for markup defanging (which only removes).
    pub fn value_mut(&mut self) -> &mut Value {
        &mut self.value
    }

    /// How many redactions were made.
    pub fn redactions(&self) -> usize {
        self.redactions
    }

    /// The result, to render.
    pub fn into_value(self) -> Value {
        self.value
    }
}

impl Scrubber {
    /// Scrubs an executor's output into a result ([`Scrubber::scrub_result`]).
    pub fn scrub_output(&self, out: Unscrubbed) -> Scrubbed {
        let mut value = out.into_raw();
        let redactions = self.scrub_result(&mut value);
        Scrubbed { value, redactions }
    }
}

#[cfg(test)]
mod tests {
    use crate::ScrubberBuilder;
    use airlock_core::{Secret, Unscrubbed};

    #[test]
    fn output_leaves_only_through_the_scrubber() {
        let h = airlock_core::HandleName::parse("K").unwrap();
        let s = ScrubberBuilder::new().add_secret(&h, &Secret::from_str_value("sk_live_output_canary_123")).build();
        let out = s.scrub_output(Unscrubbed::new(serde_json::json!({"body": "key=sk_live_output_canary_123"})));
        assert_eq!(out.redactions(), 1);
        assert!(!out.value().to_string().contains("output_canary"));
    }
}
