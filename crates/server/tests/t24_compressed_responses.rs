//! T24 through the broker: an upstream that echoes the credential inside a gzip body has it
//! decoded by the executor and then scrubbed by the broker; an encoding airlock cannot decode is
//! refused with `undecodable-response`; a `Range` header is refused with `header-not-allowed`
//! before the upstream is contacted.

mod common;

use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use common::{code, Fixture, API_TOKEN};
use serde_json::json;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// An upstream that answers every request with `{"echo": <Authorization>}`: gzipped under
/// `/v1/gzip`, labelled with an unknown coding (and sent in the clear) under `/v1/odd`.
async fn compressing_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h2 = hits.clone();
    let app = Router::new().fallback(any(move |uri: Uri, headers: HeaderMap| {
        let hits = h2.clone();
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let text = json!({ "echo": auth }).to_string();
            let (coding, body) = if uri.path() == "/v1/odd" {
                ("compress", text.into_bytes())
            } else {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(text.as_bytes()).unwrap();
                ("gzip", e.finish().unwrap())
            };
            let mut r = Response::new(axum::body::Body::from(body));
            r.headers_mut()
                .insert("content-encoding", HeaderValue::from_static(coding));
            r.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            r
        }
    }));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    (addr, hits)
}

/// The fixture's configuration with the API handle bound to `port` instead.
fn bind_api_to(text: String, port: u16) -> String {
    let key = "url = \"http://127.0.0.1:";
    let start = text.find(key).expect("the API destination") + key.len();
    let end = start + text[start..].find('/').unwrap();
    format!("{}{}{}", &text[..start], port, &text[end..])
}

#[tokio::test]
async fn t24_gzip_echo_is_decoded_then_scrubbed_by_the_broker() {
    let (up, hits) = compressing_upstream().await;
    let f = Fixture::start_with(|t| bind_api_to(t, up.port())).await;

    let (s, v) = f
        .invoke(
            "http_request",
            json!({"credential_handle": "API", "method": "GET", "path_or_url": "/v1/gzip"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    let r = &v["result"];
    assert!(r["headers"].get("content-encoding").is_none(), "{v}");
    // Decoded: readable JSON whose echoed credential the broker redacted.
    let body: serde_json::Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["echo"], "Bearer [REDACTED:API]", "{v}");
    assert!(!v.to_string().contains(API_TOKEN));

    // An encoding airlock does not decode: refused, although the body is the credential in
    // the clear (so nothing the scrubber would have had to catch reached the agent either way).
    let (s, v) = f
        .invoke(
            "http_request",
            json!({"credential_handle": "API", "method": "GET", "path_or_url": "/v1/odd"}),
        )
        .await;
    assert_eq!((s, code(&v)), (502, "undecodable-response"), "{v}");
    assert!(!v.to_string().contains(API_TOKEN));
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    // A Range header: refused before the secret is resolved, and the upstream sees nothing.
    let (s, v) = f
        .invoke(
            "http_request",
            json!({"credential_handle": "API", "method": "GET", "path_or_url": "/v1/gzip",
                   "headers": {"range": "bytes=0-9"}}),
        )
        .await;
    assert_eq!((s, code(&v)), (400, "header-not-allowed"), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("range"));
    assert!(!v.to_string().contains("bytes=0-9"));
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    f.stop().await;
}
