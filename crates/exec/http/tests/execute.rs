//! The executor against real axum upstreams on 127.0.0.1 that record what they receive:
//! injection (invariant 2), redirects (T06), SSRF (T07), errors (T12), echo (T18), limits (T20).

mod common;

use airlock_core::config::{Handle, Injection};
use airlock_core::{CallError, ErrorCode, Secret};
use airlock_exec_http::{HttpArgs, HttpExecutor};
use base64::Engine as _;
use common::{args, closed_port, dest, handle, header_inject, limits, local_handle, Upstream};
use serde_json::Value;
use std::time::{Duration, Instant};

const KEY: &str = "sk-canary-7f3a9c2e41d8";

fn secret() -> Secret {
    Secret::from_str_value(KEY)
}

async fn call(h: &Handle, a: &HttpArgs) -> Result<Value, CallError> {
    let ex = HttpExecutor::new();
    let v = HttpExecutor::validate(h, a)?;
    ex.execute(h, &v, &secret()).await
}

/// Asserts that an error shows the secret nowhere, in any common spelling.
fn assert_clean(e: &CallError) {
    let all = format!(
        "{} {} {:?}",
        e.message,
        e.detail.as_deref().unwrap_or(""),
        e
    );
    for form in [
        KEY.to_owned(),
        url::form_urlencoded::byte_serialize(KEY.as_bytes()).collect::<String>(),
        "canary".to_owned(),
    ] {
        assert!(!all.contains(&form), "secret in error: {all}");
    }
}

#[tokio::test]
async fn header_injection_reaches_the_server() {
    let up = Upstream::start().await;
    let h = local_handle(
        up.port(),
        Injection::Header {
            name: "X-API-Key".into(),
            format: "Token {}".into(),
        },
    );
    let r = call(&h, &args("GET", "/v1/items?x=1")).await.unwrap();
    assert_eq!(r["status"], 200);
    assert_eq!(r["truncated"], false);
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("x-api-key"),
        Some(format!("Token {KEY}").as_str())
    );
    assert_eq!(seen[0].path, "/v1/items");
    assert_eq!(seen[0].query.as_deref(), Some("x=1"));
    assert_eq!(
        seen[0].header("accept-encoding"),
        Some("gzip, deflate, br, zstd")
    );
    assert_eq!(seen[0].header("authorization"), None);
}

#[tokio::test]
async fn basic_injection_reaches_the_server() {
    let up = Upstream::start().await;
    let h = local_handle(
        up.port(),
        Injection::Basic {
            username: "svc".into(),
        },
    );
    call(&h, &args("GET", "/v1/")).await.unwrap();
    let seen = up.requests();
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("svc:{KEY}"))
    );
    assert_eq!(seen[0].header("authorization"), Some(expected.as_str()));
}

#[tokio::test]
async fn query_injection_reaches_the_server() {
    let up = Upstream::start().await;
    let h = local_handle(
        up.port(),
        Injection::Query {
            param: "api_key".into(),
        },
    );
    let tricky = "a&b=c d+%/é";
    let v = HttpExecutor::validate(&h, &args("GET", "/v1/q?page=2")).unwrap();
    HttpExecutor::new()
        .execute(&h, &v, &Secret::from_str_value(tricky))
        .await
        .unwrap();
    let seen = up.requests();
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(seen[0].query.as_deref().unwrap().as_bytes())
            .into_owned()
            .collect();
    assert_eq!(
        pairs,
        vec![
            ("page".into(), "2".into()),
            ("api_key".into(), tricky.into())
        ]
    );
    // The validated request never holds the secret.
    assert!(!v.url().as_str().contains("api_key"));
}

#[tokio::test]
async fn invariant2_agent_text_is_never_templated() {
    let up = Upstream::start().await;
    let h = local_handle(
        up.port(),
        Injection::Header {
            name: "X-API-Key".into(),
            format: "Bearer {}".into(),
        },
    );
    let mut a = args("POST", "/v1/%7B%7D/{{SECRET}}?q={}&r={{SECRET}}&s=$SECRET");
    a.headers
        .insert("X-Note".into(), "{} {{SECRET}} ${SECRET} {0}".into());
    a.body = Some("{} {{SECRET}} {{ secret }} %s".into());
    call(&h, &a).await.unwrap();
    let seen = &up.requests()[0];
    assert_eq!(seen.header("x-note"), Some("{} {{SECRET}} ${SECRET} {0}"));
    assert_eq!(seen.body, b"{} {{SECRET}} {{ secret }} %s");
    assert!(
        seen.path.contains("%7B%7D") && seen.path.contains("%7B%7BSECRET%7D%7D"),
        "{}",
        seen.path
    );
    assert!(
        seen.query
            .as_deref()
            .unwrap()
            .contains("r=%7B%7BSECRET%7D%7D")
            || seen.query.as_deref().unwrap().contains("r={{SECRET}}")
    );
    // The secret arrived once, at the injection point only.
    assert_eq!(seen.all_text().matches(KEY).count(), 1);
    assert_eq!(
        seen.header("x-api-key"),
        Some(format!("Bearer {KEY}").as_str())
    );
}

