//! Serving lanes: every accepted connection is served, whole, by one of a few runtimes of one
//! worker thread each (one lane per core), so that a call runs on one thread from its request
//! to its answer.
//!
//! On one shared multi-threaded runtime a call's tasks wake each other across its workers: the
//! connection's task wakes the upstream client's connection task, whose answer wakes the
//! connection's task again, and each wake while a worker is busy also wakes a parked worker,
//! which may steal the task. A call then waits for a thread wake-up on the other core at each
//! such step (tens of µs on a small virtual machine). Within one lane there is no other worker
//! to wake or to steal: the tasks a call wakes run next, on the same thread. Connections spread
//! over the lanes, so several cores still serve many agents at once.
//!
//! A lane is a multi-threaded Tokio runtime with one worker, not a current-thread one: with
//! `block_in_place` (the store's writer waiting for an fsync, `query_db` on SQLite) the lane's
//! other connections move to another thread while the disk is waited for.
//!
//! The listeners stay on the caller's runtime. Its accept loop hands each connection, as a std
//! socket, to the lanes in turn, where it is registered with the lane's own reactor.
//!
//! Each lane counts the requests in flight on it ([`Counted`], `airlock_core::lane`): a task
//! about to block the lane's worker for the disk skips `block_in_place`, and the thread wake-up
//! it costs, when its own request is the only one there.

use airlock_core::lane;
use futures::future::BoxFuture;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::task::{Context, Poll};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};

/// A kind of listener whose connections can be handed to a lane.
pub trait Handoff: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + Sized + 'static {
    /// The listener it is accepted from.
    type Listener: Send + Sync + 'static;
    /// The connection between runtimes (registered with no reactor).
    type Std: Send + 'static;
    /// The peer's address.
    type Addr: Clone + Send + Sync + 'static;
    /// Accepts the next connection.
    fn accept(l: &Self::Listener) -> impl Future<Output = io::Result<(Self, Self::Addr)>> + Send;
    /// The listener's own address.
    fn local(l: &Self::Listener) -> io::Result<Self::Addr>;
    /// Leaves the reactor it was accepted on.
    fn detach(self) -> io::Result<Self::Std>;
    /// Joins the reactor of the runtime this runs on.
    fn attach(s: Self::Std) -> io::Result<Self>;
}

impl Handoff for TcpStream {
    type Listener = TcpListener;
    type Std = std::net::TcpStream;
    type Addr = std::net::SocketAddr;
    fn accept(l: &TcpListener) -> impl Future<Output = io::Result<(TcpStream, std::net::SocketAddr)>> + Send {
        l.accept()
    }
    fn local(l: &TcpListener) -> io::Result<std::net::SocketAddr> {
        l.local_addr()
    }
    fn detach(self) -> io::Result<std::net::TcpStream> {
        self.into_std()
    }
    fn attach(s: std::net::TcpStream) -> io::Result<TcpStream> {
        TcpStream::from_std(s)
    }
}

impl Handoff for UnixStream {
    type Listener = UnixListener;
    type Std = std::os::unix::net::UnixStream;
    type Addr = tokio::net::unix::SocketAddr;
    fn accept(l: &UnixListener) -> impl Future<Output = io::Result<(UnixStream, tokio::net::unix::SocketAddr)>> + Send {
        l.accept()
    }
    fn local(l: &UnixListener) -> io::Result<tokio::net::unix::SocketAddr> {
        l.local_addr()
    }
    fn detach(self) -> io::Result<std::os::unix::net::UnixStream> {
        self.into_std()
    }
    fn attach(s: std::os::unix::net::UnixStream) -> io::Result<UnixStream> {
        UnixStream::from_std(s)
    }
}

/// What one lane serves: the connections the accept loop handed to it (an `axum` listener).
pub struct Lane<S: Handoff> {
    rx: mpsc::UnboundedReceiver<(S::Std, S::Addr)>,
    local: S::Addr,
}

impl<S: Handoff> axum::serve::Listener for Lane<S> {
    type Io = S;
    type Addr = S::Addr;

