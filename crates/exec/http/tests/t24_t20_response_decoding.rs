//! T24: compressed response bodies are decoded before they are returned, so the broker's
//! scrubber sees the secret an upstream echoes; an encoding airlock cannot decode, or a body that
//! fails to decode, is refused and never returned raw. T20: the decoded size is capped, so a
//! decompression bomb stops at the cap in bounded time and memory.

mod common;

use airlock_core::config::Handle;
use airlock_core::{CallError, ErrorCode, HandleName, Secret};
use airlock_exec_http::{HttpArgs, HttpExecutor};
use airlock_scrub::ScrubberBuilder;
use base64::Engine as _;
use common::{args, encode, header_inject, limits, local_handle, RawUpstream, Upstream};
use serde_json::Value;
use std::io::Read;
use std::time::{Duration, Instant};

const KEY: &str = "sk-canary-7f3a9c2e41d8";

fn secret() -> Secret {
    Secret::from_str_value(KEY)
}

async fn call(h: &Handle, a: &HttpArgs) -> Result<Value, CallError> {
    let v = HttpExecutor::validate(h, a)?;
    HttpExecutor::new().execute(h, &v, &secret()).await
}

fn assert_clean(e: &CallError) {
    let all = format!("{} {:?}", e.message, e.detail);
    assert!(
        !all.contains(KEY) && !all.contains("canary"),
        "secret in error: {all}"
    );
}

/// Calls `/v1/encoded?ce=...` (the echo of the request, credential included, compressed with
/// `ce`) and checks the body came back decoded and that the broker's scrubber then removes the
/// echoed credential (in compressed bytes it would see, at best, scattered literals).
async fn echoed_and_scrubbed(up: &Upstream, ce: &str) {
    let h = local_handle(up.port(), header_inject());
    let q: String = url::form_urlencoded::byte_serialize(ce.as_bytes()).collect();
    let mut r = call(&h, &args("GET", &format!("/v1/encoded?ce={q}")))
        .await
        .unwrap_or_else(|e| panic!("{ce}: {e}"));
    assert_eq!(r["status"], 200, "{ce}");
    assert_eq!(r["truncated"], false, "{ce}");
    let hs = r["headers"].as_object().unwrap();
    assert!(!hs.contains_key("content-encoding"), "{ce}: {hs:?}");
    assert!(!hs.contains_key("content-length"), "{ce}: {hs:?}");
    let body: Value = serde_json::from_str(r["body"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("{ce}: not decoded: {e}"));
    assert_eq!(body["headers"]["x-api-key"], KEY, "{ce}");
    let mut b = ScrubberBuilder::new();
    b.add_secret(&HandleName::parse("API").unwrap(), &secret());
    let n = b.build().scrub_json(&mut r);
    assert!(n >= 1, "{ce}: nothing scrubbed");
    assert!(!r.to_string().contains(KEY), "{ce}: {r}");
    assert!(r["body"].as_str().unwrap().contains("[REDACTED:API]"));
}

#[tokio::test]
async fn t24_gzip_body_echoing_the_secret_is_decoded_and_scrubbed() {
    let up = Upstream::start().await;
    echoed_and_scrubbed(&up, "gzip").await;
    echoed_and_scrubbed(&up, "x-gzip").await;
    echoed_and_scrubbed(&up, "GZIP").await;
    // The broker asked for the encodings it decodes.
    let seen = up.requests();
    assert!(seen
        .iter()
        .all(|s| s.header("accept-encoding") == Some("gzip, deflate, br, zstd")));
}

#[tokio::test]
async fn t24_deflate_body_echoing_the_secret_is_decoded_and_scrubbed() {
    let up = Upstream::start().await;
    // zlib-wrapped (RFC 9110) and raw deflate (what some servers send), both labelled deflate.
    echoed_and_scrubbed(&up, "deflate").await;
    echoed_and_scrubbed(&up, "deflate-raw").await;
}

#[tokio::test]
async fn t24_br_body_echoing_the_secret_is_decoded_and_scrubbed() {
    let up = Upstream::start().await;
    echoed_and_scrubbed(&up, "br").await;
}

#[tokio::test]
async fn t24_zstd_body_echoing_the_secret_is_decoded_and_scrubbed() {
    let up = Upstream::start().await;
    echoed_and_scrubbed(&up, "zstd").await;
}

#[tokio::test]
async fn t24_stacked_encodings_are_decoded_in_order() {
    let up = Upstream::start().await;
    echoed_and_scrubbed(&up, "gzip, br").await;
    echoed_and_scrubbed(&up, "zstd, deflate").await;
    echoed_and_scrubbed(&up, "br, zstd, gzip").await;
    echoed_and_scrubbed(&up, "identity, gzip").await;
    // Four layers is more than any server applies: refused, not returned half-decoded.
    let h = local_handle(up.port(), header_inject());
    let e = call(&h, &args("GET", "/v1/encoded?ce=gzip,gzip,gzip,gzip"))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::UndecodableResponse);
    assert_clean(&e);
}