#[tokio::test]
async fn t18_echo_fixture_returns_the_credential_for_the_scrubber() {
    // The executor does not scrub: the broker does. This fixture proves an echoing endpoint
    // really hands the credential back, so the broker's tests can rely on it.
    let up = Upstream::start().await;
    let h = local_handle(up.port(), header_inject());
    let r = call(&h, &args("GET", "/v1/echo")).await.unwrap();
    let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["headers"]["x-api-key"], KEY);
}

#[tokio::test]
async fn execute_rechecks_the_binding_of_the_request() {
    let up = Upstream::start().await;
    let other = Upstream::start().await;
    let h_other = local_handle(other.port(), header_inject());
    let h = local_handle(up.port(), header_inject());
    // Validated for one handle, executed with another's secret: refused, nothing sent.
    let v = HttpExecutor::validate(&h_other, &args("GET", "/v1/x")).unwrap();
    let e = HttpExecutor::new()
        .execute(&h, &v, &secret())
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::DestinationNotAllowed);
    assert!(up.requests().is_empty() && other.requests().is_empty());
}

#[tokio::test]
async fn secret_unusable_at_its_injection_point_is_not_sent() {
    let up = Upstream::start().await;
    let h = local_handle(up.port(), header_inject());
    let v = HttpExecutor::validate(&h, &args("GET", "/v1/x")).unwrap();
    let e = HttpExecutor::new()
        .execute(&h, &v, &Secret::from_str_value("k\r\nX-Evil: canary"))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::SecretUnavailable);
    assert_clean(&e);
    assert!(up.requests().is_empty());
}

fn redirect_to(status: u16, to: &str) -> String {
    let to: String = url::form_urlencoded::byte_serialize(to.as_bytes()).collect();
    format!("/v1/redirect?status={status}&to={to}")
}

#[tokio::test]
async fn t06_redirect_to_other_port_is_not_followed() {
    let up = Upstream::start().await;
    let other = Upstream::start().await;
    let h = local_handle(up.port(), header_inject());
    let target = format!("http://127.0.0.1:{}/v1/steal", other.port());
    for status in [301, 302, 303, 307, 308] {
        let r = call(&h, &args("GET", &redirect_to(status, &target)))
            .await
            .unwrap();
        assert_eq!(r["status"], status);
        assert_eq!(r["headers"]["location"], target.as_str());
    }
    assert!(
        other.requests().is_empty(),
        "the other listener was contacted"
    );
    assert_eq!(up.requests().len(), 5);
}

#[tokio::test]
async fn t06_redirect_to_other_host_is_not_followed() {
    let up = Upstream::start().await;
    let other = Upstream::start().await;
    let h = local_handle(up.port(), header_inject());
    for target in [
        format!("http://localhost:{}/v1/steal", up.port()),
        format!("http://localhost:{}/v1/steal", other.port()),
        format!("//localhost:{}/v1/steal", other.port()),
        format!("http://x@localhost:{}/v1/steal", other.port()),
        format!("/\\localhost:{}/v1/steal", other.port()),
    ] {
        let r = call(&h, &args("GET", &redirect_to(302, &target)))
            .await
            .unwrap();
        assert_eq!(r["status"], 302, "{target}");
    }
    assert!(other.requests().is_empty());
    assert!(up.requests().iter().all(|s| s.path == "/v1/redirect"));
}

