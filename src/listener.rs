//! The HTTP listener: `axum::serve`'s accept loop plus what a listener on the open internet
//! needs and `axum::serve` does not set: a header read timeout (a client that opens a
//! connection and dribbles its request headers, or sends none, is dropped after
//! `header_read_timeout`, so a slowloris cannot hold the server's connections), each request
//! tagged with the peer address (for the per-IP limits), and accept errors (EMFILE) survived.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tracing::{debug, warn};

/// Serves `app` on `listener` until `stop` is notified; then stops accepting, lets requests in
/// flight finish (upgraded WebSockets are the calls' business) and returns.
pub async fn serve(listener: TcpListener, app: axum::Router, header_read_timeout: Duration, stop: Arc<Notify>) {
    let (closing_tx, closing_rx) = watch::channel(false);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.notified() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: keep serving.
                    warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let mut req = req.map(axum::body::Body::new);
            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            tower_service::Service::call(&mut app.clone(), req)
        });
        let mut closing = closing_rx.clone();
        tokio::spawn(async move {
            // HTTP/1.1 only (no protocol sniffing, which would wait for a first byte with no
            // timeout): the API, its upgrades and the page need nothing else.
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
            let conn = builder.serve_connection(TokioIo::new(tcp), service).with_upgrades();
            tokio::pin!(conn);
            let done = tokio::select! {
                done = conn.as_mut() => done,
                _ = async { drop(closing.wait_for(|c| *c).await) } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = done {
                debug!(%peer, "connection ended: {e}");
            }
        });
    }
    let _ = closing_tx.send(true);
    // Connections close as their requests finish; the caller does not wait for idle ones.
    drop(closing_tx);
}
