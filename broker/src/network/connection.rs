//! One client connection: a reader task parses frames while the handler loop answers them in
//! order (Kafka's per-connection ordering), so pipelined requests overlap I/O with work. The
//! stream is plain TCP or TLS; the `Session` carries the connection's authentication state.
//! When shutdown starts the loop takes no new request, gives the one in hand [`IN_FLIGHT_GRACE`]
//! to be answered, and closes.

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::session::Session;
use super::transport::{ResponseWriter, Transport};
use crate::protocol::chunked::Chunk;
use crate::protocol::dispatch::{self, Reply};
use crate::protocol::frame::{read_frame, FrameError};
use crate::state::Broker;

/// Requests read ahead of the one being handled.
const PIPELINE_DEPTH: usize = 16;

/// How long a request being handled when shutdown starts may take to be answered (a long-poll
/// fetch or an `acks=all` produce); well inside the broker's shutdown bound.
const IN_FLIGHT_GRACE: Duration = Duration::from_secs(3);

pub async fn serve<S: Transport>(broker: Arc<Broker>, stream: S, mut session: Session) {
    let connections = broker
        .metrics
        .connections
        .with_label_values(&[session.listener_name()]);
    connections.inc();
    let peer = session.peer;
    let (mut rd, mut wr) = stream.into_halves();
    let max = broker.config.socket_request_max_bytes;
    let (tx, mut rx) = mpsc::channel(PIPELINE_DEPTH);
    let reader_broker = broker.clone();
    let reader = tokio::spawn(async move {
        loop {
            match read_frame(&mut rd, max).await {
                Ok(frame) => {
                    if tx.send(frame).await.is_err() {
                        break;
                    }
                }
                Err(FrameError::Closed) => break,
                Err(e) => {
                    reader_broker.metrics.protocol_errors.inc();
                    tracing::warn!(%peer, error = %e, "closing connection");
                    break;
                }
            }
        }
    });
    let stop = broker.tasks.cancelled().clone();
    let grace = async {
        stop.cancelled().await;
        tokio::time::sleep(IN_FLIGHT_GRACE).await;
    };
    tokio::pin!(grace);
    loop {
        let frame = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            frame = rx.recv() => match frame {
                Some(frame) => frame,
                None => break,
            },
        };
        // `quota::track` times the request and says how long a throttled client stays muted.
        let handled = dispatch::handle(&broker, &mut session, frame);
        let (reply, mute) = tokio::select! {
            r = crate::quota::track(&broker.quotas, &broker.metadata, handled) => r,
            () = &mut grace => break,
        };
        match reply {
            Reply::Response(bytes) => {
                // A client that stops reading must not hold shutdown up either.
                let written = tokio::select! {
                    r = write_response(&mut wr, &bytes) => r.is_ok(),
                    () = &mut grace => false,
                };
                if !written {
                    break;
                }
            }
            Reply::Chunks(chunks) => {
                let written = tokio::select! {
                    r = write_chunks(&mut wr, chunks) => r.is_ok(),
                    () = &mut grace => false,
                };
                if !written {
                    break;
                }
            }
            Reply::NoResponse => {}
            Reply::ResponseThenClose(bytes, reason) => {
                let _ = wr.write_all(&bytes).await;
                let _ = wr.flush().await;
                tracing::info!(%peer, %reason, "closing connection");
                break;
            }
            Reply::Close(reason) => {
                broker.metrics.protocol_errors.inc();
                tracing::warn!(%peer, %reason, "closing connection");
                break;
            }
        }
        if !mute.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(mute) => {}
                () = stop.cancelled() => break,
            }
        }
    }
    reader.abort();
    let _ = wr.shutdown().await;
    connections.dec();
}

/// Writes one response and flushes it.
///
/// The flush matters on TLS: when the socket is full, a TLS write reports its plaintext taken
/// while the encrypted bytes still wait in the TLS session's own buffer, and nothing sends them
/// until the next write or a flush. Without it the tail of a large Fetch response could wait for
/// the next response, which the client never asks for because it is still waiting for this one.
/// On plain TCP the flush is free.
async fn write_response<W: ResponseWriter>(wr: &mut W, bytes: &[u8]) -> io::Result<()> {
    wr.write_all(bytes).await?;
    wr.flush().await
}