#[tokio::test]
async fn t06_custom_header_not_forwarded_on_redirect() {
    let up = Upstream::start().await;
    let other = Upstream::start().await;
    let h = local_handle(up.port(), header_inject());
    let mut a = args(
        "POST",
        &redirect_to(307, &format!("http://127.0.0.1:{}/v1/x", other.port())),
    );
    a.body = Some("payload".into());
    let r = call(&h, &a).await.unwrap();
    assert_eq!(r["status"], 307);
    assert!(other.requests().iter().all(|s| !s.all_text().contains(KEY)));
    assert!(other.requests().is_empty());
    // Also outside the path prefix of the same origin: not followed, the key stays where it was.
    let r = call(&h, &args("GET", &redirect_to(302, "/admin")))
        .await
        .unwrap();
    assert_eq!(r["status"], 302);
    assert!(up.requests().iter().all(|s| s.path.starts_with("/v1/")));
}

#[tokio::test]
async fn t06_redirect_within_the_binding_is_followed_and_rechecked() {
    let up = Upstream::start().await;
    let h = local_handle(up.port(), header_inject());
    // 303 turns POST into GET without body.
    let mut a = args("POST", &redirect_to(303, "/v1/landing"));
    a.body = Some("payload".into());
    a.headers.insert("Content-Type".into(), "text/plain".into());
    let r = call(&h, &a).await.unwrap();
    assert_eq!(r["status"], 200);
    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        (seen[1].method.as_str(), seen[1].path.as_str()),
        ("GET", "/v1/landing")
    );
    assert!(seen[1].body.is_empty() && seen[1].header("content-type").is_none());
    assert_eq!(seen[1].header("x-api-key"), Some(KEY));
    // 307 keeps method and body.
    let mut a = args(
        "POST",
        &redirect_to(307, &format!("http://127.0.0.1:{}/v1/again", up.port())),
    );
    a.body = Some("payload".into());
    call(&h, &a).await.unwrap();
    let seen = up.requests();
    assert_eq!(
        (seen[3].method.as_str(), seen[3].body.as_slice()),
        ("POST", b"payload".as_slice())
    );
}

#[tokio::test]
async fn t06_redirect_limit_is_respected() {
    let up = Upstream::start().await;
    let mut h = local_handle(up.port(), header_inject());
    limits(&mut h).max_redirects = 0;
    let r = call(&h, &args("GET", &redirect_to(302, "/v1/landing")))
        .await
        .unwrap();
    assert_eq!(r["status"], 302);
    assert_eq!(up.requests().len(), 1);
    // A redirect loop stops after max_redirects hops and returns the last 3xx.
    limits(&mut h).max_redirects = 2;
    let self_loop = redirect_to(
        302,
        &redirect_to(302, &redirect_to(302, &redirect_to(302, "/v1/end"))),
    );
    let r = call(&h, &args("GET", &self_loop)).await.unwrap();
    assert_eq!(r["status"], 302);
    // One request from the call above, then the first request and two hops.
    assert_eq!(up.requests().len(), 1 + 3);
}

#[tokio::test]
async fn t07_localhost_name_is_refused_without_allow_private() {
    let up = Upstream::start().await;
    let mut h = handle(
        vec![dest("http", "localhost", up.port(), "/", &["GET"])],
        header_inject(),
    );
    let e = call(&h, &args("GET", "/x")).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::AddressRefused);
    assert_eq!(e.message, ErrorCode::AddressRefused.default_message());
    assert_clean(&e);
    assert!(up.requests().is_empty());
    limits(&mut h).allow_private_addresses = true;
    let r = call(&h, &args("GET", "/x")).await.unwrap();
    assert_eq!(r["status"], 200);
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test]
async fn t07_names_resolving_to_private_addresses_are_refused_at_connect_time() {
    // Any name the system resolves to a non-public address, not one spelling: every entry of
    // /etc/hosts that maps to loopback or a private range is refused.
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let mut names: Vec<String> = hosts
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let ip: std::net::IpAddr = it.next()?.parse().ok()?;
            (!airlock_exec_http::is_public(ip)).then(|| it.map(str::to_owned).collect::<Vec<_>>())
        })
        .flatten()
        .filter(|n| !n.contains(':') && url::Url::parse(&format!("http://{n}/")).is_ok())
        .collect();
    names.push("localhost".into());
    names.sort();
    names.dedup();
    let up = Upstream::start().await;
    let ex = HttpExecutor::new();
    for n in &names {
        let h = handle(
            vec![dest(
                "http",
                &n.to_ascii_lowercase(),
                up.port(),
                "/",
                &["GET"],
            )],
            header_inject(),
        );
        let v = HttpExecutor::validate(&h, &args("GET", "/x")).unwrap();
        let e = ex.execute(&h, &v, &secret()).await.unwrap_err();
        assert!(
            matches!(
                e.code,
                ErrorCode::AddressRefused | ErrorCode::UpstreamUnavailable
            ),
            "{n}: {:?}",
            e.code
        );
    }
    assert!(up.requests().is_empty());
}

