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
    broker.metrics.connections.inc();
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
            r = crate::quota::track(&broker, handled) => r,
            () = &mut grace => break,
        };
        match reply {
            Reply::Response(bytes) => {
                // A client that stops reading must not hold shutdown up either.
                let written = tokio::select! {
                    r = wr.write_all(&bytes) => r.is_ok(),
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
    broker.metrics.connections.dec();
}

/// Writes `chunks` in order: runs of memory chunks with vectored writes (one system call for
/// most responses), file regions with [`ResponseWriter::write_region`].
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
    Ok(())
}
