//! Progress bars on stderr for the commands that copy or read a whole store (`migrate`,
//! `audit export`): drawn only when stderr is a terminal, so a redirected or piped run, a log
//! and the JSON on stdout never hold one; no color.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// A bar of `len` steps counting `what` (`rows`, `records`), hidden off a terminal.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(&format!("{{prefix}} [{{bar:32}}] {{pos}}/{{len}} {what} ({{per_sec}}, {{eta}} left)"))
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let b = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr()).with_style(style);
    b.set_prefix(what.to_owned());
    b
}