#[tokio::test]
async fn t12_query_injected_secret_not_in_error() {
    let port = closed_port().await;
    let h = local_handle(
        port,
        Injection::Query {
            param: "api_key".into(),
        },
    );
    let e = call(&h, &args("GET", "/v1/x")).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::UpstreamUnavailable);
    assert_eq!(e.message, ErrorCode::UpstreamUnavailable.default_message());
    assert!(e.detail.is_some());
    assert_clean(&e);
    // Timeouts and refusals carry no URL either.
    let up = Upstream::start().await;
    let mut h = local_handle(
        up.port(),
        Injection::Query {
            param: "api_key".into(),
        },
    );
    limits(&mut h).timeout_ms = 200;
    let e = call(&h, &args("GET", "/v1/slow?ms=2000"))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::UpstreamTimeout);
    assert_clean(&e);
    let h = handle(
        vec![dest("http", "localhost", up.port(), "/", &["GET"])],
        Injection::Query {
            param: "api_key".into(),
        },
    );
    let e = call(&h, &args("GET", "/x")).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::AddressRefused);
    assert_clean(&e);
}

#[tokio::test]
async fn t12_header_injected_secret_not_in_error() {
    let port = closed_port().await;
    let h = local_handle(
        port,
        Injection::Header {
            name: "X-API-Key".into(),
            format: "Bearer {}".into(),
        },
    );
    let e = call(&h, &args("GET", "/v1/x")).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::UpstreamUnavailable);
    assert_clean(&e);
}

