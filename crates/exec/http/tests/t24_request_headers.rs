//! T24: request headers the agent could use to turn an allowed call into a leak (a `Range` that
//! cuts a secret in two, a method or path override, hop-by-hop and forwarding headers, its own
//! `Accept-Encoding`) are refused at validation, in any case or spelling, before a secret is
//! resolved or a connection made.

mod common;

use airlock_core::config::Handle;
use airlock_core::{CallError, ErrorCode, Secret};
use airlock_exec_http::{HttpArgs, HttpExecutor};
use common::{args, dest, handle, header_inject, local_handle, Upstream};
use proptest::prelude::*;

const KEY: &str = "sk-canary-7f3a9c2e41d8";

/// Every header the agent may not set, as the issue lists them and as commonly spelled.
const REFUSED: &[&str] = &[
    "Range",
    "If-Range",
    "Request-Range",
    "X-HTTP-Method-Override",
    "X-HTTP-Method",
    "X-Method-Override",
    "X-Original-URL",
    "X-Rewrite-URL",
    "Connection",
    "Keep-Alive",
    "Proxy-Connection",
    "TE",
    "Trailer",
    "Transfer-Encoding",
    "Upgrade",
    "Proxy-Authorization",
    "Proxy-Authenticate",
    "Proxy",
    "Forwarded",
    "X-Forwarded",
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-Forwarded-Port",
    "X-Forwarded-Prefix",
    "X-Forwarded-Server",
    "X-Forwarded-Uri",
    "Accept-Encoding",
    "Host",
    "Authorization",
    "Cookie",
    "Content-Length",
    "Expect",
    "Via",
    // The handle's injection header.
    "X-API-Key",
];

/// A value the upstream would notice; it must never appear in an error either.
const VALUE: &str = "bytes=0-3";

fn api() -> Handle {
    handle(
        vec![dest("https", "api.example.com", 443, "/v1/", &["GET"])],
        header_inject(),
    )
}

fn with_header(name: &str, value: &str) -> HttpArgs {
    let mut a = args("GET", "/v1/x");
    a.headers.insert(name.into(), value.into());
    a
}

fn assert_header_refused(e: &CallError, name: &str) {
    assert_eq!(e.code, ErrorCode::HeaderNotAllowed, "{name}: {}", e.message);
    assert!(
        e.message.contains(&name.to_ascii_lowercase()),
        "{name}: {}",
        e.message
    );
    assert!(!e.message.contains(VALUE), "{}", e.message);
    assert_eq!(e.code.http_status(), 400);
}

#[tokio::test]
async fn t24_range_and_override_headers_are_refused_and_nothing_is_sent() {
    let up = Upstream::start().await;
    let h = local_handle(up.port(), header_inject());
    let ex = HttpExecutor::new();
    for name in REFUSED {
        // As the broker does it: validate, and only then resolve the secret and execute.
        let outcome = match HttpExecutor::validate(&h, &with_header(name, VALUE)) {
            Ok(v) => ex
                .execute(&h, &v, &Secret::from_str_value(KEY))
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };
        assert_header_refused(&outcome.expect_err(name), name);
    }
    assert_eq!(up.requests().len(), 0, "the upstream received a request");
    // The same upstream does see an ordinary call with an ordinary header.
    let v = HttpExecutor::validate(&h, &with_header("X-Request-Id", "r-1")).unwrap();
    ex.execute(&h, &v, &Secret::from_str_value(KEY))
        .await
        .unwrap();
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-request-id"), Some("r-1"));
    assert_eq!(seen[0].header("range"), None);
}

#[test]
fn t24_names_given_twice_in_another_case_or_spelling_are_refused() {
    let h = api();
    for (a, b) in [
        ("X-Trace", "x-trace"),
        ("X-Trace", "X-TRACE"),
        ("X-Trace", "x_trace"),
        ("Accept", "ACCEPT"),
    ] {
        let mut args = with_header(a, "1");
        args.headers.insert(b.into(), "2".into());
        let e = HttpExecutor::validate(&h, &args).unwrap_err();
        assert_eq!(e.code, ErrorCode::HeaderNotAllowed, "{a} / {b}");
        // Named as the agent wrote it (lowercased): the later of the two, in map order.
        assert!(e.message.contains(&b.to_ascii_lowercase()), "{}", e.message);
    }
}

#[test]
fn t24_names_that_are_not_tokens_are_invalid() {
    let h = api();
    for name in [
        "Range ",
        " Range",
        "Ran ge",
        "Range:",
        "Range\t",
        "R\u{e4}nge",
        "X-A\u{0}",
        "(Range)",
        "",
    ] {
        let e = HttpExecutor::validate(&h, &with_header(name, VALUE)).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArguments, "{name:?}");
        assert!(!e.message.contains(VALUE));
    }
}

/// One refused name, with each letter's case and each `-`/`_` chosen at random.
fn spelled(base: &'static str) -> impl Strategy<Value = String> {
    proptest::collection::vec((any::<bool>(), any::<bool>()), base.len()).prop_map(move |flips| {
        base.chars()
            .zip(flips)
            .map(|(ch, (upper, underscore))| match ch {
                '-' if underscore => '_',
                c if upper => c.to_ascii_uppercase(),
                c => c.to_ascii_lowercase(),
            })
            .collect()
    })
}

fn any_refused_spelling() -> impl Strategy<Value = String> {
    let fixed = proptest::sample::select(REFUSED).prop_flat_map(spelled);
    // Whole families: anything under x-forwarded- and proxy-.
    let family = (
        proptest::sample::select(&["X-Forwarded-", "Proxy-", "x_forwarded_"][..]),
        "[A-Za-z0-9][A-Za-z0-9_-]{0,20}",
    )
        .prop_flat_map(|(p, rest)| spelled(p).prop_map(move |p| format!("{p}{rest}")));
    prop_oneof![3 => fixed, 1 => family]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn t24_refused_headers_in_any_case_or_spelling_are_refused(name in any_refused_spelling()) {
        let e = HttpExecutor::validate(&api(), &with_header(&name, VALUE)).unwrap_err();
        prop_assert_eq!(e.code, ErrorCode::HeaderNotAllowed, "{}", name);
        prop_assert!(e.message.contains(&name.to_ascii_lowercase()), "{}", e.message);
        prop_assert!(!e.message.contains(VALUE));
    }

    #[test]
    fn t24_ordinary_headers_pass_in_any_case(
        name in proptest::sample::select(&[
            "Accept", "Content-Type", "If-None-Match", "X-Request-Id", "User-Agent",
            "X-Rangefinder", "X-Forwarder", "Proxyish", "Accept-Language",
        ][..]).prop_flat_map(spelled)
    ) {
        prop_assert!(HttpExecutor::validate(&api(), &with_header(&name, "v")).is_ok(), "{}", name);
    }

    #[test]
    fn t24_the_whole_refused_list_is_refused_together_or_alone(
        picks in proptest::sample::subsequence(REFUSED, 1..REFUSED.len())
    ) {
        let mut a = args("GET", "/v1/x");
        for p in &picks {
            a.headers.insert((*p).into(), VALUE.into());
        }
        a.headers.insert("X-Request-Id".into(), "ok".into());
        let e = HttpExecutor::validate(&api(), &a).unwrap_err();
        prop_assert_eq!(e.code, ErrorCode::HeaderNotAllowed);
    }
}
