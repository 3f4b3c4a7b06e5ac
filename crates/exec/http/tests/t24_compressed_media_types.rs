//! T24: a body that is compressed because of what it is (`Content-Type: application/gzip`,
//! `application/zstd`...) rather than how it was sent is decompressed before it is returned, so
//! the broker's scrubber sees a secret inside it; a body that does not decode as its type says is
//! refused, never returned raw. T20: the compressed input is capped as well as the decoded
//! output, so a body that never produces output (empty gzip members, zstd skippable frames) stops
//! at the input cap instead of being read to its end.

mod common;

use airlock_core::config::Handle;
use airlock_core::{CallError, ErrorCode, HandleName, Secret};
use airlock_exec_http::{HttpArgs, HttpExecutor};
use airlock_scrub::ScrubberBuilder;
use base64::Engine as _;
use bytes::Bytes;
use common::{args, encode, header_inject, limits, local_handle, Upstream};
use serde_json::Value;
use std::time::{Duration, Instant};

const KEY: &str = "sk-canary-7f3a9c2e41d8";

async fn call(h: &Handle, a: &HttpArgs) -> Result<Value, CallError> {
    let v = HttpExecutor::validate(h, a)?;
    HttpExecutor::new()
        .execute(h, &v, &Secret::from_str_value(KEY))
        .await
}

fn assert_clean(e: &CallError) {
    let all = format!("{} {:?}", e.message, e.detail);
    assert!(
        !all.contains(KEY) && !all.contains("canary"),
        "secret in error: {all}"
    );
}

/// The result as the broker returns it: scrubbed with the secret known.
fn scrubbed(mut r: Value) -> (Value, usize) {
    let mut b = ScrubberBuilder::new();
    b.add_secret(
        &HandleName::parse("API").unwrap(),
        &Secret::from_str_value(KEY),
    );
    let n = b.build().scrub_result(&mut r);
    (r, n)
}

fn empty_gzip_member() -> Vec<u8> {
    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast())
        .finish()
        .unwrap()
}

/// Each compressed media type, with the content coding that writes the same format.
const TYPES: &[(&str, &str)] = &[
    ("application/gzip", "gzip"),
    ("application/x-gzip", "gzip"),
    ("Application/GZIP; name=\"dump.json.gz\"", "gzip"),
    ("application/zstd", "zstd"),
    ("application/zlib", "deflate"),
    ("application/x-brotli", "br"),
];

#[tokio::test]
async fn t24_compressed_media_type_is_decompressed_and_scrubbed() {
    let up = Upstream::start().await;
    let h = local_handle(up.port(), header_inject());
    let text = format!("{{\"token\": \"{KEY}\", \"rows\": [1, 2, 3]}}");
    for &(ct, coding) in TYPES {
        up.canned(
            "/v1/dump",
            &[("content-type", ct)],
            encode(&[coding], text.as_bytes()),
        );
        let r = call(&h, &args("GET", "/v1/dump"))
            .await
            .unwrap_or_else(|e| panic!("{ct}: {e}"));
        assert_eq!(r["body"], text, "{ct}: returned decompressed, as text");
        assert_eq!(r["body_decompressed"], true, "{ct}");
        assert!(r.get("body_encoding").is_none(), "{ct}");
        assert_eq!(r["truncated"], false, "{ct}");
        let (out, n) = scrubbed(r);
        assert!(n >= 1, "{ct}: nothing scrubbed");
        assert!(!out.to_string().contains(KEY), "{ct}: {out}");
    }
}

