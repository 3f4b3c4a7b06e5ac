//! A request body left unread is read to its end before the answer goes out, within bounds.
//!
//! Handlers answer some requests without reading all of the body: a body over
//! `limits.max_request_bytes` (413), a missing or wrong token (401), an unknown route (404). If the
//! connection were then closed with the rest of the body unread, the kernel would answer the
//! client's next segment with a reset, and a reset can destroy the answer before the client reads
//! it: the client would see a broken connection instead of the refusal and its code. So the
//! unread rest is read and dropped first, up to [`DRAIN_BYTES`] and for at most [`DRAIN_TIME`],
//! and the connection stays usable. A client that sends more, or sends it slower, gets the answer
//! with `Connection: close`. A client that asked `Expect: 100-continue` and whose body was never
//! read has not sent it: it is not asked for it, and the answer closes the connection instead.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::header::{CONNECTION, EXPECT};
use axum::http::HeaderValue;
use axum::response::Response;
use futures::future::{BoxFuture, Either};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;
use tower::Service;

/// At most this many bytes of an unread rest are read and dropped.
pub const DRAIN_BYTES: u64 = 8 << 20;
/// For at most this long.
pub const DRAIN_TIME: Duration = Duration::from_secs(2);

/// An app (a listener's whole router) whose requests' bodies are drained: each body is wrapped
/// so that what the handler leaves of it comes back here when the handler drops it, and that
/// rest is read to its end (bounded) before the answer goes out. A request without a body goes
/// straight through.
#[derive(Clone)]
pub struct Drained<S>(pub S);

impl<S> Service<Request> for Drained<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if req.body().is_end_stream() {
            return Either::Left(self.0.call(req));
        }
        let expects_continue = req.headers().get(EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let (tx, mut rx) = oneshot::channel();
        let answer = self.0.call(req.map(|body| Body::new(Returning { body: Some(body), back: Some(tx), polled: false })));
        Either::Right(Box::pin(async move {
            let Ok(mut resp) = answer.await;
            // The handler has dropped the body by now unless a task it started still holds it;
            // then nothing comes back and nothing is done here.
            let Ok(Rest { body, polled }) = rx.try_recv() else {
                return Ok(resp);
            };
            let finished = if expects_continue && !polled { false } else { drain(body).await };
            if !finished {
                resp.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(resp)
        }))
    }
}

/// Reads `body` to its end, dropping what it reads; whether it ended within the bounds.
async fn drain(mut body: Body) -> bool {
    let read = async {
        let mut left = DRAIN_BYTES;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            let n = frame.data_ref().map_or(0, |d| d.len() as u64);
            let Some(rest) = left.checked_sub(n) else { return false };
            left = rest;
        }
        true
    };
    tokio::time::timeout(DRAIN_TIME, read).await.unwrap_or(false)
}

/// What a handler left of a body: the body, and whether it was read at all.
struct Rest {
    body: Body,
    polled: bool,
}

/// A request body that, dropped before its end, is handed back to [`Drained`].
struct Returning {
    body: Option<Body>,
    back: Option<oneshot::Sender<Rest>>,
    polled: bool,
}

