//! Connection and upload limits, on a real server on loopback driven by raw
//! sockets: a slowloris at twice the connection cap, the header and idle
//! timeouts, the upload caps, and graceful shutdown with all of these about.
//! Timeouts are lowered to a second or so; every loop is bounded.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tritontube_core::ingest::{Ingest, IngestConfig};
use tritontube_core::metadata::{MetadataStore, SqliteMetadataStore};
use tritontube_core::store::{ContentStore, LocalContentStore};
use tritontube_core::web::{self, App, ServeLimits};

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start(limits: ServeLimits) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let meta: Arc<dyn MetadataStore> =
        Arc::new(SqliteMetadataStore::open(dir.path().join("m.db")).unwrap());
    let content: Arc<dyn ContentStore> =
        Arc::new(LocalContentStore::new(dir.path().join("content")).unwrap());
    let ingest = Ingest::start(meta.clone(), content.clone(), IngestConfig::default()).unwrap();
    let app = App {
        meta,
        content,
        ingest,
        metrics: Default::default(),
        assets: Default::default(),
        health: None,
        network: None,
        cache: Default::default(),
        uploads: Default::default(),
        tus: None,
        // The course project's open uploads: these tests upload anonymously.
        accounts: std::sync::Arc::new(tritontube_core::web::auth::Accounts::new(true)),
        admin_token: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let done = tokio::spawn(web::serve(listener, app, limits, async {
        let _ = rx.await;
    }));
    Server {
        addr,
        stop: Some(tx),
        done,
        _dir: dir,
    }
}

fn limits(header_ms: u64, idle_ms: u64, max_connections: usize) -> ServeLimits {
    ServeLimits {
        header_timeout: Duration::from_millis(header_ms),
        idle_timeout: Duration::from_millis(idle_ms),
        max_connections,
        ..ServeLimits::default()
    }
}

/// A connection from `from` (any loopback address: each is its own client).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    s.connect(to).await.unwrap()
}

/// One response: status, head (lower-cased) and body. Reads exactly one
/// response with a `content-length`, so the connection can be used again.
async fn read_response(s: &mut TcpStream) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let status = head[9..12].parse().unwrap();
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                return (status, head, body);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, s.read(&mut chunk))
            .await
            .expect("a response within 5 s")
            .unwrap();
        assert!(n > 0, "connection closed mid-response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `GET path` on a fresh connection: status and how long the answer took.
async fn get(addr: SocketAddr, path: &str) -> (u16, Duration) {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (status, _, _) = read_response(&mut s).await;
    (status, t.elapsed())
}

/// True if the server closes `s` within `wait` (reads nothing, or a reset);
/// false if it is still open then.
async fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let mut b = [0u8; 256];
    match tokio::time::timeout(wait, s.read(&mut b)).await {
        Err(_) => false,
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(n)) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&b[..n])),
    }
}

