//! The HTTP listener: `axum::serve`'s accept loop plus what a listener on the open internet
//! needs and `axum::serve` does not set: a header read timeout (a client that opens a
//! connection and dribbles its request headers, or sends none, is dropped after
//! `header_read_timeout`, so a slowloris cannot hold the server's connections), each request
//! tagged with the peer address (for the per-IP limits), a cap on open connections (beyond it
//! a new one gets a JSON 503 and is closed, so descriptors stay for media sockets), bounded
//! request headers, and accept errors (EMFILE) survived.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tracing::{debug, warn};
use voxrelay_signaling::limits::Connections;

/// hyper's own header limits, above the JSON 431 the API answers (`edge_errors`): only a
/// request beyond these gets hyper's bodiless 431.
const PARSER_MAX_HEADERS: usize = 128;
const PARSER_MAX_BUF: usize = 64 * 1024;

/// Tells a connection over the cap why it is closed. The request is read first (a client that
/// gets an answer before it has sent its request takes it for a protocol error), and read to
/// its end after (closing with unread input resets the connection and loses the answer).
async fn refuse(tcp: &mut tokio::net::TcpStream) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let head = async {
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 16 * 1024 {
            let n = tcp.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        std::io::Result::Ok(())
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), head).await;
    tcp.write_all(&over_capacity()).await?;
    tcp.shutdown().await?;
    while tcp.read(&mut buf).await? > 0 {}
    Ok(())
}

/// What a connection over the cap is told before it is closed.
fn over_capacity() -> Vec<u8> {
    let body = voxrelay_signaling::ApiError::overloaded("too many open connections, retry shortly").body().to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `app` on `listener` until `stop` is notified; then stops accepting, lets requests in
/// flight finish (upgraded WebSockets are the calls' business) and returns.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    header_read_timeout: Duration,
    connections: Arc<Connections>,
    stop: Arc<Notify>,
) {
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
        let Some(slot) = connections.open(peer.ip()) else {
            tokio::spawn(async move {
                let mut tcp = tcp;
                let _ = tokio::time::timeout(Duration::from_secs(1), refuse(&mut tcp)).await;
                debug!(%peer, "connection refused: at the connection cap");
            });
            continue;
        };
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
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .max_headers(PARSER_MAX_HEADERS)
                .max_buf_size(PARSER_MAX_BUF);
            let conn = builder.serve_connection(TokioIo::new(tcp), service).with_upgrades();
            tokio::pin!(conn);
            let done = tokio::select! {
                done = conn.as_mut() => done,
                _ = async { drop(closing.wait_for(|c| *c).await) } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            drop(slot);
            if let Err(e) = done {
                debug!(%peer, "connection ended: {e}");
            }
        });
    }
    let _ = closing_tx.send(true);
    // Connections close as their requests finish; the caller does not wait for idle ones.
    drop(closing_tx);
}
