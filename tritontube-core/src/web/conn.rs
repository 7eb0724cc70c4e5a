//! The accept loop: warp's filter served through hyper directly (warp 0.4's
//! own server has no timeouts and no connection cap), with
//!
//! - a header deadline: a connection must send a request's headers within
//!   [`ServeLimits::header_timeout`] of being accepted (first request), or of
//!   its first byte (later requests);
//! - an idle deadline: a keep-alive connection may wait
//!   [`ServeLimits::idle_timeout`] between requests without sending a byte;
//! - a cap of [`ServeLimits::max_connections`]: at the cap, the connection
//!   that has gone longest without a request in progress is closed to make
//!   room for the new one, so half-sent headers and idle keep-alives give way
//!   to new clients at once instead of every newcomer waiting out a timeout;
//!   only when every connection has a request in progress is the newcomer
//!   refused (503, closed).
//!
//! hyper's own `header_read_timeout` is not used: it also runs while a
//! keep-alive connection waits for its next request, so it would close idle
//! connections at the header timeout and make the idle timeout meaningless.
//! Instead each connection's reads and requests are watched here: bytes read
//! while no request is in progress start a header deadline; a request starts
//! when hyper hands it to the service, and ends when its response body has
//! been sent (or dropped). A connection with a request in progress has no
//! deadline (slow uploads are bounded by the upload caps instead).
//!
//! HTTP/2 with prior knowledge is still served, under the same rules per
//! connection: bytes with no stream open start the header deadline, so an
//! HTTP/2 client that only pings between requests is closed at the header
//! timeout rather than the idle one.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::{Service, service_fn};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::limits::ServeLimits;

/// The client's address, put in every request's extensions (warp's own
/// `warp::addr::remote` is only filled in by warp's server).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub(crate) SocketAddr);

/// Answer to a connection beyond the cap when none can be closed for it.
const FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
content-type: text/plain; charset=utf-8\r\ncontent-length: 62\r\nconnection: close\r\n\r\n\
the server has all the connections it takes; try again shortly";

/// What a connection is doing, for its deadlines.
#[derive(Debug)]
struct Activity {
    accepted: Instant,
    /// Requests handed to the service whose responses are not yet sent.
    in_flight: usize,
    /// When the last request ended (or the connection was accepted).
    quiet_since: Instant,
    /// First byte read since `quiet_since`, for a later request's headers.
    head_started: Option<Instant>,
    /// At least one request answered: the idle timeout applies from now on.
    answered: bool,
    /// Closed to make room for a newer connection.
    evicted: bool,
}

/// Why a connection was closed by the server.
#[derive(Debug, Clone, Copy)]
enum Closed {
    HeaderTimeout,
    IdleTimeout,
    Evicted,
}

impl Activity {
    /// When, and why, the connection is to be closed if nothing changes;
    /// `None` while a request is in progress.
    fn deadline(&self, limits: &ServeLimits) -> Option<(Instant, Closed)> {
        if self.evicted {
            return Some((self.accepted, Closed::Evicted));
        }
        if self.in_flight > 0 {
            return None;
        }
        Some(match (self.answered, self.head_started) {
            (false, _) => (self.accepted + limits.header_timeout, Closed::HeaderTimeout),
            (true, Some(t)) => (t + limits.header_timeout, Closed::HeaderTimeout),
            (true, None) => (self.quiet_since + limits.idle_timeout, Closed::IdleTimeout),
        })
    }
}

/// One live connection, shared by its reader, its service and its watchdog.
#[derive(Debug)]
struct Conn {
    id: u64,
    activity: Mutex<Activity>,
    /// Woken whenever `activity` changes in a way that moves the deadline.
    changed: Notify,
}

