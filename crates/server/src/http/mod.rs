//! The HTTP front end (axum only): routing, extractors and one response type over the
//! [`Broker`]. Nothing here decides a call; every handler hands its request to the broker.
//!
//! Every error is the contract's envelope with a stable code; a panic in a handler becomes a 500
//! with code `internal` and a log line that carries no request data.

mod agent;
mod approvals;
mod assets;
mod connect;
pub mod drain;
pub mod lanes;
mod requests;
pub mod auth;
pub mod response;
mod shares;
pub mod token;

pub use auth::{authenticate, bearer, socket_peer, AgentAuth, SocketPeer};
pub use response::{ApiError, PAGE_CSP};

use crate::broker::Broker;
use airlock_core::ErrorCode;
use axum::extract::{DefaultBodyLimit, Request};
use axum::response::{IntoResponse, Response};
use axum::{Router, ServiceExt};
use std::future::{Future, IntoFuture};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// A connection as accepted: the TCP lanes only need axum's connect info for a tapped listener.
fn untouched(_: &mut TcpStream) {}

async fn not_found() -> Response {
    ApiError::from(ErrorCode::NotFound).into_response()
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    // The panic payload may quote data from the request: log only that it happened.
    tracing::error!("a request handler panicked; answered 500 internal");
    ApiError::from(ErrorCode::Internal).into_response()
}

fn finish(routes: Router<Arc<Broker>>, broker: Arc<Broker>) -> Router {
    let limit = broker.config().limits.max_request_bytes;
    routes
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response))
        .with_state(broker)
}

/// The router of the TCP listener: the agents' routes, the one-time link pages and API, and the
/// approval pages and API. For tests (`Router::oneshot`) and for [`serve`].
pub fn router(broker: Arc<Broker>) -> Router {
    let routes = agent::routes().merge(token::routes()).merge(shares::routes()).merge(approvals::routes()).merge(assets::routes()).merge(connect::routes()).merge(requests::routes());
    finish(routes, broker)
}

/// The router of the Unix socket: the agents' routes only. People open links and approve calls
/// over HTTP; the socket is for the thin clients agents run.
pub fn socket_router(broker: Arc<Broker>) -> Router {
    finish(agent::routes().merge(token::routes()), broker)
}

/// What [`serve_on`] listens on.
pub struct Listeners {
    /// REST, MCP over HTTP, one-time links and approval pages.
    pub tcp: TcpListener,
    /// The agents' Unix socket ([`socket_router`] plus the extra routes), if any.
    pub unix: Option<UnixListener>,
}

/// Serves until `shutdown` resolves, then drains in-flight requests. A background task picks up
/// secrets changed by other processes.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, broker, Router::new(), shutdown).await
}

/// As [`serve`], with `extra` routes merged in (the MCP endpoint, which lives in its own crate).
pub async fn serve_with(
    listener: TcpListener,
    broker: Arc<Broker>,
    extra: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_on(Listeners { tcp: listener, unix: None }, broker, extra, shutdown).await
}

/// As [`serve_with`], on the TCP listener and the Unix socket of `listeners`, with one set of
/// background tasks and one shutdown for both.
pub async fn serve_on(
    listeners: Listeners,
    broker: Arc<Broker>,
    extra: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Connections are served on the lanes (lanes.rs), one call on one thread.
    let lanes = lanes::Lanes::start()?;
    let refresher = {
        let b = broker.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
            let mut n = 0u64;
            loop {
                tick.tick().await;
                if let Err(e) = b.refresh().await {
                    tracing::warn!(error = %e, "secret refresh failed");
                }
                // Connected accounts marked keep_alive are refreshed before they expire.
                b.keep_accounts_alive().await;
                // The share sweeper: expired one-time links are deleted about every 30 s.
                if n.is_multiple_of(15) {
                    if let Err(e) = b.store().sweep_shares().await {
                        tracing::warn!(error = %e, "share sweep failed");
                    }
                }
                n += 1;
            }
        })
    };
    // Revokes leases at expiry, retries failed revocations, and first reconciles roles left by
    // a previous run.
    let reaper = broker.spawn_reaper();
    // Sends the audit records to the [audit.export] receiver, reading them back from the table.
    let export = broker.spawn_audit_export();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let unix = listeners.unix.map(|u| {
        // A body a handler leaves unread is read to its end before the answer (drain.rs); each
        // request is counted in flight on its lane (lanes.rs).
        let app = lanes::Counted(drain::Drained(socket_router(broker.clone()).merge(extra.clone())));
        let stop = stop_rx.clone();
        lanes.serve::<UnixStream, _>(
            u,
            move |lane| axum::serve(lane, ServiceExt::<Request>::into_make_service_with_connect_info::<SocketPeer>(app.clone())).with_graceful_shutdown(stopped(stop.clone())).into_future(),
            stop_rx.clone(),
        )
    });
    // Connection info gives the share endpoints the client address for their rate limits
    // (axum reads it from a tapped listener's address).
    let app = lanes::Counted(drain::Drained(router(broker).merge(extra)));
    let stop = stop_rx.clone();
    let tcp = lanes.serve::<TcpStream, _>(
        listeners.tcp,
        move |lane| {
            let lane = axum::serve::ListenerExt::tap_io(lane, untouched as fn(&mut TcpStream));
            axum::serve(lane, ServiceExt::<Request>::into_make_service_with_connect_info::<std::net::SocketAddr>(app.clone())).with_graceful_shutdown(stopped(stop.clone())).into_future()
        },
        stop_rx,
    );
    let signal = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let unix = async move {
        match unix {
            Some(u) => u.await,
            None => Ok(()),
        }
    };
    let (r, u, ()) = tokio::join!(tcp, unix, signal);
    refresher.abort();
    reaper.abort();
    if let Some(e) = export {
        e.abort();
    }
    r.and(u)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use serde_json::Value;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panicking_handler_becomes_500_internal_without_its_message() {
        async fn boom() -> Response {
            panic!("secret-ish detail canaryPanic_42");
        }
        let app: Router = Router::new()
            .route("/boom", get(boom))
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response));
        let resp = app
            .oneshot(axum::http::Request::builder().uri("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 500);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "internal");
        assert!(!String::from_utf8_lossy(&body).contains("canaryPanic"));
    }
}