impl http_body::Body for Returning {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        this.polled = true;
        match this.body.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body.as_ref().map_or_else(|| SizeHint::with_exact(0), http_body::Body::size_hint)
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        if let (Some(body), Some(back)) = (self.body.take(), self.back.take()) {
            if !body.is_end_stream() {
                let _ = back.send(Rest { body, polled: self.polled });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use axum::Router;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    /// A server whose `/refuse` answers 413 after reading at most `read` bytes of the body, and
    /// whose `/take` reads all of it and answers its length.
    async fn server(read: usize) -> std::net::SocketAddr {
        async fn take(body: Bytes) -> String {
            body.len().to_string()
        }
        let refuse = move |body: Body| async move {
            let _ = axum::body::to_bytes(body, read).await;
            (axum::http::StatusCode::PAYLOAD_TOO_LARGE, "refused")
        };
        let app = Router::new()
            .route("/refuse", post(refuse))
            .route("/take", post(take))
            .layer(axum::extract::DefaultBodyLimit::disable());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, axum::ServiceExt::<Request>::into_make_service(Drained(app))).await });
        addr
    }

    /// One HTTP/1.1 answer read off `s`: its status, its headers (lower-case) and its body.
    fn answer(s: &mut TcpStream) -> std::io::Result<(u16, String, String)> {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).to_lowercase();
        let status = head[9..12].parse().unwrap();
        let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length: ")).map_or(0, |v| v.trim().parse().unwrap());
        let mut body = vec![0u8; len];
        s.read_exact(&mut body)?;
        Ok((status, head, String::from_utf8_lossy(&body).into_owned()))
    }

    /// A request with `n` bytes of body, as fixed length or chunked (in chunks of 64 KiB).
    fn request(path: &str, n: usize, chunked: bool) -> Vec<u8> {
        let mut r = format!("POST {path} HTTP/1.1\r\nhost: x\r\n").into_bytes();
        if chunked {
            r.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
            let mut left = n;
            while left > 0 {
                let c = left.min(64 << 10);
                r.extend_from_slice(format!("{c:x}\r\n").as_bytes());
                r.extend(std::iter::repeat_n(b'a', c));
                r.extend_from_slice(b"\r\n");
                left -= c;
            }
            r.extend_from_slice(b"0\r\n\r\n");
        } else {
            r.extend_from_slice(format!("content-length: {n}\r\n\r\n").as_bytes());
            r.extend(std::iter::repeat_n(b'a', n));
        }
        r
    }

    /// Sends a refused request of `n` bytes on `s` and then a request that must be answered
    /// whole on the same connection: the refusal is 413 without `close`, and the next answer is
    /// the next request's.
    fn refuse_then_take(s: &mut TcpStream, n: usize, chunked: bool) {
        let refused = request("/refuse", n, chunked);
        // Sent from a thread of its own: the server answers only once it has read it all.
        let mut w = s.try_clone().unwrap();
        let sender = std::thread::spawn(move || w.write_all(&refused));
        let (status, head, _) = answer(s).unwrap();
        sender.join().unwrap().unwrap();
        assert_eq!(status, 413, "{n} bytes, chunked {chunked}");
        assert!(!head.contains("connection: close"), "{n} bytes, chunked {chunked}: {head}");
        s.write_all(&request("/take", 10, false)).unwrap();
        let (status, _, body) = answer(s).unwrap();
        assert_eq!((status, body.as_str()), (200, "10"), "after {n} bytes, chunked {chunked}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_body_is_read_to_its_end_and_the_connection_goes_on() {
        let addr = server(1 << 20).await;
        tokio::task::spawn_blocking(move || {
            // Bodies the handler leaves unread at several points, fixed length and chunked.
            let mut s = TcpStream::connect(addr).unwrap();
            for (n, chunked) in [(1, false), ((1 << 20) + 1, false), (3 << 20, false), ((1 << 20) + 1, true), (5 << 20, true)] {
                refuse_then_take(&mut s, n, chunked);
            }
        })
        .await
        .unwrap();
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Wherever the handler stops reading (nowhere, mid-body, past the end) and however the
        /// body is framed, a rest within the bound is drained and the connection goes on.
        #[test]
        fn any_refused_body_within_the_bound_leaves_the_connection_usable(
            read in 0usize..(2 << 20),
            sizes in proptest::collection::vec((1usize..(3 << 20), proptest::bool::ANY), 1..4),
        ) {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            let addr = rt.block_on(server(read));
            let mut s = TcpStream::connect(addr).unwrap();
            for (n, chunked) in sizes {
                refuse_then_take(&mut s, n, chunked);
            }
        }
    }

    /// A body of `left` bytes in chunks of 64 KiB, failing after them when `fails`.
    struct Chunks {
        left: usize,
        fails: bool,
    }

    impl http_body::Body for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            let this = self.get_mut();
            if this.left == 0 {
                let fails = std::mem::take(&mut this.fails);
                return Poll::Ready(fails.then(|| Err(std::io::Error::other("the peer went away"))));
            }
            let n = this.left.min(64 << 10);
            this.left -= n;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'a'; n])))))
        }
    }

    fn body_of(left: usize, fails: bool) -> Body {
        Body::new(Chunks { left, fails })
    }

    #[tokio::test]
    async fn a_rest_is_read_up_to_its_bound_and_no_further() {
        let cap = usize::try_from(DRAIN_BYTES).unwrap();
        assert!(drain(body_of(0, false)).await);
        assert!(drain(body_of(cap, false)).await, "a rest of exactly the bound is read");
        assert!(!drain(body_of(cap + 1, false)).await, "one byte past the bound is not");
        assert!(!drain(body_of(10, true)).await, "a body that fails is not read to its end");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rest_that_stops_coming_is_answered_with_connection_close() {
        let addr = server(16).await;
        tokio::task::spawn_blocking(move || {
            // A body that stops coming: answered after DRAIN_TIME with the connection closed,
            // and the close is clean (everything sent was read).
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"POST /refuse HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n0123456789abcdefXYZ").unwrap();
            let (status, head, _) = answer(&mut s).unwrap();
            assert_eq!(status, 413);
            assert!(head.contains("connection: close"), "{head}");
            let mut rest = Vec::new();
            assert_eq!(s.read_to_end(&mut rest).unwrap(), 0, "the connection ends after the answer");

            // A client waiting for `100 Continue` is not asked for a body no handler reads.
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"POST /nothing HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\nexpect: 100-continue\r\n\r\n").unwrap();
            let (status, head, _) = answer(&mut s).unwrap();
            assert_eq!(status, 404);
            assert!(head.contains("connection: close"), "{head}");
        })
        .await
        .unwrap();
    }
}