impl Conn {
    fn new(id: u64) -> Self {
        let now = Instant::now();
        Conn {
            id,
            activity: Mutex::new(Activity {
                accepted: now,
                in_flight: 0,
                quiet_since: now,
                head_started: None,
                answered: false,
                evicted: false,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Activity> {
        self.activity.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes arrived: with no request in progress, they begin the next
    /// request's headers, and the header deadline starts. (Bytes of a
    /// pipelined request read while the previous one was in progress are not
    /// seen here; if they are only part of its headers, the idle deadline
    /// applies to them instead, still bounded.)
    fn bytes_read(&self) {
        let mut a = self.lock();
        if a.in_flight == 0 && a.head_started.is_none() {
            a.head_started = Some(Instant::now());
            drop(a);
            self.changed.notify_one();
        }
    }
}

/// Holds a request "in progress" until dropped with its response body.
struct InFlight(Arc<Conn>);

impl InFlight {
    fn start(conn: Arc<Conn>) -> Self {
        {
            let mut a = conn.lock();
            a.in_flight += 1;
            a.head_started = None;
        }
        conn.changed.notify_one();
        InFlight(conn)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        {
            let mut a = self.0.lock();
            a.in_flight -= 1;
            if a.in_flight == 0 {
                a.quiet_since = Instant::now();
                a.answered = true;
            }
        }
        self.0.changed.notify_one();
    }
}

/// A response body that keeps its request in progress until it is sent.
struct TrackedBody<B> {
    body: B,
    _in_flight: InFlight,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The socket, telling its connection when bytes arrive.
struct Watched {
    io: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.bytes_read();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The live connections, for the cap.
#[derive(Debug)]
struct Registry {
    max: usize,
    next_id: AtomicU64,
    live: Mutex<std::collections::HashMap<u64, Arc<Conn>>>,
}

impl Registry {
    fn new(max: usize) -> Self {
        Registry {
            max: max.max(1),
            next_id: AtomicU64::new(0),
            live: Mutex::default(),
        }
    }

    /// Registers a new connection, closing the longest-quiet one (no request
    /// in progress) if at the cap; `None` if at the cap and every connection
    /// is busy.
    fn admit(&self) -> Option<Arc<Conn>> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if live.len() >= self.max {
            let victim = live
                .values()
                .filter_map(|c| {
                    let a = c.lock();
                    (a.in_flight == 0).then_some((a.quiet_since, c.id))
                })
                .min()
                .map(|(_, id)| id)?;
            // Its headers may complete between this check and its watchdog
            // closing it; that request is then cut off like any whose
            // client disconnects, on the connection that was quiet longest.
            if let Some(c) = live.remove(&victim) {
                c.lock().evicted = true;
                c.changed.notify_one();
            }
        }
        let conn = Arc::new(Conn::new(self.next_id.fetch_add(1, Ordering::Relaxed)));
        live.insert(conn.id, conn.clone());
        Some(conn)
    }

    fn leave(&self, id: u64) {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

/// Serves `svc` (warp's filter as a hyper service) on `listener` until
/// `shutdown` resolves; then stops accepting and waits for the open
/// connections: requests in progress finish, idle ones close at once, and
/// half-sent headers close at their deadline.
pub(crate) async fn serve<S>(
    listener: TcpListener,
    svc: S,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    S: Service<
            Request<Incoming>,
            Response = warp::reply::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let registry = Arc::new(Registry::new(limits.max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(conn) = registry.admit() else {
            // Every connection has a request in progress: say so rather than
            // reset. A fresh socket's send buffer is empty, so this does not
            // block; if it fails the client just sees the close.
            tracing::debug!(client = %peer, "connection refused: at the cap, none idle");
            let _ = stream.try_write(FULL);
            continue;
        };
        let (svc, limits, registry) = (svc.clone(), limits.clone(), registry.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let id = conn.id;
            serve_one(stream, peer, conn, svc, &limits, watcher).await;
            registry.leave(id);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Accept failures: a connection reset before it was accepted is nothing;
/// anything else (out of file descriptors, say) is logged, and accepting
/// pauses briefly so the loop does not spin while it lasts.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}

/// Serves one connection until it ends or a deadline closes it.
async fn serve_one<S>(
    stream: TcpStream,
    peer: SocketAddr,
    conn: Arc<Conn>,
    inner: S,
    limits: &ServeLimits,
    watcher: Watcher,
) where
    S: Service<
            Request<Incoming>,
            Response = warp::reply::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let io = TokioIo::new(Watched {
        io: stream,
        conn: conn.clone(),
    });
    let tracked = conn.clone();
    let svc = service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ClientAddr(peer));
        let in_flight = InFlight::start(tracked.clone());
        let fut = inner.call(req);
        async move {
            let resp: Response<_> = fut.await?;
            Ok::<_, std::convert::Infallible>(resp.map(|body| TrackedBody {
                body,
                _in_flight: in_flight,
            }))
        }
    });
    // HTTP/1 and HTTP/2 with prior knowledge, as warp's own server.
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = watcher.watch(builder.serve_connection(io, svc));
    let mut connection = std::pin::pin!(connection);
    loop {
        let deadline = conn.lock().deadline(limits);
        let changed = conn.changed.notified();
        tokio::select! {
            r = &mut connection => {
                let half_sent = {
                    let a = conn.lock();
                    a.in_flight == 0 && a.head_started.is_some()
                };
                if half_sent {
                    // Nothing was started for it; say so, since the client
                    // will not.
                    tracing::info!(client = %peer, "the client closed its connection in the middle of a request's headers; nothing was done for it");
                } else if let Err(e) = r {
                    tracing::debug!(client = %peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = changed => {}
            () = sleep_until(deadline.map(|(t, _)| t)) => {
                // Dropping the connection closes the socket; nothing is in
                // progress on it (or it was chosen to make room).
                if let Some((t, why)) = conn.lock().deadline(limits)
                    && t <= Instant::now()
                {
                    tracing::debug!(client = %peer, reason = ?why, "connection closed");
                    return;
                }
            }
        }
    }
}

/// Sleeps until `t`, or forever.
async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
