//! Raft RPCs between controllers over TCP: each message is a 4-byte big-endian length and a JSON
//! body; one request, one response, in order, per connection. Also carries forwarded client
//! writes so any voter can accept a write and hand it to the leader.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use openraft::error::{
    ClientWriteError, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{Command, Raft, TypeConfig};

/// Test fault hook: while set, this process neither sends nor answers quorum RPCs (a network
/// partition of the quorum member, for tests that need one).
static ISOLATED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn set_isolated(on: bool) {
    ISOLATED.store(on, std::sync::atomic::Ordering::Release);
}

pub fn is_isolated() -> bool {
    ISOLATED.load(std::sync::atomic::Ordering::Acquire)
}

/// Mutual TLS between quorum members: each side presents its certificate and verifies the
/// other's against the configured CA. The connector checks the peer's certificate for the host
/// in its quorum address.
#[derive(Clone)]
pub struct QuorumTls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub connector: tokio_rustls::TlsConnector,
}

/// A quorum connection: plain TCP or TLS over it.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}
type BoxStream = Box<dyn Stream>;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A forwarded write reached a node that is no longer the leader.
pub const NOT_LEADER: &str = "not the leader";

/// Largest message accepted (snapshots of a large cluster's metadata included).
const MAX_MESSAGE: usize = 256 << 20;

#[derive(Serialize, Deserialize)]
pub enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A client write forwarded to the leader.
    Write(Command),
    /// An application message for the leader (broker heartbeats), answered by the node's
    /// [`MessageHandler`].
    Message(serde_json::Value),
    /// Whether the node belongs to a formed quorum, asked by a voter with an empty log before
    /// it proposes an initial configuration (see `node::formation`).
    Formed,
}

#[derive(Serialize, Deserialize)]
pub enum Response {
    AppendEntries(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    /// Log index of the committed write, or why it failed.
    Write(Result<u64, String>),
    Message(Result<serde_json::Value, String>),
    Formed(bool),
}

/// Answers application messages sent to this node; set once the application is ready.
pub type MessageHandler =
    Arc<OnceLock<Box<dyn Fn(serde_json::Value) -> serde_json::Value + Send + Sync>>>;

pub async fn send_message<S: AsyncWrite + Unpin + ?Sized, T: Serialize>(
    stream: &mut S,
    msg: &T,
) -> std::io::Result<()> {
    let body = serde_json::to_vec(msg)?;
    let mut buf = Vec::with_capacity(body.len() + 4);
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    stream.write_all(&buf).await?;
    // Over TLS a write can leave encrypted bytes in the session's buffer when the socket is
    // full; only a flush sends them, and the peer is waiting for this whole message.
    stream.flush().await
}

pub async fn read_message<S: AsyncRead + Unpin + ?Sized, T: DeserializeOwned>(
    stream: &mut S,
) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("quorum message of {len} bytes exceeds the limit"),
        ));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    serde_json::from_slice(&body)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Serves Raft RPCs for `raft` on `listener` until the task is dropped. The connections are
/// tasks of a `JoinSet` owned here, so dropping (aborting) this task ends them too: a stopped
/// node answers no more votes or appends.
pub async fn serve(
    raft: Raft,
    listener: TcpListener,
    handler: MessageHandler,
    tls: Option<QuorumTls>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let Ok((stream, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let raft = raft.clone();
        let handler = handler.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let _ = stream.set_nodelay(true);
            let stream: BoxStream = match tls {
                None => Box::new(stream),
                Some(tls) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream)).await
                    {
                        Ok(Ok(s)) => Box::new(s),
                        Ok(Err(e)) => {
                            tracing::warn!(%peer, error = %e, "quorum TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::warn!(%peer, "quorum TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = serve_connection(raft, stream, handler).await {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    tracing::debug!(%peer, error = %e, "quorum connection closed");
                }
            }
        });
    }
}

