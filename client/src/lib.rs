//! fjord-client: a small async Kafka protocol client over `kafka-protocol`.
//!
//! One [`Connection`] sends typed requests and decodes typed responses, negotiating nothing: the
//! caller picks the version. The operator, the end-to-end tests and the tools build on it; it is
//! deliberately thin so tests can also send requests no well-behaved client would.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("could not encode request: {0}")]
    Encode(String),
    #[error("could not decode response: {0}")]
    Decode(String),
    #[error("response correlation id {got} does not match request {want}")]
    Correlation { want: i32, got: i32 },
    #[error("response of {0} bytes is larger than the 256 MiB limit")]
    TooLarge(usize),
}

/// Responses above this size are refused rather than allocated.
const MAX_RESPONSE: usize = 256 << 20;

pub struct Connection {
    stream: TcpStream,
    next_correlation: i32,
    client_id: String,
}

impl Connection {
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<Connection, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            next_correlation: 1,
            client_id: "fjord-client".into(),
        })
    }

    /// Sends `request` at `version` and waits for its response.
    pub async fn send<R: Request>(
        &mut self,
        request: &R,
        version: i16,
    ) -> Result<R::Response, ClientError> {
        let correlation = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header
            .encode(&mut buf, R::header_version(version))
            .map_err(|e| ClientError::Encode(e.to_string()))?;
        request
            .encode(&mut buf, version)
            .map_err(|e| ClientError::Encode(e.to_string()))?;
        let len = (buf.len() - 4) as i32;
        buf[0..4].copy_from_slice(&len.to_be_bytes());
        self.stream.write_all(&buf).await?;
        let mut body = self.read_frame().await?;
        let resp_header = ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        if resp_header.correlation_id != correlation {
            return Err(ClientError::Correlation {
                want: correlation,
                got: resp_header.correlation_id,
            });
        }
        R::Response::decode(&mut body, version).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Sends raw bytes as one frame (for tests of malformed input).
    pub async fn send_raw_frame(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        let mut buf = BytesMut::with_capacity(payload.len() + 4);
        buf.put_i32(payload.len() as i32);
        buf.put_slice(payload);
        self.stream.write_all(&buf).await?;
        Ok(())
    }

    /// Reads one size-prefixed frame.
    pub async fn read_frame(&mut self) -> Result<Bytes, ClientError> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).await?;
        let len = (&len[..]).get_i32();
        if len < 0 || len as usize > MAX_RESPONSE {
            return Err(ClientError::TooLarge(len as usize));
        }
        let mut body = vec![0u8; len as usize];
        self.stream.read_exact(&mut body).await?;
        Ok(Bytes::from(body))
    }
}