#[tokio::test]
async fn t24_binary_content_of_a_compressed_type_is_base64_and_scrubbed() {
    let up = Upstream::start().await;
    let h = local_handle(up.port(), header_inject());
    // A tar-like blob: binary around the secret.
    let mut blob: Vec<u8> = (0u8..=255).cycle().take(3000).collect();
    blob.splice(1000..1000, KEY.bytes());
    up.canned(
        "/v1/blob.gz",
        &[("content-type", "application/gzip")],
        encode(&["gzip"], &blob),
    );
    let r = call(&h, &args("GET", "/v1/blob.gz")).await.unwrap();
    assert_eq!(r["body_encoding"], "base64");
    assert_eq!(r["body_decompressed"], true);
    let got = base64::engine::general_purpose::STANDARD
        .decode(r["body"].as_str().unwrap())
        .unwrap();
    assert_eq!(got, blob);
    let (out, n) = scrubbed(r);
    assert!(n >= 1);
    let body = out["body"].as_str().unwrap();
    assert!(body.contains("[REDACTED:API]"), "{body}");
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    assert!(!body.contains(&b64(KEY.as_bytes())[4..20]));
}

#[tokio::test]
async fn t24_compressed_media_type_that_does_not_decode_is_refused() {
    let up = Upstream::start().await;
    let h = local_handle(up.port(), header_inject());
    let plain = format!("{{\"token\": \"{KEY}\"}}");
    let gz = encode(&["gzip"], plain.as_bytes());
    let mut cut = gz.clone();
    cut.truncate(gz.len() / 2);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("application/gzip", plain.clone().into_bytes()),
        ("application/x-gzip", cut),
        ("application/zstd", plain.clone().into_bytes()),
        ("application/zstd", gz.clone()),
        ("application/zlib", plain.clone().into_bytes()),
        ("application/x-brotli", plain.clone().into_bytes()),
    ];
    for (ct, body) in cases {
        up.canned("/v1/file", &[("content-type", ct)], body);
        let e = call(&h, &args("GET", "/v1/file"))
            .await
            .expect_err(ct);
        assert_eq!(e.code, ErrorCode::UndecodableResponse, "{ct}");
        assert_eq!(e.message, ErrorCode::UndecodableResponse.default_message());
        assert_clean(&e);
    }
    // Not a compression format: returned as before (base64 for binary, text otherwise).
    up.canned(
        "/v1/file",
        &[("content-type", "application/octet-stream")],
        plain.clone(),
    );
    let r = call(&h, &args("GET", "/v1/file")).await.unwrap();
    assert_eq!(r["body_encoding"], "base64");
    assert!(r.get("body_decompressed").is_none());
}

#[tokio::test]
async fn t24_media_type_under_a_content_coding_is_decoded_under_it() {
    let up = Upstream::start().await;
    let h = local_handle(up.port(), header_inject());
    let text = format!("token={KEY}");
    let file = encode(&["gzip"], text.as_bytes());
    // A .gz file sent with its own br content coding: both undone.
    up.canned(
        "/v1/a",
        &[("content-type", "application/gzip"), ("content-encoding", "br")],
        encode(&["br"], &file),
    );
    // A .gz file compressed again for the transfer with the same coding: both undone.
    up.canned(
        "/v1/b",
        &[
            ("content-type", "application/gzip"),
            ("content-encoding", "gzip"),
        ],
        encode(&["gzip"], &file),
    );
    // The usual misconfiguration: the .gz file as is, labelled with a gzip content coding too.
    // Decoded once; what that gives does not start like gzip, so it is the content.
    up.canned(
        "/v1/c",
        &[
            ("content-type", "application/x-gzip"),
            ("content-encoding", "gzip"),
        ],
        file.clone(),
    );
    for path in ["/v1/a", "/v1/b", "/v1/c"] {
        let r = call(&h, &args("GET", path))
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(r["body"], text, "{path}");
        let hs = r["headers"].as_object().unwrap();
        assert!(!hs.contains_key("content-encoding"), "{path}");
        assert!(!hs.contains_key("content-length"), "{path}");
        let (out, _) = scrubbed(r);
        assert_eq!(out["body"], "token=[REDACTED:API]", "{path}");
    }
}

