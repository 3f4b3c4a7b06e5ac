//! Test fixtures: a real axum upstream on 127.0.0.1:0 that records every request it receives,
//! and builders for `http` handles.
#![allow(dead_code)]

use airlock_core::config::{
    Constraints, Destination, Handle, HandleKind, HttpConstraints, Injection, SecretRef,
};
use airlock_core::HandleName;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub peer: SocketAddr,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Everything the server got, as one string, for "the secret went nowhere else" checks.
    pub fn all_text(&self) -> String {
        let h: Vec<String> = self
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}"))
            .collect();
        format!(
            "{} {}?{}\n{}\n{}",
            self.method,
            self.path,
            self.query.as_deref().unwrap_or(""),
            h.join("\n"),
            String::from_utf8_lossy(&self.body)
        )
    }
}

/// A recording upstream.
///
/// Paths: `/redirect?status=N&to=URL`, `/slow?ms=N`, `/drip?ms=N` (headers now, body slowly),
/// `/big?n=N`, `/endless` (never-ending body), `/binary`, `/headers` (credential and multi-value
/// headers), `/gzip-then-stall` (a gzip body larger than any test cap, then no end),
/// `/encoded?ce=CODINGS` (the echo below, compressed with each listed coding in turn
/// and labelled `Content-Encoding: CODINGS`), and any path registered with [`Upstream::canned`];
/// anything else echoes the request as JSON (`method`, `path`, `query`, `headers`, `body`),
/// which is also the T18 fixture of an endpoint that echoes the credential back.
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<Shared>,
}

/// A fixed answer for one path: headers and body bytes exactly as given.
#[derive(Clone)]
struct Canned {
    headers: Vec<(String, String)>,
    body: Bytes,
}

#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<Seen>>,
    canned: Mutex<HashMap<String, Canned>>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Shared::default());
        let app = axum::Router::new()
            .fallback(serve_one)
            .with_state(state.clone());
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        Upstream { addr, state }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Answers `path` with these headers and body bytes from now on.
    pub fn canned(&self, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) {
        self.state.canned.lock().unwrap().insert(
            path.to_owned(),
            Canned {
                headers: headers
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
                body: body.into(),
            },
        );
    }
}

/// `data` with each coding applied in turn (`identity`, `gzip`/`x-gzip`, `deflate` = zlib,
/// `deflate-raw`, `br`, `zstd`; any case), as a server applying `Content-Encoding: a, b` would.
pub fn encode(codings: &[&str], data: &[u8]) -> Vec<u8> {
    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    use flate2::Compression;
    let mut cur = data.to_vec();
    for c in codings {
        cur = match c.to_ascii_lowercase().as_str() {
            "identity" => cur,
            "gzip" | "x-gzip" => {
                let mut e = GzEncoder::new(Vec::new(), Compression::fast());
                e.write_all(&cur).unwrap();
                e.finish().unwrap()
            }
            "deflate" => {
                let mut e = ZlibEncoder::new(Vec::new(), Compression::fast());
                e.write_all(&cur).unwrap();
                e.finish().unwrap()
            }
            "deflate-raw" => {
                let mut e = DeflateEncoder::new(Vec::new(), Compression::fast());
                e.write_all(&cur).unwrap();
                e.finish().unwrap()
            }
            "br" => {
                let mut out = Vec::new();
                brotli::CompressorReader::new(&cur[..], 4096, 5, 22)
                    .read_to_end(&mut out)
                    .unwrap();
                out
            }
            "zstd" => ruzstd::encoding::compress_to_vec(
                &cur[..],
                ruzstd::encoding::CompressionLevel::Fastest,
            ),
            other => panic!("no encoder for {other}"),
        };
    }
    cur
}

