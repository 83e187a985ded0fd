//! The byte stream under a connection, plain TCP or TLS, split into a read half and a write
//! half that can also send a region of a log file.
//!
//! Why a trait instead of a generic `AsyncWrite`: on plain TCP a fetched region goes from the
//! page cache to the socket with `sendfile(2)`, never through user space, which needs the
//! socket's file descriptor; TLS must encrypt the bytes, so there the region is read first.

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::file_region::FileRegion;

/// A connection's stream, split for the reader task and the response writer.
pub trait Transport: Send + 'static {
    type Reader: AsyncRead + Unpin + Send + 'static;
    type Writer: ResponseWriter;
    fn into_halves(self) -> (Self::Reader, Self::Writer);
}

/// The write half: bytes, and regions of files.
pub trait ResponseWriter: AsyncWrite + Unpin + Send + 'static {
    /// Writes all of `region`. A file cut shorter than the region (a truncated log) is an
    /// `UnexpectedEof`: the response frame cannot be completed and the connection must close.
    fn write_region(&mut self, region: &FileRegion) -> impl Future<Output = io::Result<()>> + Send;
}

impl Transport for TcpStream {
    type Reader = OwnedReadHalf;
    type Writer = OwnedWriteHalf;

    fn into_halves(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }
}

impl Transport for TlsStream<TcpStream> {
    type Reader = ReadHalf<TlsStream<TcpStream>>;
    type Writer = WriteHalf<TlsStream<TcpStream>>;

    fn into_halves(self) -> (Self::Reader, Self::Writer) {
        tokio::io::split(self)
    }
}

impl ResponseWriter for OwnedWriteHalf {
    async fn write_region(&mut self, region: &FileRegion) -> io::Result<()> {
        let socket: &TcpStream = self.as_ref();
        let mut offset = libc::off_t::try_from(region.position)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file position too large"))?;
        let mut left = region.len;
        while left > 0 {
            socket.writable().await?;
            let sent = socket.try_io(Interest::WRITABLE, || {
                // SAFETY: both descriptors stay open for the call (the socket is borrowed, the
                // file is held by `region`), and `offset` is a valid, exclusive pointer that
                // sendfile advances by what it sent.
                let n = unsafe {
                    libc::sendfile(
                        socket.as_raw_fd(),
                        region.file.as_raw_fd(),
                        &raw mut offset,
                        left,
                    )
                };
                usize::try_from(n).map_err(|_| io::Error::last_os_error())
            });
            match sent {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "log file shorter than the fetched region (truncated while sending)",
                    ))
                }
                Ok(n) => left -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl ResponseWriter for WriteHalf<TlsStream<TcpStream>> {
    async fn write_region(&mut self, region: &FileRegion) -> io::Result<()> {
        let bytes = region.read()?;
        self.write_all(&bytes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::Arc;
    use tokio::io::AsyncReadExt;

    async fn connected() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    fn stored(len: usize) -> (Arc<std::fs::File>, Vec<u8>) {
        let content: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&content).unwrap();
        (Arc::new(file), content)
    }

    #[tokio::test]
    async fn sendfile_delivers_the_region_in_order_with_other_writes() {
        let (client, server) = connected().await;
        // Larger than the socket buffers: the writer has to wait for the reader.
        let (file, content) = stored(8 << 20);
        let region = FileRegion {
            file,
            position: 1000,
            len: content.len() - 2000,
        };
        let expected_len = 3 + region.len + 3;
        let reader = tokio::spawn(async move {
            let mut client = client;
            let mut got = vec![0u8; expected_len];
            client.read_exact(&mut got).await.unwrap();
            got
        });
        let (_rd, mut wr) = server.into_halves();
        wr.write_all(b"abc").await.unwrap();
        wr.write_region(&region).await.unwrap();
        wr.write_all(b"xyz").await.unwrap();
        let got = reader.await.unwrap();
        assert_eq!(&got[..3], b"abc");
        assert_eq!(
            &got[3..3 + region.len],
            &content[1000..content.len() - 1000]
        );
        assert_eq!(&got[3 + region.len..], b"xyz");
    }

    #[tokio::test]
    async fn a_region_past_the_end_of_a_truncated_file_is_an_error_not_a_hang() {
        let (_client, server) = connected().await;
        let (file, content) = stored(4096);
        let region = FileRegion {
            file: file.clone(),
            position: 0,
            len: content.len(),
        };
        file.set_len(100).unwrap();
        let (_rd, mut wr) = server.into_halves();
        let e = wr.write_region(&region).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