async fn serve_connection(
    raft: Raft,
    mut stream: BoxStream,
    handler: MessageHandler,
) -> std::io::Result<()> {
    loop {
        let request: Request = read_message(&mut stream).await?;
        if is_isolated() {
            return Err(std::io::ErrorKind::ConnectionAborted.into());
        }
        let response = match request {
            Request::AppendEntries(r) => Response::AppendEntries(raft.append_entries(r).await),
            Request::Vote(r) => Response::Vote(raft.vote(r).await),
            Request::InstallSnapshot(r) => {
                Response::InstallSnapshot(raft.install_snapshot(r).await)
            }
            Request::Write(c) => Response::Write(match raft.client_write(c).await {
                Ok(r) => Ok(r.log_id.index),
                // Leadership moved (or an election is running) since the sender looked: it
                // retries with the new leader rather than failing the write.
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                    Err(NOT_LEADER.to_string())
                }
                Err(e) => Err(e.to_string()),
            }),
            Request::Message(m) if m.get("join").is_some() => {
                Response::Message(admit_learner(&raft, &m["join"]).await)
            }
            Request::Message(m) => Response::Message(match handler.get() {
                Some(h) => Ok(h(m)),
                None => Err("this node is not ready for messages yet".into()),
            }),
            Request::Formed => Response::Formed(belongs_to_a_formed_quorum(&raft)),
        };
        send_message(&mut stream, &response).await?;
    }
}

/// Whether this node has ever been part of a quorum: it has a term, a leader, a log or a
/// snapshot. A node that lost its disk answers `false` until a leader reaches it.
pub(crate) fn belongs_to_a_formed_quorum(raft: &Raft) -> bool {
    let m = raft.metrics().borrow().clone();
    m.current_term > 0
        || m.current_leader.is_some()
        || m.last_log_index.is_some()
        || m.snapshot.is_some()
}

/// A non-voter asks to receive the log: the leader adds it as a learner (it never votes).
/// `join` is `{"node_id": n, "addr": "host:port"}`.
async fn admit_learner(raft: &Raft, join: &serde_json::Value) -> Result<serde_json::Value, String> {
    let id = join["node_id"].as_u64().ok_or("join without node_id")?;
    let addr = join["addr"]
        .as_str()
        .ok_or("join without addr")?
        .to_string();
    let metrics = raft.metrics().borrow().clone();
    if metrics.current_leader != Some(metrics.id) {
        return Err(format!(
            "not the leader (the leader is {:?})",
            metrics.current_leader
        ));
    }
    let membership = metrics.membership_config.membership().clone();
    if membership.voter_ids().any(|v| v == id) {
        return Err(format!("node {id} is a voter, not a learner"));
    }
    let known = membership.get_node(&id).is_some_and(|n| n.addr == addr);
    if !known {
        raft.add_learner(id, BasicNode::new(addr), false)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(serde_json::json!({"ok": true}))
}

/// Makes one [`PeerClient`] per target voter.
#[derive(Clone, Default)]
pub struct Network {
    pub tls: Option<QuorumTls>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        PeerClient::new(target, node.addr.clone(), self.tls.clone())
    }
}

/// A connection to one peer, reopened after any error.
pub struct PeerClient {
    target: u64,
    address: String,
    tls: Option<QuorumTls>,
    stream: Option<BoxStream>,
}

/// Connects to `address`, with TLS when configured (the certificate must be valid for the
/// address's host).
async fn open(address: &str, tls: &Option<QuorumTls>) -> std::io::Result<BoxStream> {
    let stream = TcpStream::connect(address).await?;
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(Box::new(stream));
    };
    let host = address
        .rsplit_once(':')
        .map_or(address, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{address}: {e}"))
    })?;
    let s = tls.connector.connect(name, stream).await?;
    Ok(Box::new(s))
}

/// Why one call failed: the peer was never reached, or the exchange broke.
enum CallError {
    Unreachable(std::io::Error),
    Network(std::io::Error),
}

impl PeerClient {
    pub fn new(target: u64, address: String, tls: Option<QuorumTls>) -> Self {
        PeerClient {
            target,
            address,
            tls,
            stream: None,
        }
    }

