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
use std::net::SocketAddr;
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
/// headers); anything else echoes the request as JSON (`method`, `path`, `query`, `headers`,
/// `body`), which is also the T18 fixture of an endpoint that echoes the credential back.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .fallback(serve_one)
            .with_state(seen.clone());
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        Upstream { addr, seen }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn serve_one(
    State(seen): State<Arc<Mutex<Vec<Seen>>>>,
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
    seen.lock().unwrap().push(rec.clone());
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
        _ => {
            let headers: serde_json::Map<String, serde_json::Value> = rec
                .headers
                .iter()
                .map(|(n, v)| (n.clone(), serde_json::Value::String(v.clone())))
                .collect();
            let echo = serde_json::json!({
                "method": rec.method,
                "path": rec.path,
                "query": rec.query,
                "headers": headers,
                "body": String::from_utf8_lossy(&rec.body),
            });
            resp.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            *resp.body_mut() = Body::from(echo.to_string());
        }
    }
    resp
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