    async fn accept(&mut self) -> (S, S::Addr) {
        loop {
            // The accept loop has ended (shutdown): nothing more comes; the graceful shutdown
            // ends this lane's serving.
            let Some((std, addr)) = self.rx.recv().await else { return std::future::pending().await };
            match S::attach(std) {
                Ok(io) => return (io, addr),
                Err(e) => tracing::warn!(error = %e, "a connection could not join its lane; closed"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<S::Addr> {
        Ok(self.local.clone())
    }
}

/// The lanes' runtimes; shut down (without waiting for their leftover tasks) when dropped.
pub(crate) struct Lanes {
    runtimes: Vec<tokio::runtime::Runtime>,
}

impl Lanes {
    /// One lane per core the process may use.
    pub(crate) fn start() -> io::Result<Lanes> {
        Lanes::with(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// `n` lanes (at least one). Every thread of a lane's runtime (its worker, and the blocking
    /// threads that take the worker's place during `block_in_place`) joins the lane's count.
    pub(crate) fn with(n: usize) -> io::Result<Lanes> {
        let runtimes = (0..n.max(1))
            .map(|i| {
                let count = lane::Lane::new();
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name(format!("airlock-lane-{i}"))
                    .on_thread_start(move || count.join())
                    .enable_all()
                    .build()
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Lanes { runtimes })
    }

    /// Accepts from `listener` until `stop` turns true, handing the connections to the lanes in
    /// turn; each lane serves its own with what `serve` makes of its [`Lane`] (which must stop
    /// accepting on `stop` too and then drain). Returns once every lane has drained.
    pub(crate) async fn serve<S, F>(&self, listener: S::Listener, serve: impl Fn(Lane<S>) -> F, mut stop: watch::Receiver<bool>) -> io::Result<()>
    where
        S: Handoff,
        F: Future<Output = io::Result<()>> + Send + 'static,
    {
        let local = S::local(&listener)?;
        let (lanes, served): (Vec<_>, Vec<_>) = self
            .runtimes
            .iter()
            .map(|rt| {
                let (tx, rx) = mpsc::unbounded_channel();
                (tx, rt.spawn(serve(Lane { rx, local: local.clone() })))
            })
            .unzip();
        let mut next = 0usize;
        loop {
            tokio::select! {
                // (The borrow `wait_for` answers with is not kept: it may not cross an await.)
                () = async { drop(stop.wait_for(|s| *s).await) } => break,
                accepted = S::accept(&listener) => match accepted {
                    Ok((io, addr)) => match io.detach() {
                        Ok(std) => {
                            // A lane whose serving ended has dropped its receiver: the
                            // connection is closed.
                            let _ = lanes[next % lanes.len()].send((std, addr));
                            next = next.wrapping_add(1);
                        }
                        Err(e) => tracing::warn!(error = %e, "a connection could not leave the accept loop's reactor; closed"),
                    },
                    Err(e) => accept_failed(e).await,
                },
            }
        }
        drop(listener);
        drop(lanes);
        let mut r = Ok(());
        for h in served {
            r = r.and(h.await.unwrap_or_else(|e| Err(io::Error::other(e))));
        }
        r
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        // Dropping a runtime waits for its blocking threads, which an async caller must not.
        for rt in self.runtimes.drain(..) {
            rt.shutdown_background();
        }
    }
}

/// An app (a listener's whole router) whose requests are counted in flight on the lane that
/// serves them, from the call of the service until its answer is ready or dropped.
#[derive(Clone)]
pub struct Counted<S>(pub S);

impl<S> tower::Service<axum::extract::Request> for Counted<S>
where
    S: tower::Service<axum::extract::Request, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<S::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: axum::extract::Request) -> Self::Future {
        let in_flight = lane::request();
        let answer = self.0.call(req);
        Box::pin(async move {
            let answered = answer.await;
            drop(in_flight);
            answered
        })
    }
}

/// After a failed accept: a connection the peer gave up on is nothing; anything else (out of
/// descriptors above all) is logged and the loop waits a moment, as `axum::serve` does.
async fn accept_failed(e: io::Error) {
    if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use axum::Router;
    use std::future::IntoFuture;
    use std::time::Duration;

    /// The name of the thread that answers.
    async fn who() -> String {
        std::thread::current().name().unwrap_or("?").to_owned()
    }

    async fn stopped(mut rx: watch::Receiver<bool>) {
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Two lanes serving `/who` and `/slow` (300 ms, notifying `slow_started` first) on
    /// 127.0.0.1:0: the address, the stop switch, and the task that serves until stopped and
    /// drained.
    async fn served(slow_started: std::sync::Arc<tokio::sync::Notify>) -> (std::net::SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<io::Result<()>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = watch::channel(false);
        let app = Router::new().route("/who", get(who)).route(
            "/slow",
            get(move || async move {
                slow_started.notify_one();
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }),
        );
        let task = tokio::spawn(async move {
            let lanes = Lanes::with(2)?;
            let stop = stop_rx.clone();
            lanes
                .serve::<TcpStream, _>(listener, move |lane| axum::serve(lane, app.clone()).with_graceful_shutdown(stopped(stop.clone())).into_future(), stop_rx)
                .await
        });
        (addr, stop_tx, task)
    }

    /// `GET /who` on `conn` (HTTP/1.1, kept alive): the body of the answer.
    async fn ask_who(conn: &mut TcpStream) -> String {
        ask(conn, "/who").await
    }

    /// `GET path` on `conn` (HTTP/1.1, kept alive): the body of the answer.
    async fn ask(conn: &mut TcpStream, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: lanes\r\n\r\n").as_bytes()).await.unwrap();
        let mut got = Vec::new();
        loop {
            let mut chunk = [0u8; 1024];
            let n = conn.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the connection was closed");
            got.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            let Some(head_end) = text.find("\r\n\r\n") else { continue };
            let length: usize = text[..head_end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .expect("a content-length");
            let body = head_end + 4;
            if got.len() >= body + length {
                return String::from_utf8(got[body..body + length].to_vec()).unwrap();
            }
        }
    }

    /// Every request of one connection is answered on one lane's thread, and connections are
    /// handed to the lanes in turn.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_stays_on_one_lane_and_connections_take_turns() {
        let (addr, stop, task) = served(Default::default()).await;
        let mut lanes = Vec::new();
        for _ in 0..4 {
            // One TCP connection, kept alive between its requests (a pooling client may open
            // another while the first is still being given back).
            let mut conn = TcpStream::connect(addr).await.unwrap();
            let mut names = Vec::new();
            for _ in 0..5 {
                names.push(ask_who(&mut conn).await);
            }
            assert!(names[0].starts_with("airlock-lane-"), "served on {names:?}");
            assert!(names.iter().all(|n| *n == names[0]), "one connection, several threads: {names:?}");
            lanes.push(names[0].clone());
        }
        assert_eq!(lanes, ["airlock-lane-0", "airlock-lane-1", "airlock-lane-0", "airlock-lane-1"]);
        stop.send(true).unwrap();
        task.await.unwrap().unwrap();
    }

    /// What `/count` answers: the requests in flight on the lane that serves it, and whether
    /// it is alone there.
    async fn count() -> String {
        format!("{} {}", lane::current().map_or(0, |l| l.in_flight()), lane::alone())
    }

    /// Each lane counts the requests in flight on it, and only those: a request held on one
    /// lane leaves a request on the other alone and makes one on its own lane company; once
    /// answered it is no longer counted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_lane_counts_its_own_requests_in_flight() {
        let held = std::sync::Arc::new(tokio::sync::Notify::new());
        let release = std::sync::Arc::new(tokio::sync::Notify::new());
        let app = {
            let (held, release) = (held.clone(), release.clone());
            Counted(Router::new().route("/count", get(count)).route(
                "/hold",
                get(move || async move {
                    held.notify_one();
                    release.notified().await;
                    count().await
                }),
            ))
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let lanes = Lanes::with(2)?;
            let stop = stop_rx.clone();
            lanes
                .serve::<TcpStream, _>(listener, move |lane| axum::serve(lane, axum::ServiceExt::<axum::extract::Request>::into_make_service(app.clone())).with_graceful_shutdown(stopped(stop.clone())).into_future(), stop_rx)
                .await
        });
        // Connections take turns: 0, 1, 0, 1 (a_connection_stays_on_one_lane_and_connections_take_turns).
        let mut first = TcpStream::connect(addr).await.unwrap();
        assert_eq!(ask(&mut first, "/count").await, "1 true");
        let holder = tokio::spawn(async move { ask(&mut first, "/hold").await });
        held.notified().await;
        let mut other_lane = TcpStream::connect(addr).await.unwrap();
        assert_eq!(ask(&mut other_lane, "/count").await, "1 true", "a request held on the other lane counted here");
        let mut same_lane = TcpStream::connect(addr).await.unwrap();
        assert_eq!(ask(&mut same_lane, "/count").await, "2 false", "the held request not counted on its lane");
        release.notify_one();
        // By then the request on its lane has been answered.
        assert_eq!(holder.await.unwrap(), "1 true");
        assert_eq!(ask(&mut same_lane, "/count").await, "1 true", "an answered request still counted");
        assert_eq!(ask(&mut other_lane, "/count").await, "1 true");
        stop_tx.send(true).unwrap();
        task.await.unwrap().unwrap();
    }

    /// On stop, a request in flight is still answered, and then nothing is accepted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stopping_drains_the_requests_in_flight_and_accepts_no_more() {
        let slow_started = std::sync::Arc::new(tokio::sync::Notify::new());
        let (addr, stop, task) = served(slow_started.clone()).await;
        let slow = tokio::spawn(async move { reqwest::get(format!("http://{addr}/slow")).await?.text().await });
        // The request is being handled when the stop comes.
        slow_started.notified().await;
        stop.send(true).unwrap();
        assert_eq!(slow.await.unwrap().unwrap(), "done");
        task.await.unwrap().unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "still accepting after the stop");
    }
}