#[tokio::test]
async fn t24_concatenated_gzip_members_and_zstd_frames_are_one_body() {
    let up = Upstream::start().await;
    let h = local_handle(up.port(), header_inject());
    let mut gz = encode(&["gzip"], b"first ");
    gz.extend(encode(&["gzip"], KEY.as_bytes()));
    up.canned("/v1/gz2", &[("content-encoding", "gzip")], gz);
    let r = call(&h, &args("GET", "/v1/gz2")).await.unwrap();
    assert_eq!(r["body"], format!("first {KEY}"));
    // Two zstd frames with a skippable frame between them.
    let mut zs = encode(&["zstd"], b"first ");
    zs.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
    zs.extend_from_slice(&3u32.to_le_bytes());
    zs.extend_from_slice(b"xyz");
    zs.extend(encode(&["zstd"], KEY.as_bytes()));
    up.canned("/v1/zs2", &[("content-encoding", "zstd")], zs);
    let r = call(&h, &args("GET", "/v1/zs2")).await.unwrap();
    assert_eq!(r["body"], format!("first {KEY}"));
}

#[tokio::test]
async fn t24_unknown_encoding_is_refused_never_returned_raw() {
    let up = Upstream::start().await;
    let h = local_handle(up.port(), header_inject());
    for ce in [
        "compress",
        "x-compress",
        "aes128gcm",
        "gzip, snappy",
        "exi",
        "pack200-gzip",
    ] {
        // The body is the credential in the clear: still refused, because the label says the
        // broker cannot know what it holds.
        up.canned("/v1/odd", &[("content-encoding", ce)], KEY.to_owned());
        let e = call(&h, &args("GET", "/v1/odd")).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::UndecodableResponse, "{ce}");
        assert_eq!(e.code.http_status(), 502);
        assert_eq!(e.message, ErrorCode::UndecodableResponse.default_message());
        assert_clean(&e);
    }
    // A label with nothing to decode (HEAD) is an empty body, not an error.
    let r = call(&h, &args("HEAD", "/v1/odd")).await.unwrap();
    assert_eq!(
        (r["status"].as_u64(), r["body"].as_str()),
        (Some(200), Some(""))
    );
    let r = call(&h, &args("HEAD", "/v1/encoded?ce=gzip"))
        .await
        .unwrap();
    assert_eq!(r["body"], "");
}

#[tokio::test]
async fn t24_corrupt_gzip_body_is_refused() {
    let up = Upstream::start().await;
    let h = local_handle(up.port(), header_inject());
    let plain = format!(
        "{{\"token\": \"{KEY}\", \"pad\": \"{}\"}}",
        "p".repeat(2000)
    );
    let good = encode(&["gzip"], plain.as_bytes());
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x5a;
    let mut bad_crc = good.clone();
    let n = bad_crc.len();
    bad_crc[n - 6] ^= 0xff;
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"trailing junk");
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("flipped", "gzip", flipped),
        ("bad crc", "gzip", bad_crc),
        ("cut short", "gzip", good[..good.len() / 2].to_vec()),
        ("trailing junk", "gzip", trailing),
        ("not gzip at all", "gzip", plain.clone().into_bytes()),
        ("not brotli", "br", plain.clone().into_bytes()),
        ("not zstd", "zstd", plain.clone().into_bytes()),
        ("not deflate", "deflate", plain.clone().into_bytes()),
        ("gzip labelled zstd", "zstd", good.clone()),
    ];
    for (what, ce, body) in cases {
        up.canned("/v1/bad", &[("content-encoding", ce)], body);
        let e = call(&h, &args("GET", "/v1/bad")).await.expect_err(what);
        assert_eq!(e.code, ErrorCode::UndecodableResponse, "{what}");
        assert_clean(&e);
    }
    // The intact body decodes.
    up.canned("/v1/bad", &[("content-encoding", "gzip")], good);
    let r = call(&h, &args("GET", "/v1/bad")).await.unwrap();
    assert_eq!(r["body"], plain);
}

