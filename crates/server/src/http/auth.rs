//! Who is calling: the bearer token and, over the Unix socket, the peer's credentials. REST and
//! MCP turn a request into a [`Caller`] only through [`authenticate`] or [`AgentAuth`].

use crate::broker::{Broker, Caller};
use airlock_core::{CallError, Peer};
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use tokio::net::UnixListener;

/// The token of `Authorization: Bearer <token>`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The connection info of the Unix socket: the peer's credentials as the kernel gave them at
/// accept (`SO_PEERCRED`). Only the socket listener inserts it, so an HTTP client cannot claim
/// one.
#[derive(Clone, Copy, Debug)]
pub struct SocketPeer(pub Option<Peer>);

impl SocketPeer {
    fn of(stream: &tokio::net::UnixStream) -> SocketPeer {
        SocketPeer(stream.peer_cred().ok().map(|c| Peer { uid: c.uid(), gid: c.gid(), pid: c.pid() }))
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, UnixListener>> for SocketPeer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, UnixListener>) -> Self {
        SocketPeer::of(stream.io())
    }
}

/// The same, for a connection served on a lane ([`super::lanes`]).
impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, super::lanes::Lane<tokio::net::UnixStream>>> for SocketPeer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, super::lanes::Lane<tokio::net::UnixStream>>) -> Self {
        SocketPeer::of(stream.io())
    }
}

/// The socket peer of a request, when it came over the Unix socket.
pub fn socket_peer(extensions: &http::Extensions) -> Option<Peer> {
    extensions.get::<ConnectInfo<SocketPeer>>().and_then(|c| c.0 .0)
}

/// Where a request came from, for aggregating refusals (T29): the socket peer's uid, or the
/// client address of an HTTP connection.
pub fn source(extensions: &http::Extensions) -> String {
    if let Some(p) = socket_peer(extensions) {
        return format!("uid:{}", p.uid);
    }
    match extensions.get::<ConnectInfo<std::net::SocketAddr>>() {
        Some(c) => c.0.ip().to_string(),
        None => "unknown".to_owned(),
    }
}

/// Authenticates the request's bearer token; the caller carries the socket peer, if any, for
/// the audit. The one way every front end (REST, MCP over HTTP) turns a request into a
/// [`Caller`].
pub async fn authenticate(broker: &Broker, headers: &HeaderMap, extensions: &http::Extensions) -> Result<Caller, CallError> {
    AgentAuth { token: bearer(headers).map(str::to_owned), peer: socket_peer(extensions), source: String::new() }.caller(broker).await
}

/// The caller side of a request, for handlers: its bearer token and socket peer.
pub struct AgentAuth {
    token: Option<String>,
    peer: Option<Peer>,
    source: String,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for AgentAuth {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(AgentAuth {
            token: bearer(&parts.headers).map(str::to_owned),
            peer: socket_peer(&parts.extensions),
            source: source(&parts.extensions),
        })
    }
}

impl AgentAuth {
    /// Whether the request carried a bearer token.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The authenticated agent.
    pub async fn caller(&self, broker: &Broker) -> Result<Caller, CallError> {
        let mut c = broker.authenticate(self.token.as_deref()).await?;
        c.peer = self.peer;
        Ok(c)
    }

    /// The authenticated agent, or the audited refusal of `action` to answer with (a refused
    /// token is audited once per source per minute, [`Broker::refuse_from`]).
    pub async fn caller_or_refuse(&self, broker: &Broker, action: &str) -> Result<Caller, Response> {
        match self.caller(broker).await {
            Ok(c) => Ok(c),
            Err(e) => Err(axum::response::IntoResponse::into_response(Box::pin(broker.refuse_from(&self.source, action, e)).await)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer  abc "));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
    }
}
