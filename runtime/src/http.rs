//! The HTTP/1.1 accept loop of both binaries (hyper 1 over tokio), with one set of timeouts and
//! one graceful drain.
//!
//! The timeouts, chosen once for both binaries (they used to differ: header timeouts of 30 s
//! and 10 s, accept back-offs of 100 ms and 50 ms):
//! - [`REQUEST_DEADLINE`] (10 s): the request headers must arrive within it. It also closes
//!   keep-alive connections idle that long (hyper arms the header timer while a connection waits
//!   for its next request). 10 s is far beyond any honest client on a pod network (the
//!   apiserver's webhook timeout is at most 30 s and usually 10 s, Prometheus scrapes every
//!   15-60 s and reconnects at once) and short enough that a slowloris client cannot pile up
//!   connections. The operator also uses it as its per-request body deadline.
//! - [`ACCEPT_BACKOFF`] (100 ms): after a failed `accept` (out of file descriptors and the
//!   like) the loop waits this long instead of spinning on the error; shorter gains nothing
//!   while the process is out of descriptors.
//! - the drain: after the stop signal the listener closes at once and open connections get a
//!   drain period to finish their requests (each binary passes its own: the sidecar's
//!   `--drain-seconds`, the operator's [`DRAIN_TIMEOUT`]); whatever is still open then is
//!   dropped, so a stuck client never delays the exit.
//!
//! What each connection does (TLS, caps, counters) is the caller's: [`serve`] hands every
//! accepted connection to a closure, which starts [`serve_connection`] on it or refuses it.

use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
pub use hyper_util::server::graceful::Watcher;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// The request headers must arrive within this time (see the module docs).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// The pause after a failed `accept` (see the module docs).
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The drain period for callers without a setting of their own: well within Kubernetes'
/// default 30 s termination grace period.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections on `listener` until `shutdown` resolves, then closes the listener and
/// lets open connections finish for up to `drain`.
///
/// `on_accept` gets each connection with its peer and a drain [`Watcher`] and returns the task
/// that serves it (normally ending in [`serve_connection`] with that watcher), or `None` to
/// close the connection unread. `name` labels the log lines.
pub async fn serve<A, F>(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    name: &'static str,
    mut on_accept: A,
) where
    A: FnMut(TcpStream, SocketAddr, Watcher) -> Option<F>,
    F: Future<Output = ()> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small request/response exchanges: Nagle's algorithm would add delay to each.
        let _ = tcp.set_nodelay(true);
        if let Some(task) = on_accept(tcp, peer, graceful.watcher()) {
            tokio::spawn(task);
        }
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            ?drain,
            "connections still open after the drain period; closing them"
        );
    }
}

/// Serves HTTP/1.1 on one connection with `handler`, under the [`REQUEST_DEADLINE`] header
/// timeout, until the client closes it or the drain (through `watcher`) ends it.
pub async fn serve_connection<I, H, F, B>(io: I, watcher: Watcher, handler: H)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let service = service_fn(move |request| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(handler(request).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(REQUEST_DEADLINE)
        .serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::{Notify, oneshot};

    /// A server on a loopback port whose handler answers "ok" once `release` is notified (or at
    /// once when `release` is `None`). Returns its address, the stop sender and its task.
    async fn start(
        release: Option<Arc<Notify>>,
        accepted: Arc<AtomicUsize>,
    ) -> (
        SocketAddr,
        oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
        Arc<Notify>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let started = Arc::new(Notify::new());
        let handler = {
            let started = started.clone();
            move |_request: Request<Incoming>| {
                let release = release.clone();
                let started = started.clone();
                async move {
                    started.notify_one();
                    if let Some(release) = release {
                        release.notified().await;
                    }
                    Response::new(Full::new(Bytes::from_static(b"ok")))
                }
            }
        };
        let task = tokio::spawn(serve(
            listener,
            async move {
                let _ = stop_rx.await;
            },
            Duration::from_secs(30),
            "test",
            move |tcp, _peer, watcher| {
                accepted.fetch_add(1, Ordering::SeqCst);
                Some(serve_connection(tcp, watcher, handler.clone()))
            },
        ));
        (addr, stop_tx, task, started)
    }

    async fn send_get(addr: SocketAddr) -> tokio::net::TcpStream {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .expect("write");
        stream
    }

    async fn read_all(mut stream: tokio::net::TcpStream) -> String {
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn answers_requests_over_a_real_socket() {
        let accepted = Arc::new(AtomicUsize::new(0));
        let (addr, stop, task, _) = start(None, accepted.clone()).await;
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let answer = read_all(stream).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.ends_with("ok"), "{answer}");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        let _ = stop.send(());
        task.await.expect("server task");
    }

    /// After the stop signal the request in flight still gets its answer (the drain), and the
    /// listener no longer accepts connections.
    #[tokio::test]
    async fn stop_drains_the_request_in_flight_and_closes_the_listener() {
        let release = Arc::new(Notify::new());
        let accepted = Arc::new(AtomicUsize::new(0));
        let (addr, stop, task, started) = start(Some(release.clone()), accepted).await;
        let stream = send_get(addr).await;
        started.notified().await;
        let _ = stop.send(());
        // The listener closes before the drain begins: once it is gone, connecting fails.
        loop {
            match tokio::net::TcpStream::connect(addr).await {
                Err(_) => break,
                Ok(_) => tokio::task::yield_now().await,
            }
        }
        assert!(
            !task.is_finished(),
            "the drain waits for the request in flight"
        );
        release.notify_one();
        let answer = read_all(stream).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        task.await
            .expect("server task ends once the connection is drained");
    }

    /// A connection the caller refuses (`None`) is closed unread.
    #[tokio::test]
    async fn a_refused_connection_is_closed_unread() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            listener,
            async move {
                let _ = stop_rx.await;
            },
            DRAIN_TIMEOUT,
            "test",
            |_tcp, _peer, _watcher| None::<std::future::Ready<()>>,
        ));
        let answer = read_all(send_get(addr).await).await;
        assert_eq!(answer, "");
        let _ = stop_tx.send(());
        task.await.expect("server task");
    }
}
