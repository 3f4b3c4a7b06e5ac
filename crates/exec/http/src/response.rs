//! Turning an upstream response into the tool's result: filtered headers, a body read as a
//! stream and cut at the handle's cap (T20), UTF-8 text or base64 for binary content.

use base64::Engine as _;
use reqwest::header::{HeaderMap, CONNECTION, CONTENT_TYPE};
use serde_json::{json, Map, Value};

/// Response headers never returned: credentials and cookies, and hop-by-hop headers.
const DROPPED_HEADERS: [&str; 13] = [
    "set-cookie",
    "set-cookie2",
    "cookie",
    "authorization",
    "proxy-authorization",
    "www-authenticate",
    "proxy-authenticate",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
];

/// The returned headers: lowercase names, values joined with ", ", dropping credential and
/// hop-by-hop headers, the headers `Connection` names, and `also_drop` (the injection header).
pub(crate) fn filter_headers(headers: &HeaderMap, also_drop: Option<&str>) -> Map<String, Value> {
    let named_by_connection: Vec<String> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let mut out = Map::new();
    for name in headers.keys() {
        let n = name.as_str();
        if DROPPED_HEADERS.contains(&n)
            || n == "upgrade"
            || named_by_connection.iter().any(|t| t == n)
            || also_drop.is_some_and(|d| d.eq_ignore_ascii_case(n))
        {
            continue;
        }
        let joined = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        out.insert(n.to_owned(), Value::String(joined));
    }
    out
}

/// True for content types that are clearly not text.
pub(crate) fn is_binary(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let (top, sub) = mime.split_once('/').unwrap_or((mime.as_str(), ""));
    if sub.ends_with("+json") || sub.ends_with("+xml") {
        return false;
    }
    matches!(top, "image" | "audio" | "video" | "font")
        || (top == "application"
            && matches!(
                sub,
                "octet-stream"
                    | "pdf"
                    | "zip"
                    | "gzip"
                    | "x-gzip"
                    | "x-tar"
                    | "x-bzip2"
                    | "x-xz"
                    | "zstd"
                    | "x-7z-compressed"
                    | "wasm"
                    | "protobuf"
                    | "x-protobuf"
                    | "vnd.google.protobuf"
                    | "msgpack"
                    | "x-msgpack"
                    | "cbor"
            ))
}

/// Reads at most `cap` bytes of the body; the flag says whether more was sent.
pub(crate) async fn read_capped(
    resp: &mut reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    // Content-Length is only a hint for the first allocation; it can neither raise the cap nor
    // make us allocate more than a modest buffer up front.
    let hint = resp.content_length().unwrap_or(0).min(64 * 1024) as usize;
    let mut buf = Vec::with_capacity(hint.min(cap));
    while let Some(chunk) = resp.chunk().await? {
        let room = cap - buf.len();
        if chunk.len() > room {
            buf.extend_from_slice(&chunk[..room]);
            return Ok((buf, true));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((buf, false))
}

/// The tool result: `{status, headers, body, truncated}`, plus `body_encoding: "base64"` when the
/// body is binary. A body whose media type is a compression format (`application/gzip`...) was
/// decompressed on the way in (see `decode`): it says so with `body_decompressed: true`, and it
/// is returned as text when the decompressed content is UTF-8, as base64 otherwise.
pub(crate) fn result(
    status: u16,
    headers: Map<String, Value>,
    body: Vec<u8>,
    binary: bool,
    truncated: bool,
) -> Value {
    let decompressed = headers
        .get("content-type")
        .and_then(Value::as_str)
        .and_then(crate::decode::media_coding_of)
        .is_some();
    if decompressed {
        // A cap may cut the last character short: still text.
        let binary = std::str::from_utf8(&body).is_err_and(|e| e.error_len().is_some());
        let mut v = body_result(status, headers, body, binary, truncated);
        v["body_decompressed"] = Value::Bool(true);
        return v;
    }
    body_result(status, headers, body, binary, truncated)
}

/// `{status, headers, body, truncated}` with the body as text, or as base64 when `binary`.
fn body_result(
    status: u16,
    headers: Map<String, Value>,
    body: Vec<u8>,
    binary: bool,
    truncated: bool,
) -> Value {
    if binary {
        json!({
            "status": status,
            "headers": headers,
            "body": base64::engine::general_purpose::STANDARD.encode(&body),
            "body_encoding": "base64",
            "truncated": truncated,
        })
    } else {
        json!({
            "status": status,
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
            "truncated": truncated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn credential_and_hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("set-cookie", "sid=1"),
            ("set-cookie", "sid=2"),
            ("www-authenticate", "Basic"),
            ("connection", "close, x-hop"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("x-api-key", "echoed"),
            ("x-multi", "a"),
            ("x-multi", "b"),
            ("content-type", "application/json"),
        ] {
            h.append(
                reqwest::header::HeaderName::from_static(n),
                HeaderValue::from_static(v),
            );
        }
        let out = filter_headers(&h, Some("X-API-Key"));
        // Sorted: serde_json's map keeps insertion order when another crate of the workspace
        // turns on its `preserve_order` feature.
        let mut keys: Vec<_> = out.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, vec!["content-type", "x-multi"]);
        assert_eq!(out["x-multi"], "a, b");
    }

    #[test]
    fn binary_detection_is_by_content_type() {
        let with = |ct: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            is_binary(&h)
        };
        for ct in [
            "image/png",
            "application/octet-stream",
            "application/pdf; x=y",
            "Audio/Mpeg",
            "font/woff2",
        ] {
            assert!(with(ct), "{ct}");
        }
        for ct in [
            "application/json",
            "text/html; charset=utf-8",
            "image/svg+xml",
            "application/problem+json",
            "application/xml",
        ] {
            assert!(!with(ct), "{ct}");
        }
        assert!(!is_binary(&HeaderMap::new()));
    }
}