/// A connection that sends part of a request line and headers, then nothing.
async fn slow_client(addr: SocketAddr) -> (TcpStream, Instant) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        .await
        .unwrap();
    (s, Instant::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_at_twice_the_cap_leaves_requests_answered() {
    let cap = 8;
    let header = Duration::from_millis(1000);
    let srv = start(limits(1000, 30_000, cap)).await;
    let mut slow = Vec::new();
    for _ in 0..2 * cap {
        slow.push(slow_client(srv.addr).await);
    }
    // Every normal request is answered at once, though the cap is full of
    // half-sent headers (each newcomer takes the place of the oldest).
    let mut worst = Duration::ZERO;
    for path in ["/healthz", "/", "/healthz", "/"] {
        let (status, took) = get(srv.addr, path).await;
        assert_eq!(status, 200, "GET {path}");
        assert!(took < Duration::from_secs(1), "GET {path} took {took:?}");
        worst = worst.max(took);
    }
    eprintln!("slowloris of {}: slowest normal request {worst:?}", 2 * cap);
    // Those closed already made room for newer ones; those still open are
    // closed by the header timeout: not before it, and soon after it. (A
    // moment first, for the last closures to reach the sockets.)
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut open = Vec::new();
    for (mut s, opened) in slow {
        if !closed_within(&mut s, Duration::from_millis(1)).await {
            open.push((s, opened));
        }
    }
    let evicted = 2 * cap - open.len();
    let last = open.iter().map(|(_, t)| *t).max().unwrap();
    tokio::time::sleep_until((last + header - Duration::from_millis(150)).into()).await;
    for (s, _) in &mut open {
        assert!(
            !closed_within(s, Duration::from_millis(1)).await,
            "closed before the timeout"
        );
    }
    let mut timed_out = Vec::new();
    for (s, opened) in &mut open {
        let by = (*opened + header + Duration::from_millis(500))
            .saturating_duration_since(Instant::now());
        assert!(
            closed_within(s, by).await,
            "still open well after the header timeout"
        );
        timed_out.push(opened.elapsed());
    }
    eprintln!(
        "{evicted} slow connections closed to make room, {} by the header timeout after {:?}",
        timed_out.len(),
        timed_out.iter().max()
    );
    assert!(evicted >= cap, "the cap held: {evicted} closed for room");
    assert!(!timed_out.is_empty(), "some left to the header timeout");
    // After the attack, everything works.
    for path in ["/healthz", "/"] {
        assert_eq!(get(srv.addr, path).await.0, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_timeout_closes_half_sent_headers_but_not_slow_timely_ones() {
    let srv = start(limits(1000, 30_000, 64)).await;
    let (mut silent, _) = {
        let s = TcpStream::connect(srv.addr).await.unwrap();
        (s, Instant::now())
    };
    let (mut partial, opened) = slow_client(srv.addr).await;
    // Headers sent a few bytes at a time, complete within the timeout.
    let mut trickle = TcpStream::connect(srv.addr).await.unwrap();
    for piece in ["GET /hea", "lthz HTTP/1.1\r\n", "Host: t\r\n", "\r\n"] {
        trickle.write_all(piece.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(read_response(&mut trickle).await.0, 200);
    let left = (opened + Duration::from_millis(1000)).saturating_duration_since(Instant::now());
    assert!(
        !closed_within(
            &mut partial,
            left.saturating_sub(Duration::from_millis(150))
        )
        .await
    );
    assert!(closed_within(&mut partial, Duration::from_millis(1000)).await);
    // A connection that never sends a byte is closed by the same deadline.
    assert!(closed_within(&mut silent, Duration::from_millis(500)).await);
    eprintln!("half-sent headers closed after {:?}", opened.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    // The idle timeout is longer than the header timeout: waiting between
    // requests is not held to the header deadline.
    let srv = start(limits(500, 1500, 64)).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let req = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    s.write_all(req).await.unwrap();
    assert_eq!(read_response(&mut s).await.0, 200);
    tokio::time::sleep(Duration::from_millis(800)).await;
    s.write_all(req).await.unwrap();
    assert_eq!(read_response(&mut s).await.0, 200, "kept alive past 0.8 s");
    let idle = Instant::now();
    assert!(!closed_within(&mut s, Duration::from_millis(1300)).await);
    assert!(closed_within(&mut s, Duration::from_millis(1000)).await);
    eprintln!("idle connection closed after {:?}", idle.elapsed());
}

const BOUNDARY: &str = "tritontube-limits";

/// The end of an upload's form.
fn form_end() -> String {
    format!("\r\n--{BOUNDARY}--\r\n")
}

/// Starts an upload from `from` of a `file_len`-byte file, sends the form up
/// to the file's bytes, and waits for `100 Continue` (the upload was admitted
/// and its body is being read) or returns the refusal. (The client waits for
/// `100 Continue` before its body, so a refused one has sent nothing unread.)
async fn start_upload(
    from: &str,
    addr: SocketAddr,
    file_len: usize,
) -> Result<TcpStream, (u16, String, String)> {
    // Each upload its own video id, so none is refused as a duplicate.
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut s = connect_from(from, addr).await;
    let part = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"clip{n}.mp4\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    );
    let len = part.len() + file_len + form_end().len();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len}\r\nExpect: 100-continue\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (status, head, body) = read_response(&mut s).await;
    if status != 100 {
        return Err((status, head, body));
    }
    s.write_all(part.as_bytes()).await.unwrap();
    Ok(s)
}

/// The size of a file uploaded slowly enough to stay in progress.
const HELD: usize = 1_000_000;

/// Feeds `s` a few bytes at a time until dropped.
fn feed_slowly(mut s: TcpStream) -> JoinHandle<()> {
    tokio::spawn(async move {
        for _ in 0..100 {
            if s.write_all(&[0u8; 16]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_beyond_the_caps_are_refused_with_retry_after() {
    let srv = start(ServeLimits {
        max_uploads: 2,
        max_uploads_per_client: 1,
        ..limits(2000, 30_000, 64)
    })
    .await;
    let a = feed_slowly(start_upload("127.0.0.2", srv.addr, HELD).await.unwrap());
    let b = feed_slowly(start_upload("127.0.0.3", srv.addr, HELD).await.unwrap());
    // A third client: the server's cap.
    let (status, head, body) = start_upload("127.0.0.4", srv.addr, HELD).await.unwrap_err();
    assert_eq!(status, 503, "{head}\n{body}");
    assert!(head.contains("\r\nretry-after: 10"), "{head}");
    assert!(body.contains("2 uploads are in progress"), "{body}");
    // The first client again: its own cap.
    let (status, head, body) = start_upload("127.0.0.2", srv.addr, HELD).await.unwrap_err();
    assert_eq!(status, 429, "{head}\n{body}");
    assert!(head.contains("\r\nretry-after: 10"), "{head}");
    assert!(body.contains("from this address"), "{body}");
    // Other routes are unaffected.
    assert_eq!(get(srv.addr, "/healthz").await.0, 200);
    // The held uploads end (their clients go away); uploads are admitted
    // again once their handlers have let go.
    a.abort();
    b.abort();
    let deadline = Instant::now() + Duration::from_secs(3);
    let s = loop {
        match start_upload("127.0.0.2", srv.addr, HELD).await {
            Ok(s) => break s,
            Err((status, ..)) => assert!(
                matches!(status, 429 | 503) && Instant::now() < deadline,
                "admitted again within 3 s (got {status})"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Both slots: the other client is admitted too (its old upload may take
    // a moment longer to be let go).
    let deadline = Instant::now() + Duration::from_secs(3);
    while let Err((status, ..)) = start_upload("127.0.0.3", srv.addr, HELD).await {
        assert!(
            Instant::now() < deadline,
            "admitted again within 3 s (got {status})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_with_every_connection_busy_a_newcomer_gets_503() {
    let srv = start(limits(2000, 30_000, 2)).await;
    let a = feed_slowly(start_upload("127.0.0.2", srv.addr, HELD).await.unwrap());
    let b = feed_slowly(start_upload("127.0.0.3", srv.addr, HELD).await.unwrap());
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let (status, head, body) = read_response(&mut s).await;
    assert_eq!(status, 503, "{head}\n{body}");
    assert!(head.contains("\r\nretry-after: 1"), "{head}");
    assert!(body.contains("try again shortly"), "{body}");
    assert!(closed_within(&mut s, Duration::from_millis(500)).await);
    // A connection frees up: served again.
    a.abort();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let (status, ..) = read_response(&mut s).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "served again within 3 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_requests_and_closes_the_rest() {
    let mut srv = start(limits(1000, 30_000, 64)).await;
    let mut upload = start_upload("127.0.0.2", srv.addr, 1000).await.unwrap();
    let mut idle = TcpStream::connect(srv.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut idle).await.0, 200);
    let (mut slow, _) = slow_client(srv.addr).await;
    let stopped = Instant::now();
    srv.stop.take().unwrap().send(()).unwrap();
    // The idle connection closes at once; new connections are refused.
    assert!(closed_within(&mut idle, Duration::from_millis(500)).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        TcpStream::connect(srv.addr).await.is_err(),
        "still accepting"
    );
    // The upload in progress is finished and answered (its body is no video:
    // 400), though shutdown began while it was being sent.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut rest = vec![0u8; 1000];
    rest.extend_from_slice(form_end().as_bytes());
    upload.write_all(&rest).await.unwrap();
    let (status, _, body) = read_response(&mut upload).await;
    assert_eq!(status, 400, "{body}");
    // The half-sent headers close at their deadline at the latest, and the
    // server is done.
    assert!(closed_within(&mut slow, Duration::from_millis(1500)).await);
    tokio::time::timeout(Duration::from_secs(3), &mut srv.done)
        .await
        .expect("serve returned")
        .unwrap();
    eprintln!("shut down in {:?}", stopped.elapsed());
}