    async fn call(&mut self, request: &Request, timeout: Duration) -> Result<Response, CallError> {
        if is_isolated() {
            self.stream = None;
            return Err(CallError::Unreachable(
                std::io::ErrorKind::NetworkUnreachable.into(),
            ));
        }
        if self.stream.is_none() {
            let stream = tokio::time::timeout(timeout, open(&self.address, &self.tls))
                .await
                .map_err(|_| CallError::Unreachable(std::io::ErrorKind::TimedOut.into()))?
                .map_err(CallError::Unreachable)?;
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut().expect("connected above");
        let exchange = async {
            send_message(stream.as_mut(), request).await?;
            read_message::<_, Response>(stream.as_mut()).await
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => {
                self.stream = None;
                Err(CallError::Network(e))
            }
            Err(_) => {
                self.stream = None;
                Err(CallError::Network(std::io::ErrorKind::TimedOut.into()))
            }
        }
    }

    /// Forwards a client write to this peer (the leader).
    pub async fn forward_write(&mut self, command: Command) -> Result<u64, String> {
        match self
            .call(&Request::Write(command), Duration::from_secs(10))
            .await
        {
            Ok(Response::Write(result)) => result,
            Ok(_) => Err("unexpected response to a forwarded write".into()),
            Err(CallError::Unreachable(e) | CallError::Network(e)) => {
                Err(format!("leader {} at {}: {e}", self.target, self.address))
            }
        }
    }
}

impl PeerClient {
    /// Whether this peer belongs to a formed quorum; `None` when it did not answer (down, not
    /// resolvable yet, or a version that does not know the question).
    pub async fn ask_formed(&mut self, timeout: Duration) -> Option<bool> {
        match self.call(&Request::Formed, timeout).await {
            Ok(Response::Formed(formed)) => Some(formed),
            _ => None,
        }
    }

    /// Sends an application message to this peer and returns its answer.
    pub async fn send_message(
        &mut self,
        message: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        match self
            .call(&Request::Message(message), Duration::from_secs(2))
            .await
        {
            Ok(Response::Message(result)) => result,
            Ok(_) => Err("unexpected response to a message".into()),
            Err(CallError::Unreachable(e) | CallError::Network(e)) => {
                Err(format!("node {} at {}: {e}", self.target, self.address))
            }
        }
    }
}

fn to_rpc_error<E: std::error::Error>(e: CallError) -> RPCError<u64, BasicNode, E> {
    match e {
        CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
        CallError::Network(e) => RPCError::Network(NetworkError::new(&e)),
    }
}

fn unexpected<E: std::error::Error>() -> RPCError<u64, BasicNode, E> {
    let e = std::io::Error::new(std::io::ErrorKind::InvalidData, "mismatched response");
    RPCError::Network(NetworkError::new(&e))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        match self
            .call(&Request::AppendEntries(rpc), option.hard_ttl())
            .await
        {
            Ok(Response::AppendEntries(Ok(r))) => Ok(r),
            Ok(Response::AppendEntries(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(unexpected()),
            Err(e) => Err(to_rpc_error(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        match self
            .call(&Request::InstallSnapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(Response::InstallSnapshot(Ok(r))) => Ok(r),
            Ok(Response::InstallSnapshot(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(unexpected()),
            Err(e) => Err(to_rpc_error(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        match self.call(&Request::Vote(rpc), option.hard_ttl()).await {
            Ok(Response::Vote(Ok(r))) => Ok(r),
            Ok(Response::Vote(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(unexpected()),
            Err(e) => Err(to_rpc_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message reaches the peer even through a writer that holds bytes until flushed (as a
    /// TLS session does when the socket is full).
    #[tokio::test]
    async fn a_sent_message_is_flushed_to_the_peer() {
        let (near, mut far) = tokio::io::duplex(1 << 16);
        let mut buffered = tokio::io::BufWriter::with_capacity(1 << 20, near);
        send_message(&mut buffered, &serde_json::json!({"vote": 7}))
            .await
            .unwrap();
        let got: serde_json::Value =
            tokio::time::timeout(Duration::from_secs(5), read_message(&mut far))
                .await
                .expect("the message is still buffered")
                .unwrap();
        assert_eq!(got["vote"], 7);
    }
}