/// Writes `chunks` in order, then flushes (see [`write_response`]): runs of memory chunks with
/// vectored writes (one system call for most responses), file regions with
/// [`ResponseWriter::write_region`].
async fn write_chunks<W: ResponseWriter>(wr: &mut W, mut chunks: Vec<Chunk>) -> io::Result<()> {
    /// Slices per system call (well under the kernel's `IOV_MAX` of 1024).
    const MAX_SLICES: usize = 64;
    chunks.retain(|c| !c.is_empty());
    let mut next = 0;
    while next < chunks.len() {
        if let Chunk::File(region) = &chunks[next] {
            wr.write_region(region).await?;
            next += 1;
            continue;
        }
        let slices: Vec<IoSlice<'_>> = chunks[next..]
            .iter()
            .take(MAX_SLICES)
            .map_while(|c| match c {
                Chunk::Memory(bytes) => Some(IoSlice::new(bytes)),
                Chunk::File(_) => None,
            })
            .collect();
        let mut n = wr.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        // Only memory chunks were written, so `n` is used up before a file chunk.
        while n > 0 {
            let Some(Chunk::Memory(first)) = chunks.get_mut(next) else {
                break;
            };
            if n >= first.len() {
                n -= first.len();
                next += 1;
            } else {
                first.advance(n);
                n = 0;
            }
        }
    }
    wr.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file_region::FileRegion;
    use bytes::Bytes;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use std::io::Write;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A TLS connection over loopback with small socket buffers, so large writes find the
    /// socket full part of the way through.
    async fn tls_pair() -> (
        tokio_rustls::server::TlsStream<TcpStream>,
        tokio_rustls::client::TlsStream<TcpStream>,
    ) {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = CertificateDer::from(key.cert.der().to_vec());
        let private =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], private)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tcp_client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (tcp_client, tcp_server) = (tcp_client.unwrap(), accepted.unwrap().0);
        socket2::SockRef::from(&tcp_server)
            .set_send_buffer_size(16 << 10)
            .unwrap();
        socket2::SockRef::from(&tcp_client)
            .set_recv_buffer_size(16 << 10)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let (s, c) = tokio::join!(
            acceptor.accept(tcp_server),
            connector.connect(name, tcp_client)
        );
        (s.unwrap(), c.unwrap())
    }

    /// Regression: without a flush after each response, TLS kept the end of a large Fetch
    /// response in its buffer until the next response, and a consumer waiting for it read
    /// nothing (seen in the chaos test with every listener secured).
    #[tokio::test]
    async fn every_byte_of_a_response_reaches_a_tls_client_before_the_next_response() {
        let mut file = tempfile::tempfile().unwrap();
        let stored: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        file.write_all(&stored).unwrap();
        let file = Arc::new(file);
        for size in [70_000usize, 150_000, 299_000] {
            let (server, mut client) = tls_pair().await;
            let (_rd, mut wr) = server.into_halves();
            let head = Bytes::from(vec![7u8; 1000]);
            let region = FileRegion {
                file: file.clone(),
                position: 0,
                len: size,
            };
            let want = head.len() + size;
            let reader = tokio::spawn(async move {
                let mut got = vec![0u8; want];
                let read =
                    tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut got)).await;
                (read.map(|r| r.is_ok()), got, client)
            });
            let bytes: &[u8] = &head;
            write_response(&mut wr, bytes).await.unwrap();
            write_chunks(&mut wr, vec![Chunk::File(region)])
                .await
                .unwrap();
            // The server writes nothing more; the client must still get everything.
            let (read, got, _client) = reader.await.unwrap();
            assert_eq!(
                read,
                Ok(true),
                "response of {size} bytes did not arrive whole"
            );
            assert_eq!(&got[..1000], &head[..]);
            assert_eq!(&got[1000..], &stored[..size]);
        }
    }
}