#[tokio::test]
async fn t20_compressed_media_type_decodes_under_the_same_cap() {
    let up = Upstream::start().await;
    let mut h = local_handle(up.port(), header_inject());
    limits(&mut h).max_response_bytes = 64 * 1024;
    // 64 MiB of 'a' in a few KiB.
    let big = encode(&["zstd"], &vec![b'a'; 64 << 20]);
    assert!(big.len() < 1 << 20);
    up.canned("/v1/big", &[("content-type", "application/zstd")], big);
    let t = Instant::now();
    let r = call(&h, &args("GET", "/v1/big")).await.unwrap();
    assert_eq!(r["truncated"], true);
    assert_eq!(r["body"].as_str().unwrap().len(), 64 * 1024);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[tokio::test]
async fn t20_compressed_input_is_capped_separately() {
    let up = Upstream::start().await;
    let mut h = local_handle(up.port(), header_inject());
    let cap = 4 * 1024;
    limits(&mut h).max_response_bytes = cap;
    // The compressed-input cap for a 4 KiB decoded cap: 4 KiB + 512 + 64 KiB.
    let input_cap = cap + cap / 8 + 64 * 1024;
    // Empty gzip members produce nothing however many there are: 100 KiB of them.
    let member = empty_gzip_member();
    let members: Vec<u8> = std::iter::repeat_n(&member[..], 100 * 1024 / member.len())
        .flatten()
        .copied()
        .collect();
    assert!(members.len() > input_cap);
    // Fewer of them than the cap, then the secret: decoded.
    let mut under: Vec<u8> = std::iter::repeat_n(&member[..], 1000)
        .flatten()
        .copied()
        .collect();
    assert!(under.len() < input_cap);
    under.extend(encode(&["gzip"], KEY.as_bytes()));
    // A zstd skippable frame of 1 MiB ahead of the data.
    let mut skippable = 0x184D_2A50u32.to_le_bytes().to_vec();
    skippable.extend_from_slice(&(1u32 << 20).to_le_bytes());
    skippable.extend(std::iter::repeat_n(0u8, 1 << 20));
    skippable.extend(encode(&["zstd"], KEY.as_bytes()));
    up.canned("/v1/members", &[("content-encoding", "gzip")], members.clone());
    up.canned(
        "/v1/members.gz",
        &[("content-type", "application/gzip")],
        members,
    );
    up.canned("/v1/skip", &[("content-type", "application/zstd")], skippable);
    for path in ["/v1/members", "/v1/members.gz", "/v1/skip"] {
        let e = call(&h, &args("GET", path)).await.expect_err(path);
        assert_eq!(e.code, ErrorCode::UndecodableResponse, "{path}");
        assert_clean(&e);
    }
    up.canned("/v1/under", &[("content-encoding", "gzip")], under);
    let r = call(&h, &args("GET", "/v1/under")).await.unwrap();
    assert_eq!(r["body"], KEY);
    // Incompressible data a little past the decoded cap: its compressed form is longer than the
    // cap, but well within the input cap, so it is returned cut, not refused.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let noise: Vec<u8> = (0..cap + cap / 16)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'!' + (x % 90) as u8
        })
        .collect();
    let gz = encode(&["gzip"], &noise);
    up.canned("/v1/noise", &[("content-type", "application/gzip")], gz);
    let r = call(&h, &args("GET", "/v1/noise")).await.unwrap();
    assert_eq!(r["truncated"], true);
    assert_eq!(r["body"].as_str().unwrap().as_bytes(), &noise[..cap]);
}

#[tokio::test]
async fn t20_endless_empty_gzip_members_stop_at_the_input_cap() {
    // An upstream that streams empty gzip members forever: without an input cap the decoded cap
    // is never reached and the call would run into its timeout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let member = Bytes::from(empty_gzip_member());
    let app = axum::Router::new().fallback(move || {
        let member = member.clone();
        async move {
            let stream = futures::stream::repeat_with(move || {
                Ok::<_, std::convert::Infallible>(member.clone())
            });
            axum::response::Response::builder()
                .header("content-type", "application/gzip")
                .body(axum::body::Body::from_stream(stream))
                .unwrap()
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut h = local_handle(port, header_inject());
    limits(&mut h).max_response_bytes = 4 * 1024;
    limits(&mut h).timeout_ms = 10_000;
    let t = Instant::now();
    let e = call(&h, &args("GET", "/v1/endless")).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::UndecodableResponse);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}
