//! The pages people open (create a one-time link, open one, decide an approval) and their
//! scripts and styles: static bytes, the same for every id, under [`PAGE_CSP`](super::response::PAGE_CSP).

use super::response::{page, ApiError};
use crate::broker::Broker;
use airlock_core::ErrorCode;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

const HEAD_HTML: &str = include_str!("../../web/head.html");
const CREATE_HTML: &str = include_str!("../../web/create.html");
const OPEN_HTML: &str = include_str!("../../web/open.html");
const APPROVE_HTML: &str = include_str!("../../web/approve.html");
const FORMAT_JS: &str = include_str!("../../web/share-format.js");
const CREATE_JS: &str = include_str!("../../web/create.js");
const OPEN_JS: &str = include_str!("../../web/open.js");
const APPROVE_JS: &str = include_str!("../../web/approve.js");
const CONNECT_JS: &str = include_str!("../../web/connect.js");
const REQUEST_HTML: &str = include_str!("../../web/request.html");
const REQUEST_JS: &str = include_str!("../../web/request.js");
const REQUEST_FORMAT_JS: &str = include_str!("../../web/request-format.js");
const CSS: &str = include_str!("../../web/airlock.css");
const HTML: &str = "text/html; charset=utf-8";

/// A whole page: the shared head (charset, viewport, referrer and robots meta, stylesheet) with
/// `title`, then `body`.
pub(super) fn html(title: &str, body: &str) -> String {
    let mut s = HEAD_HTML.replace("{{TITLE}}", title);
    s.push_str(body);
    s
}

static OPEN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| html("a secret for you", OPEN_HTML));
static APPROVE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| html("approve a call", APPROVE_HTML));
static REQUEST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| html("a secret is requested", REQUEST_HTML));

async fn create_page(State(b): State<Arc<Broker>>) -> Response {
    let s = &b.config().shares;
    let body = CREATE_HTML
        .replace("{{MAX_BYTES}}", &s.max_plaintext_bytes.to_string())
        .replace("{{MAX_VIEWS}}", &s.max_views.to_string());
    page(HTML, html("share a secret", &body))
}

/// The same bytes for every id, without touching the store: the page itself reveals nothing.
async fn open_page() -> Response {
    page(HTML, OPEN.as_str())
}

/// The same bytes for every id: the page fetches the call only with an approver's token.
async fn approve_page() -> Response {
    page(HTML, APPROVE.as_str())
}

/// The same bytes for every id: the page fetches the request only with the link's proof.
async fn request_page() -> Response {
    page(HTML, REQUEST.as_str())
}

async fn asset(Path(name): Path<String>) -> Response {
    let (ct, body) = match name.as_str() {
        "share-format.js" => ("text/javascript; charset=utf-8", FORMAT_JS),
        "create.js" => ("text/javascript; charset=utf-8", CREATE_JS),
        "open.js" => ("text/javascript; charset=utf-8", OPEN_JS),
        "approve.js" => ("text/javascript; charset=utf-8", APPROVE_JS),
        "connect.js" => ("text/javascript; charset=utf-8", CONNECT_JS),
        "request.js" => ("text/javascript; charset=utf-8", REQUEST_JS),
        "request-format.js" => ("text/javascript; charset=utf-8", REQUEST_FORMAT_JS),
        "airlock.css" => ("text/css; charset=utf-8", CSS),
        _ => return ApiError::from(ErrorCode::NotFound).into_response(),
    };
    page(ct, body)
}

/// The pages and assets.
pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/share", get(create_page))
        .route("/s/{id}", get(open_page))
        .route("/approve/{id}", get(approve_page))
        .route("/r/{id}", get(request_page))
        .route("/web/{name}", get(asset))
}
