//! TURN over TLS (`turns:`, `tls-listening-port` with `cert`/`pkey`) on rustls, which webrtc-rs
//! already brings (ring provider, TLS 1.3). Instead of a tokio adapter crate, a small pump task
//! owns the TCP socket and the rustls connection and hands plaintext to the ordinary stream
//! server through an in-memory duplex pipe: TLS costs one extra copy, and the framing code is
//! the same for TCP and TLS.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;

use super::framing::{Frame, next_frame};

/// Plaintext bytes buffered between the TLS pump and the stream server.
const PIPE_BYTES: usize = 256 * 1024;

pub fn server_config(cert: &Path, pkey: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading cert {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing cert {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(pkey).with_context(|| format!("reading pkey {}", pkey.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TURN TLS certificate and key")?;
    Ok(Arc::new(config))
}

/// Starts the TLS handshake and pump for `tcp`; returns the plaintext side.
pub fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> anyhow::Result<DuplexStream> {
    let conn = rustls::ServerConnection::new(config)?;
    let (inner, outer) = tokio::io::duplex(PIPE_BYTES);
    tokio::spawn(pump(tcp, conn, inner));
    Ok(outer)
}

async fn pump(mut tcp: TcpStream, mut tls: rustls::ServerConnection, mut plain: DuplexStream) {
    let mut net = vec![0u8; 16 * 1024];
    let mut app = vec![0u8; 16 * 1024];
    let mut out = Vec::with_capacity(16 * 1024);
    let mut pending: Vec<u8> = Vec::new();
    loop {
        // Flush whatever TLS wants to send (handshake, records).
        while tls.wants_write() {
            out.clear();
            if tls.write_tls(&mut out).is_err() || tcp.write_all(&out).await.is_err() {
                return;
            }
        }
        tokio::select! {
            r = tcp.read(&mut net) => {
                let n = match r { Ok(0) | Err(_) => return, Ok(n) => n };
                let mut slice = &net[..n];
                while !slice.is_empty() {
                    if tls.read_tls(&mut slice).is_err() || tls.process_new_packets().is_err() {
                        // Send the alert, then give up on this connection.
                        out.clear();
                        let _ = tls.write_tls(&mut out);
                        let _ = tcp.write_all(&out).await;
                        return;
                    }
                }
                loop {
                    match tls.reader().read(&mut app) {
                        Ok(0) => return, // close_notify
                        Ok(n) => {
                            if plain.write_all(&app[..n]).await.is_err() {
                                return;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(_) => return,
                    }
                }
            }
            r = plain.read(&mut app), if !tls.is_handshaking() => {
                let n = match r { Ok(0) | Err(_) => return, Ok(n) => n };
                // One TLS record per TURN message: some clients (coturn's uclient) read one
                // message per record.
                pending.extend_from_slice(&app[..n]);
                let mut used = 0;
                while let Frame::Complete { consumed, .. } = next_frame(&pending[used..]) {
                    if tls.writer().write_all(&pending[used..used + consumed]).is_err() {
                        return;
                    }
                    used += consumed;
                }
                pending.drain(..used);
            }
        }
    }
}
