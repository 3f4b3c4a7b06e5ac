//! Probe: one `http_request` through the executor against the same GET sent with a plain
//! reqwest client, to the same loopback upstream (its own runtime and threads), alternating.
//! `cargo run --release -p airlock-exec-http --example exec_probe -- [N]`.
use airlock_core::config::{Constraints, Destination, Handle, HandleKind, HttpConstraints, Injection, SecretRef};
use airlock_core::{HandleName, Secret};
use airlock_exec_http::{HttpArgs, HttpExecutor};
use std::time::Instant;

fn main() {
    let n: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(20_000);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap().port()).unwrap();
            let app = axum::Router::new().route("/v1/ping", axum::routing::get(|| async { "{\"ok\":true}" }));
            axum::serve(l, app).await.unwrap();
        });
    });
    let port = rx.recv().unwrap();
    let handle = Handle {
        name: HandleName::parse("API").unwrap(),
        kind: HandleKind::Http,
        secret: SecretRef::Env("API_KEY".into()),
        description: String::new(),
        constraints: Constraints::Http(HttpConstraints {
            destinations: vec![Destination { scheme: "http".into(), host: "127.0.0.1".into(), port, path_prefix: "/v1/".into(), methods: vec!["GET".into()] }],
            inject: Injection::Header { name: "Authorization".into(), format: "Bearer {}".into() },
            max_response_bytes: 64 * 1024,
            timeout_ms: 5_000,
            max_redirects: 3,
            allow_private_addresses: true,
            max_request_bytes: 4096,
        }),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        tokio::spawn(async move {
            let ex = HttpExecutor::new();
            let secret = Secret::from_str_value("bench_upstream_token_0123456789abcdef");
            let args = HttpArgs { method: "GET".into(), path_or_url: "/v1/ping".into(), headers: Default::default(), body: None };
            let client = reqwest::Client::new();
            let url = format!("http://127.0.0.1:{port}/v1/ping");
            let (mut a, mut b) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for _ in 0..n {
                let t = Instant::now();
                let v = HttpExecutor::validate(&handle, &args).unwrap();
                ex.execute(&handle, &v, &secret).await.unwrap();
                a.push(t.elapsed().as_secs_f64() * 1e6);
                let t = Instant::now();
                client.get(&url).header("authorization", "Bearer x").send().await.unwrap().bytes().await.unwrap();
                b.push(t.elapsed().as_secs_f64() * 1e6);
            }
            for (name, mut v) in [("executor", a), ("reqwest", b)] {
                v.sort_by(f64::total_cmp);
                println!("{name:<9} p50 {:.1} µs  p99 {:.1} µs", v[n / 2], v[n * 99 / 100]);
            }
        })
        .await
        .unwrap();
    });
}
