//! The loop behind every WebSocket that relays to a live call (event watchers, carrier media
//! streams): text from the call goes out as it comes, what the peer sends is mapped by the
//! endpoint and handed to the call, and whichever side ends first ends both.

use axum::extract::ws::{Message, WebSocket};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// Relays until the call drops `outbound`'s sender (then the socket gets a Close), the peer
/// goes away, or the call stops listening. `map` turns a peer message into what the call takes;
/// `None` skips it (control frames). `what` names the socket in logs.
pub(crate) async fn pump<T>(
    mut socket: WebSocket,
    mut outbound: UnboundedReceiver<String>,
    inbound: UnboundedSender<T>,
    map: fn(Message) -> Option<T>,
    what: &'static str,
) {
    loop {
        tokio::select! {
            out = outbound.recv() => match out {
                Some(text) => {
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                // The call ended (or refused the stream).
                None => {
                    let _ = socket.send(Message::Close(None)).await;
                    break;
                }
            },
            msg = socket.recv() => match msg {
                Some(Ok(msg)) => {
                    if let Some(item) = map(msg)
                        && inbound.send(item).is_err()
                    {
                        break;
                    }
                }
                Some(Err(e)) => {
                    tracing::info!("{what} socket error: {e}");
                    break;
                }
                None => break,
            },
        }
    }
}
