//! A real AWS emulator for tests: `moto_server` (PyPI `moto[server]`) on a free port of
//! 127.0.0.1. When it is not installed the test prints `skipped: ...` and gets None, unless
//! `AIRLOCK_REQUIRE_SERVICES=1`, when it fails.
#![allow(dead_code)]

use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `moto_server` child, killed when dropped.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn required() -> bool {
    std::env::var("AIRLOCK_REQUIRE_SERVICES").as_deref() == Ok("1")
}

impl Moto {
    /// Starts moto on a free port with `env`; None (after printing why) when it is not installed.
    pub async fn start(env: &[(&str, &str)]) -> Option<Moto> {
        let port = free_port();
        let mut cmd = Command::new("moto_server");
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                if required() {
                    panic!("moto_server is required (AIRLOCK_REQUIRE_SERVICES=1) but cannot start: {e}");
                }
                println!("skipped: moto_server is not installed (pip install 'moto[server]'): {e}");
                return None;
            }
        };
        let m = Moto { child, url: format!("http://127.0.0.1:{port}") };
        let c = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(r) = c.get(format!("{}/moto-api/data.json", m.url)).send().await {
                if r.status().is_success() {
                    return Some(m);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("moto_server did not answer on {} within 30 s", m.url);
    }

    /// moto's recorded state.
    pub async fn data(&self) -> Value {
        reqwest::get(format!("{}/moto-api/data.json", self.url)).await.unwrap().json().await.unwrap()
    }

    /// A request to moto outside the broker (test setup). moto routes by the credential scope
    /// of the Authorization header and, without IAM enforcement, does not check the signature.
    pub async fn setup(&self, service: &str, method: &str, path: &str, body: Vec<u8>) -> (u16, String) {
        self.setup_with(service, method, path, body, &[]).await
    }

    /// As [`Moto::setup`], with extra headers (a KMS call's `x-amz-target`).
    pub async fn setup_with(&self, service: &str, method: &str, path: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> (u16, String) {
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential=AKIAFAKESETUP0000001/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=00"
        );
        let mut r = reqwest::Client::new()
            .request(method.parse().unwrap(), format!("{}{path}", self.url))
            .header("authorization", auth)
            .body(body);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r = match service {
            "s3" => r,
            // The JSON protocol: `path` is "/", the operation is in `method` as `Target.Op`.
            "kms" => r.header("content-type", "application/x-amz-json-1.1"),
            _ => r.header("content-type", "application/x-www-form-urlencoded"),
        };
        let r = r.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}
