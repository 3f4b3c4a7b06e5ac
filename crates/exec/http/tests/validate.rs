//! Admission of agent arguments against a handle's destinations (T05, T07 literals). No I/O.

mod common;

use airlock_core::config::{Handle, Injection};
use airlock_core::ErrorCode;
use airlock_exec_http::{HttpArgs, HttpExecutor};
use common::{args, dest, handle, header_inject, limits};

fn api() -> Handle {
    handle(
        vec![dest(
            "https",
            "api.example.com",
            443,
            "/v1/",
            &["GET", "POST"],
        )],
        header_inject(),
    )
}

fn code(h: &Handle, a: &HttpArgs) -> Option<ErrorCode> {
    HttpExecutor::validate(h, a).err().map(|e| e.code)
}

fn refused(h: &Handle, method: &str, url: &str) {
    let e = HttpExecutor::validate(h, &args(method, url))
        .err()
        .unwrap_or_else(|| panic!("{url} must be refused"));
    assert_eq!(
        e.code,
        ErrorCode::DestinationNotAllowed,
        "{url}: {}",
        e.message
    );
    assert!(
        e.message
            .starts_with("the destination is not bound to this handle"),
        "{}",
        e.message
    );
}

fn admitted(h: &Handle, method: &str, url: &str) -> String {
    match HttpExecutor::validate(h, &args(method, url)) {
        Ok(v) => v.url().to_string(),
        Err(e) => panic!("{url} must be admitted: {}", e.message),
    }
}

#[test]
fn bound_urls_and_relative_paths_are_admitted() {
    let h = api();
    assert_eq!(
        admitted(&h, "GET", "/v1/users?id=1"),
        "https://api.example.com/v1/users?id=1"
    );
    assert_eq!(
        admitted(&h, "get", "https://api.example.com/v1/users"),
        "https://api.example.com/v1/users"
    );
    assert_eq!(
        admitted(&h, "POST", "https://API.Example.COM:443/v1/x#frag"),
        "https://api.example.com/v1/x"
    );
    let v = HttpExecutor::validate(&h, &args("post", "/v1/x")).unwrap();
    assert_eq!(v.method(), "POST");
}

#[test]
fn t05_other_host_is_refused() {
    let h = api();
    for u in [
        "https://attacker.test/v1/",
        "https://example.com/v1/",
        "https://www.api.example.com/v1/",
        "https://api.example.co/v1/",
    ] {
        refused(&h, "GET", u);
    }
    let e = HttpExecutor::validate(&h, &args("GET", "https://attacker.test/v1/"))
        .err()
        .unwrap();
    assert!(e.message.contains("(host)"), "{}", e.message);
}

#[test]
fn t05_suffix_host_trick_is_refused() {
    let h = api();
    for u in [
        "https://api.example.com.attacker.test/v1/",
        "https://api.example.com./v1/",
        "https://api.example.com%2eattacker.test/v1/",
        "https://\u{0430}pi.example.com/v1/", // Cyrillic a: IDNA maps it to an xn-- label
        "https://api.example.com%00.attacker.test/v1/",
    ] {
        assert!(HttpExecutor::validate(&h, &args("GET", u)).is_err(), "{u}");
    }
}

#[test]
fn t05_userinfo_host_trick_is_refused() {
    let h = api();
    // The host of this URL is attacker.test; the rest is user info.
    refused(&h, "GET", "https://api.example.com@attacker.test/v1/");
    refused(&h, "GET", "https://api.example.com:443@attacker.test/v1/");
    let e = HttpExecutor::validate(&h, &args("GET", "https://user:pw@api.example.com/v1/"))
        .err()
        .unwrap();
    assert_eq!(e.code, ErrorCode::DestinationNotAllowed);
    assert!(e.message.contains("user info"), "{}", e.message);
    refused(&h, "GET", "https://user@api.example.com/v1/");
}

#[test]
fn t05_http_downgrade_is_refused() {
    let h = api();
    refused(&h, "GET", "http://api.example.com/v1/x");
    refused(&h, "GET", "http://api.example.com:443/v1/x");
    refused(&h, "GET", "ftp://api.example.com/v1/x");
    refused(&h, "GET", "ws://api.example.com/v1/x");
}

#[test]
fn t05_other_port_is_refused() {
    let h = api();
    refused(&h, "GET", "https://api.example.com:8443/v1/x");
    refused(&h, "GET", "https://api.example.com:80/v1/x");
    // An explicit default port is the same destination.
    admitted(&h, "GET", "https://api.example.com:443/v1/x");
}

#[test]
fn t05_path_outside_prefix_is_refused() {
    let h = api();
    for u in [
        "/admin",
        "/v1",
        "/v1x/users",
        "/v1/../admin",
        "/v1/%2e%2e/admin",
        "/v1/%2E%2E/admin",
        "/v1/.%2e/admin",
        "https://api.example.com/v1/../admin",
        "https://api.example.com/v1/%2e%2e/admin",
        "/v1/..%2fadmin",
        "/v1/%2e%2e%2fadmin",
        "/v1/a%2Fb",
        "/v1/..;/admin",
        "/v1/%252e%252e/admin",
        "/V1/users",
    ] {
        refused(&h, "GET", u);
    }
    admitted(&h, "GET", "/v1/a/./b/../c");
}