#[tokio::test]
async fn t20_response_cap_truncates() {
    let up = Upstream::start().await;
    let mut h = local_handle(up.port(), header_inject());
    limits(&mut h).max_response_bytes = 1000;
    // Content-Length far above the cap: cut, not failed.
    let r = call(&h, &args("GET", "/v1/big?n=5000000")).await.unwrap();
    assert_eq!(r["body"].as_str().unwrap().len(), 1000);
    assert_eq!(r["truncated"], true);
    let r = call(&h, &args("GET", "/v1/big?n=1000")).await.unwrap();
    assert_eq!(
        (r["body"].as_str().unwrap().len(), r["truncated"].as_bool()),
        (1000, Some(false))
    );
    let r = call(&h, &args("GET", "/v1/big?n=999")).await.unwrap();
    assert_eq!(r["truncated"], false);
    // A body that never ends is cut at the cap and the call returns.
    let t = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        call(&h, &args("GET", "/v1/endless")),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        (r["body"].as_str().unwrap().len(), r["truncated"].as_bool()),
        (1000, Some(true))
    );
    assert!(t.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn t20_slow_upstream_times_out() {
    let up = Upstream::start().await;
    let mut h = local_handle(up.port(), header_inject());
    limits(&mut h).timeout_ms = 300;
    let t = Instant::now();
    let e = call(&h, &args("GET", "/v1/slow?ms=3000"))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::UpstreamTimeout);
    assert_eq!(e.message, ErrorCode::UpstreamTimeout.default_message());
    assert!(
        t.elapsed() < Duration::from_millis(2000),
        "{:?}",
        t.elapsed()
    );
    // Headers on time but a body that drips: the whole exchange is bounded.
    let t = Instant::now();
    let e = call(&h, &args("GET", "/v1/drip?ms=50")).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::UpstreamTimeout);
    assert!(
        t.elapsed() < Duration::from_millis(2000),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn response_headers_are_filtered_and_joined() {
    let up = Upstream::start().await;
    let h = local_handle(up.port(), header_inject());
    let r = call(&h, &args("GET", "/v1/headers")).await.unwrap();
    let hs = r["headers"].as_object().unwrap();
    for dropped in [
        "set-cookie",
        "www-authenticate",
        "x-api-key",
        "transfer-encoding",
        "connection",
    ] {
        assert!(!hs.contains_key(dropped), "{dropped}");
    }
    assert_eq!(hs["x-multi"], "one, two");
    assert_eq!(hs["content-type"], "text/plain");
    assert_eq!(r["body"], "ok");
    assert!(r.get("body_encoding").is_none());
}

#[tokio::test]
async fn binary_bodies_are_base64() {
    let up = Upstream::start().await;
    let h = local_handle(up.port(), header_inject());
    let r = call(&h, &args("GET", "/v1/binary")).await.unwrap();
    assert_eq!(r["body_encoding"], "base64");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(r["body"].as_str().unwrap())
        .unwrap();
    assert_eq!(bytes, (0u8..=255).collect::<Vec<u8>>());
}

#[tokio::test]
async fn connections_are_pooled() {
    let up = Upstream::start().await;
    let h = local_handle(up.port(), header_inject());
    let ex = HttpExecutor::new();
    for _ in 0..3 {
        let v = HttpExecutor::validate(&h, &args("GET", "/v1/x")).unwrap();
        ex.execute(&h, &v, &secret()).await.unwrap();
    }
    let peers: Vec<_> = up.requests().iter().map(|s| s.peer).collect();
    assert_eq!(peers.len(), 3);
    assert!(peers.iter().all(|p| *p == peers[0]), "{peers:?}");
}

#[tokio::test]
async fn head_and_status_are_passed_through() {
    let up = Upstream::start().await;
    let h = local_handle(up.port(), header_inject());
    let r = call(&h, &args("HEAD", "/v1/x")).await.unwrap();
    assert_eq!(
        (r["status"].as_u64(), r["body"].as_str()),
        (Some(200), Some(""))
    );
    assert_eq!(up.requests()[0].method, "HEAD");
}

/// A connection the executor opened on one thread is never used by a call on another: each
/// thread that calls has its own pool (the broker's lanes keep a call on one thread). Two
/// threads, each with a runtime of its own, take turns calling one upstream through one
/// executor: each thread keeps reusing its own connection, and no connection serves both.
#[test]
fn each_calling_thread_has_its_own_connections() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // The upstream is served by `rt`, driven on a thread of its own until the end.
    let up = rt.block_on(Upstream::start());
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        rt.block_on(async {
            tokio::task::spawn_blocking(move || stop_rx.recv())
                .await
                .unwrap()
                .ok()
        });
    });
    let h = local_handle(up.port(), header_inject());
    let ex = std::sync::Arc::new(HttpExecutor::new());
    let thread = |ex: std::sync::Arc<HttpExecutor>, h: Handle, turn: std::sync::mpsc::Receiver<()>, done: std::sync::mpsc::Sender<()>| {
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            for _ in 0..5 {
                turn.recv().unwrap();
                let v = HttpExecutor::validate(&h, &args("GET", "/v1/x")).unwrap();
                let r = rt.block_on(ex.execute(&h, &v, &secret())).unwrap();
                assert_eq!(r["status"], 200);
                done.send(()).unwrap();
            }
        })
    };
    let (a_turn, a_rx) = std::sync::mpsc::channel();
    let (b_turn, b_rx) = std::sync::mpsc::channel();
    let (done_tx, done) = std::sync::mpsc::channel();
    let a = thread(ex.clone(), h.clone(), a_rx, done_tx.clone());
    let b = thread(ex.clone(), h.clone(), b_rx, done_tx);
    // Strictly alternating, so that each call finds the other thread's connection idle in the
    // pool it would share.
    let finished = || {
        done.recv_timeout(Duration::from_secs(20))
            .expect("a call did not finish: did it borrow the other thread's connection?")
    };
    for _ in 0..5 {
        a_turn.send(()).unwrap();
        finished();
        b_turn.send(()).unwrap();
        finished();
    }
    a.join().unwrap();
    b.join().unwrap();
    let ports: Vec<u16> = up.requests().iter().map(|s| s.peer.port()).collect();
    assert_eq!(ports.len(), 10);
    // The calls alternate, A first: A's are the even ones.
    let of = |first: usize| -> std::collections::BTreeSet<u16> {
        ports.iter().skip(first).step_by(2).copied().collect()
    };
    let (a_ports, b_ports) = (of(0), of(1));
    assert_eq!(a_ports.len(), 1, "thread A reuses one connection: {ports:?}");
    assert_eq!(b_ports.len(), 1, "thread B reuses one connection: {ports:?}");
    assert!(a_ports.is_disjoint(&b_ports), "a connection served both threads: {ports:?}");
    stop_tx.send(()).unwrap();
    server.join().unwrap();
}