/// A raw TCP upstream on 127.0.0.1 for framing no HTTP library will send (a `Content-Length`
/// that lies): every connection gets `response` verbatim after its request head, then is closed.
pub struct RawUpstream {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl RawUpstream {
    pub async fn start(response: Vec<u8>) -> RawUpstream {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let response = Arc::new(response);
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let response = response.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = sock.write_all(&response).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        RawUpstream { addr, connections }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn serve_one(
    State(state): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let rec = Seen {
        peer,
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    state.seen.lock().unwrap().push(rec.clone());
    let canned = state.canned.lock().unwrap().get(&rec.path).cloned();
    if let Some(c) = canned {
        let mut resp = Response::new(Body::from(c.body));
        for (n, v) in &c.headers {
            resp.headers_mut().append(
                axum::http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        return resp;
    }
    let q = rec.query.as_deref();
    let path = rec.path.rsplit('/').next().unwrap_or("");
    let mut resp = Response::new(Body::empty());
    match path {
        "redirect" => {
            *resp.status_mut() =
                StatusCode::from_u16(param(q, "status").unwrap().parse().unwrap()).unwrap();
            resp.headers_mut().insert(
                "location",
                HeaderValue::from_str(&param(q, "to").unwrap()).unwrap(),
            );
        }
        "slow" => {
            tokio::time::sleep(Duration::from_millis(
                param(q, "ms").unwrap().parse().unwrap(),
            ))
            .await;
            *resp.body_mut() = Body::from("late");
        }
        "drip" => {
            let ms: u64 = param(q, "ms").unwrap().parse().unwrap();
            let s = futures::stream::unfold(0u32, move |i| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                (i < 1000).then(|| (Ok::<_, std::io::Error>(Bytes::from_static(b"x")), i + 1))
            });
            *resp.body_mut() = Body::from_stream(s);
        }
        "big" => {
            let n: usize = param(q, "n").unwrap().parse().unwrap();
            *resp.body_mut() = Body::from(vec![b'a'; n]);
        }
        "endless" => {
            let s = futures::stream::repeat_with(|| {
                Ok::<_, std::io::Error>(Bytes::from(vec![b'z'; 16 * 1024]))
            });
            *resp.body_mut() = Body::from_stream(s);
        }
        "binary" => {
            resp.headers_mut().insert(
                "content-type",
                HeaderValue::from_static("application/octet-stream"),
            );
            *resp.body_mut() = Body::from((0u8..=255).collect::<Vec<u8>>());
        }
        "headers" => {
            let h = resp.headers_mut();
            h.append("set-cookie", HeaderValue::from_static("sid=1"));
            h.append("www-authenticate", HeaderValue::from_static("Bearer"));
            h.append("x-api-key", HeaderValue::from_static("echoed"));
            h.append("x-multi", HeaderValue::from_static("one"));
            h.append("x-multi", HeaderValue::from_static("two"));
            h.append("content-type", HeaderValue::from_static("text/plain"));
            *resp.body_mut() = Body::from("ok");
        }
        "gzip-then-stall" => {
            // 4 MiB of zeros, gzipped, in one chunk; then the body never ends.
            use futures::StreamExt as _;
            let first = Bytes::from(encode(&["gzip"], &vec![0u8; 4 << 20]));
            let s = futures::stream::once(async move { Ok::<_, std::io::Error>(first) })
                .chain(futures::stream::pending());
            resp.headers_mut()
                .insert("content-encoding", HeaderValue::from_static("gzip"));
            *resp.body_mut() = Body::from_stream(s);
        }
        "encoded" => {
            let ce = param(q, "ce").unwrap();
            let codings: Vec<&str> = ce.split(',').map(str::trim).collect();
            let body = encode(&codings, echo(&rec).as_bytes());
            let h = resp.headers_mut();
            h.insert("content-type", HeaderValue::from_static("application/json"));
            h.insert(
                "content-encoding",
                HeaderValue::from_str(&ce.replace("deflate-raw", "deflate")).unwrap(),
            );
            *resp.body_mut() = Body::from(body);
        }
        _ => {
            resp.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            *resp.body_mut() = Body::from(echo(&rec));
        }
    }
    resp
}

/// The request as JSON, credential included (the T18 echo).
fn echo(rec: &Seen) -> String {
    let headers: serde_json::Map<String, serde_json::Value> = rec
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::json!({
        "method": rec.method,
        "path": rec.path,
        "query": rec.query,
        "headers": headers,
        "body": String::from_utf8_lossy(&rec.body),
    })
    .to_string()
}

pub fn dest(scheme: &str, host: &str, port: u16, prefix: &str, methods: &[&str]) -> Destination {
    Destination {
        scheme: scheme.into(),
        host: host.into(),
        port,
        path_prefix: prefix.into(),
        methods: methods.iter().map(|m| m.to_string()).collect(),
    }
}

pub fn header_inject() -> Injection {
    Injection::Header {
        name: "X-API-Key".into(),
        format: "{}".into(),
    }
}

pub fn handle(destinations: Vec<Destination>, inject: Injection) -> Handle {
    Handle {
        name: HandleName::parse("API").unwrap(),
        kind: HandleKind::Http,
        secret: SecretRef::Env("API_KEY".into()),
        description: "test API".into(),
        constraints: Constraints::Http(HttpConstraints {
            destinations,
            inject,
            max_response_bytes: 64 * 1024,
            timeout_ms: 5_000,
            max_redirects: 3,
            allow_private_addresses: false,
            max_request_bytes: 4096,
        }),
    }
}

/// A handle bound to `http://127.0.0.1:{port}/v1/` (GET, HEAD, POST) with the given injection.
pub fn local_handle(port: u16, inject: Injection) -> Handle {
    handle(
        vec![dest(
            "http",
            "127.0.0.1",
            port,
            "/v1/",
            &["GET", "HEAD", "POST"],
        )],
        inject,
    )
}

pub fn limits(h: &mut Handle) -> &mut HttpConstraints {
    match &mut h.constraints {
        Constraints::Http(c) => c,
        _ => unreachable!(),
    }
}

pub fn args(method: &str, path_or_url: &str) -> airlock_exec_http::HttpArgs {
    airlock_exec_http::HttpArgs {
        method: method.into(),
        path_or_url: path_or_url.into(),
        headers: Default::default(),
        body: None,
    }
}

/// A port on 127.0.0.1 where nothing listens.
pub async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}