/// Peak resident memory of this test process, in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// `n` zeros through a streaming encoder, never holding them in memory (so the peak-memory check
/// below measures the decoder, not the fixture).
fn zeros(coding: &str, n: u64) -> Vec<u8> {
    let src = std::io::repeat(0).take(n);
    match coding {
        "gzip" => {
            let mut out = Vec::new();
            flate2::read::GzEncoder::new(src, flate2::Compression::best())
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        "br" => {
            let mut out = Vec::new();
            brotli::CompressorReader::new(src, 64 * 1024, 5, 22)
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        "zstd" => {
            ruzstd::encoding::compress_to_vec(src, ruzstd::encoding::CompressionLevel::Fastest)
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn t20_decompression_bomb_stops_at_the_cap() {
    let up = Upstream::start().await;
    let mut h = local_handle(up.port(), header_inject());
    let cap = 64 * 1024;
    limits(&mut h).max_response_bytes = cap;
    // 1 GiB of zeros in about 1 MiB of gzip.
    let bomb = zeros("gzip", 1 << 30);
    assert!(bomb.len() < 2 << 20, "{}", bomb.len());
    // The same gzipped again: 1 GiB behind a few KiB, two layers deep.
    let double = encode(&["gzip"], &bomb);
    // And 1 GiB as 1024 concatenated members of 1 MiB each.
    let one_mib = zeros("gzip", 1 << 20);
    let members: Vec<u8> = std::iter::repeat_n(&one_mib[..], 1024)
        .flatten()
        .copied()
        .collect();
    // zstd and brotli bombs of 64 MiB each (their encoders are slower to build the fixture).
    let zstd = zeros("zstd", 64 << 20);
    let br = zeros("br", 64 << 20);
    up.canned("/v1/bomb", &[("content-encoding", "gzip")], bomb);
    up.canned("/v1/double", &[("content-encoding", "gzip, gzip")], double);
    up.canned("/v1/members", &[("content-encoding", "gzip")], members);
    up.canned("/v1/zbomb", &[("content-encoding", "zstd")], zstd);
    up.canned("/v1/brbomb", &[("content-encoding", "br")], br);
    let before = peak_rss_kib();
    for path in [
        "/v1/bomb",
        "/v1/double",
        "/v1/members",
        "/v1/zbomb",
        "/v1/brbomb",
    ] {
        let t = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(10), call(&h, &args("GET", path)))
            .await
            .unwrap_or_else(|_| panic!("{path}: no answer in 10 s"))
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(r["truncated"], true, "{path}");
        let body = r["body"].as_str().unwrap();
        assert_eq!(body.len(), cap, "{path}");
        assert!(body.bytes().all(|b| b == 0), "{path}");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{path}: {:?}",
            t.elapsed()
        );
    }
    // Decoding a gigabyte fully would show here; the cap keeps growth to windows and buffers.
    let grown = peak_rss_kib().saturating_sub(before);
    assert!(grown < 128 * 1024, "peak RSS grew by {grown} KiB");
}

#[tokio::test]
async fn t20_decoded_cap_reached_returns_without_waiting_for_the_rest() {
    // The upstream sends more than the cap, compressed, and then stalls: the call returns the
    // capped body at once instead of running into the timeout.
    let up = Upstream::start().await;
    let mut h = local_handle(up.port(), header_inject());
    limits(&mut h).max_response_bytes = 64 * 1024;
    limits(&mut h).timeout_ms = 3_000;
    let t = Instant::now();
    let r = call(&h, &args("GET", "/v1/gzip-then-stall")).await.unwrap();
    assert_eq!(r["truncated"], true);
    assert_eq!(r["body"].as_str().unwrap().len(), 64 * 1024);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[tokio::test]
async fn t24_decoded_cap_is_exact() {
    let up = Upstream::start().await;
    let mut h = local_handle(up.port(), header_inject());
    limits(&mut h).max_response_bytes = 1000;
    for (n, truncated) in [
        (999usize, false),
        (1000, false),
        (1001, true),
        (50_000, true),
    ] {
        up.canned(
            "/v1/n",
            &[("content-encoding", "br")],
            encode(&["br"], &vec![b'a'; n]),
        );
        let r = call(&h, &args("GET", "/v1/n")).await.unwrap();
        assert_eq!(r["body"].as_str().unwrap().len(), n.min(1000), "{n}");
        assert_eq!(r["truncated"], truncated, "{n}");
    }
}

#[tokio::test]
async fn t24_binary_bodies_are_decoded_then_base64() {
    let up = Upstream::start().await;
    let h = local_handle(up.port(), header_inject());
    let raw: Vec<u8> = (0u8..=255).cycle().take(4096).collect();
    up.canned(
        "/v1/bin",
        &[
            ("content-type", "application/octet-stream"),
            ("content-encoding", "zstd"),
        ],
        encode(&["zstd"], &raw),
    );
    let r = call(&h, &args("GET", "/v1/bin")).await.unwrap();
    assert_eq!(r["body_encoding"], "base64");
    let got = base64::engine::general_purpose::STANDARD
        .decode(r["body"].as_str().unwrap())
        .unwrap();
    assert_eq!(got, raw);
}

fn raw_response(headers: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 200 OK\r\n{headers}Connection: close\r\n\r\n").into_bytes();
    r.extend_from_slice(body);
    r
}

#[tokio::test]
async fn t24_content_length_that_lies_is_not_returned_raw() {
    let plain = format!("{{\"token\": \"{KEY}\"}}");
    let gz = encode(&["gzip"], plain.as_bytes());
    // Shorter than the body: the client stops at the claimed length, mid-stream, and the cut
    // gzip is refused rather than returned as far as it got.
    let short = RawUpstream::start(raw_response(
        &format!(
            "Content-Encoding: gzip\r\nContent-Length: {}\r\n",
            gz.len() / 2
        ),
        &gz,
    ))
    .await;
    let h = local_handle(short.port(), header_inject());
    let e = call(&h, &args("GET", "/v1/x")).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::UndecodableResponse);
    assert_clean(&e);
    // Longer than the body, then the connection closes: a transport failure, nothing returned.
    let long = RawUpstream::start(raw_response(
        &format!(
            "Content-Encoding: gzip\r\nContent-Length: {}\r\n",
            gz.len() * 4
        ),
        &gz,
    ))
    .await;
    let h = local_handle(long.port(), header_inject());
    let e = call(&h, &args("GET", "/v1/x")).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::UpstreamUnavailable);
    assert_clean(&e);
    // A huge claimed length on a small body changes neither the cap nor the allocation.
    let huge = RawUpstream::start(raw_response(
        "Content-Encoding: gzip\r\nContent-Length: 99999999999\r\n",
        &gz,
    ))
    .await;
    let h = local_handle(huge.port(), header_inject());
    let e = call(&h, &args("GET", "/v1/x")).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::UpstreamUnavailable);
    // The length is right, the gzip is whole: decoded.
    let right = RawUpstream::start(raw_response(
        &format!("Content-Encoding: gzip\r\nContent-Length: {}\r\n", gz.len()),
        &gz,
    ))
    .await;
    let h = local_handle(right.port(), header_inject());
    let r = call(&h, &args("GET", "/v1/x")).await.unwrap();
    assert_eq!(r["body"], plain);
    assert_eq!(
        short.connections() + long.connections() + huge.connections() + right.connections(),
        4
    );
}

#[tokio::test]
async fn t24_transfer_coding_other_than_chunked_is_refused() {
    let plain = format!("{{\"token\": \"{KEY}\"}}");
    let gz = encode(&["gzip"], plain.as_bytes());
    let mut chunked = format!("{:x}\r\n", gz.len()).into_bytes();
    chunked.extend_from_slice(&gz);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let up = RawUpstream::start(raw_response(
        "Transfer-Encoding: gzip, chunked\r\n",
        &chunked,
    ))
    .await;
    let h = local_handle(up.port(), header_inject());
    let e = call(&h, &args("GET", "/v1/x")).await.unwrap_err();
    assert!(
        matches!(
            e.code,
            ErrorCode::UndecodableResponse | ErrorCode::UpstreamUnavailable
        ),
        "{:?}",
        e.code
    );
    assert_clean(&e);
}