#[test]
fn t05_method_not_bound_is_refused() {
    let h = api();
    let e = HttpExecutor::validate(&h, &args("DELETE", "/v1/x"))
        .err()
        .unwrap();
    assert_eq!(e.code, ErrorCode::DestinationNotAllowed);
    assert!(e.message.contains("(method)"), "{}", e.message);
    for m in ["TRACE", "CONNECT", "FOO", "", "GET ", "G\nET"] {
        assert_eq!(
            code(&h, &args(m, "/v1/x")),
            Some(ErrorCode::InvalidArguments),
            "{m:?}"
        );
    }
}

#[test]
fn t05_protocol_relative_path_is_refused() {
    let h = api();
    refused(&h, "GET", "//attacker.test/v1/");
    refused(&h, "GET", "/\\attacker.test/v1/");
    refused(&h, "GET", "\\\\attacker.test/v1/");
    refused(&h, "GET", "https://api.example.com\\@attacker.test/v1/");
    // The URL parser drops tabs and newlines; such input is refused before it can collapse.
    for u in [
        "/\t/attacker.test/v1/",
        "/\n/attacker.test/v1/",
        " //attacker.test/v1/",
        "/v1/ x",
    ] {
        assert_eq!(
            code(&h, &args("GET", u)),
            Some(ErrorCode::InvalidArguments),
            "{u:?}"
        );
    }
    for u in ["v1/users", "attacker.test/v1/", ""] {
        assert_eq!(
            code(&h, &args("GET", u)),
            Some(ErrorCode::InvalidArguments),
            "{u:?}"
        );
    }
}

#[test]
fn relative_paths_use_the_first_destination() {
    let h = handle(
        vec![
            dest("https", "api.example.com", 443, "/v1/", &["GET"]),
            dest("https", "files.example.com", 8443, "/", &["PUT"]),
        ],
        header_inject(),
    );
    assert_eq!(admitted(&h, "GET", "/v1/a"), "https://api.example.com/v1/a");
    assert_eq!(
        admitted(&h, "PUT", "https://files.example.com:8443/up"),
        "https://files.example.com:8443/up"
    );
    // Each destination is matched as a whole: no mixing of one's host with another's methods.
    refused(&h, "PUT", "https://api.example.com/v1/a");
    refused(&h, "GET", "https://files.example.com:8443/up");
}

#[test]
fn t07_decimal_ip_spelling_is_refused() {
    let h = handle(
        vec![dest("http", "localhost", 80, "/", &["GET"])],
        header_inject(),
    );
    for u in [
        "http://2130706433/",
        "http://0x7f.1/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://0x7f000001/",
        "http://127.0.0.1/",
        "http://[::1]/",
    ] {
        refused(&h, "GET", u);
    }
    // Other spellings of an explicitly bound literal are that literal after parsing.
    let h = handle(
        vec![dest("http", "127.0.0.1", 8080, "/", &["GET"])],
        header_inject(),
    );
    assert_eq!(
        admitted(&h, "GET", "http://2130706433:8080/x"),
        "http://127.0.0.1:8080/x"
    );
    assert_eq!(
        admitted(&h, "GET", "http://0x7f.1:8080/x"),
        "http://127.0.0.1:8080/x"
    );
    refused(&h, "GET", "http://127.0.0.2:8080/x");
    refused(&h, "GET", "http://localhost:8080/x");
}

#[test]
fn t07_metadata_ip_is_refused() {
    let h = api();
    for u in [
        "https://169.254.169.254/v1/",
        "http://169.254.169.254/latest/meta-data/",
        "https://2852039166/v1/",
        "https://0xa9.0xfe.0xa9.0xfe/v1/",
        "https://[::ffff:169.254.169.254]/v1/",
        "https://[fd00:ec2::254]/v1/",
        "https://metadata.google.internal/v1/",
    ] {
        assert!(HttpExecutor::validate(&h, &args("GET", u)).is_err(), "{u}");
    }
    assert!(!airlock_exec_http::is_public(
        "169.254.169.254".parse().unwrap()
    ));
}

#[test]
fn t07_ipv4_mapped_ipv6_is_refused() {
    let h = handle(
        vec![dest("http", "127.0.0.1", 8080, "/", &["GET"])],
        header_inject(),
    );
    for u in [
        "http://[::ffff:127.0.0.1]:8080/",
        "http://[::ffff:7f00:1]:8080/",
        "http://[::127.0.0.1]:8080/",
        "http://[64:ff9b::7f00:1]:8080/",
    ] {
        refused(&h, "GET", u);
    }
    assert!(!airlock_exec_http::is_public(
        "::ffff:127.0.0.1".parse().unwrap()
    ));
}

#[test]
fn ipv6_literal_destination_is_compared_canonically() {
    let h = handle(
        vec![dest("http", "::1", 8080, "/", &["GET"])],
        header_inject(),
    );
    assert_eq!(
        admitted(&h, "GET", "http://[0:0::1]:8080/a"),
        "http://[::1]:8080/a"
    );
    assert_eq!(admitted(&h, "GET", "/a"), "http://[::1]:8080/a");
}

#[test]
fn agent_supplied_forbidden_headers_are_refused() {
    let h = api();
    for name in [
        "Host",
        "host",
        "Authorization",
        "AUTHORIZATION",
        "Proxy-Authorization",
        "Cookie",
        "Connection",
        "Transfer-Encoding",
        "Content-Length",
        "TE",
        "Upgrade",
        "Forwarded",
        "X-Forwarded-For",
        "x-forwarded-host",
        "X-API-Key",
        "x-api-key",
        "Accept-Encoding",
        "Keep-Alive",
    ] {
        let mut a = args("GET", "/v1/x");
        a.headers.insert(name.into(), "v".into());
        let e = HttpExecutor::validate(&h, &a)
            .err()
            .unwrap_or_else(|| panic!("{name} must be refused"));
        // A name the agent may not set has its own code, and the message names it.
        assert_eq!(e.code, ErrorCode::HeaderNotAllowed, "{name}");
        assert!(
            e.message.contains(&name.to_ascii_lowercase()),
            "{name}: {}",
            e.message
        );
        assert!(!e.message.contains("'v'"));
    }
    for (name, value) in [
        ("X-Ok", "a\r\nX-Evil: 1"),
        ("X-Ok", "a\nb"),
        ("X-Ok", "a\rb"),
        ("X-Ok", "a\0b"),
        ("Bad Name", "v"),
        ("Bad:Name", "v"),
        ("", "v"),
        ("X-\u{e9}", "v"),
    ] {
        let mut a = args("GET", "/v1/x");
        a.headers.insert(name.into(), value.into());
        assert_eq!(
            code(&h, &a),
            Some(ErrorCode::InvalidArguments),
            "{name:?}: {value:?}"
        );
    }
    let mut a = args("GET", "/v1/x");
    a.headers.insert("X-Request-Id".into(), "abc".into());
    a.headers
        .insert("Content-Type".into(), "application/json".into());
    assert!(HttpExecutor::validate(&h, &a).is_ok());
    // With basic auth, the Authorization header is the injection point: still refused.
    let h = handle(
        vec![dest("https", "api.example.com", 443, "/", &["GET"])],
        Injection::Basic {
            username: "u".into(),
        },
    );
    let mut a = args("GET", "/x");
    a.headers
        .insert("authorization".into(), "Basic Zm9vOmJhcg==".into());
    assert_eq!(code(&h, &a), Some(ErrorCode::HeaderNotAllowed));
}

#[test]
fn too_many_headers_are_refused() {
    let h = api();
    let mut a = args("GET", "/v1/x");
    for i in 0..100 {
        a.headers.insert(format!("X-H{i}"), "v".into());
    }
    assert_eq!(code(&h, &a), Some(ErrorCode::LimitExceeded));
}

#[test]
fn query_injection_parameter_in_agent_url_is_refused() {
    let h = handle(
        vec![dest("https", "api.example.com", 443, "/", &["GET"])],
        Injection::Query {
            param: "api_key".into(),
        },
    );
    for u in [
        "/x?api_key=mine",
        "/x?a=1&api_key=",
        "/x?API_KEY=mine",
        "/x?api%5Fkey=mine",
        "https://api.example.com/x?api_key",
    ] {
        assert_eq!(
            code(&h, &args("GET", u)),
            Some(ErrorCode::InvalidArguments),
            "{u}"
        );
    }
    admitted(&h, "GET", "/x?api_keys=1&key=2");
}

#[test]
fn body_over_the_request_cap_is_refused() {
    let mut h = api();
    limits(&mut h).max_request_bytes = 10;
    let mut a = args("POST", "/v1/x");
    a.body = Some("0123456789".into());
    assert!(HttpExecutor::validate(&h, &a).is_ok());
    a.body = Some("0123456789A".into());
    assert_eq!(code(&h, &a), Some(ErrorCode::LimitExceeded));
    let long = format!("/v1/{}", "a".repeat(10_000));
    assert_eq!(
        code(&h, &args("GET", &long)),
        Some(ErrorCode::LimitExceeded)
    );
}

#[test]
fn arguments_have_a_closed_shape() {
    let ok: HttpArgs =
        serde_json::from_value(serde_json::json!({"method": "GET", "path_or_url": "/v1/"}))
            .unwrap();
    assert!(ok.headers.is_empty() && ok.body.is_none());
    let bad = serde_json::from_value::<HttpArgs>(
        serde_json::json!({"method": "GET", "path_or_url": "/", "secret": "x"}),
    );
    assert!(bad.is_err());
}

#[test]
fn non_http_handles_are_unavailable() {
    let mut h = api();
    h.constraints = airlock_core::config::Constraints::None;
    assert_eq!(
        code(&h, &args("GET", "/v1/")),
        Some(ErrorCode::HandleUnavailable)
    );
}
