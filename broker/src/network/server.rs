//! Accept loops for the Kafka listeners; each connection gets its own task. On TLS listeners the
//! handshake runs in that task (bounded by a timeout), with the listener's current certificate;
//! a verified client certificate names the connection's principal. Connections are counted
//! against `limits` and owned by the broker's `Tasks`, so shutdown ends them.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::limits::ConnectionLimits;
use super::listener::{register_auth_metrics, AuthCounters, ListenerRuntime};
use super::session::Session;
use crate::auth::tls::principal_from_cert;
use crate::config::Config;
use crate::state::Broker;

/// A TLS handshake that takes longer than this is abandoned.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound listener socket and its shared state.
pub struct BoundListener {
    pub tcp: TcpListener,
    pub runtime: Arc<ListenerRuntime>,
}

/// Loads every listener's TLS files and binds its socket (errors name the listener).
pub async fn bind_all(config: &Config) -> anyhow::Result<Vec<BoundListener>> {
    let mut out = Vec::new();
    let delay = Duration::from_millis(config.failed_authentication_delay_ms);
    for (l, security) in config.listeners.iter().zip(&config.listener_security) {
        let runtime = ListenerRuntime::new(security.clone(), delay)
            .map_err(|e| anyhow::anyhow!("listener {}: TLS: {e}", l.name))?;
        let addr = l.bind_addr();
        let tcp = TcpListener::bind(&addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (listener {}): {e}", l.name))?;
        tracing::info!(listener = %l.name, %addr, protocol = ?security.protocol, "listening");
        out.push(BoundListener {
            tcp,
            runtime: Arc::new(runtime),
        });
    }
    Ok(out)
}

/// Registers the listeners' metrics and starts their accept loops.
pub fn spawn_all(broker: &Arc<Broker>, listeners: Vec<BoundListener>) {
    let metrics = register_auth_metrics(&broker.metrics.registry);
    let limits = ConnectionLimits::new(broker.config.connection_limits.clone());
    for l in listeners {
        if let Some((failed, ok)) = &metrics {
            let name = l.runtime.security.name.as_str();
            let _ = l.runtime.counters.set(AuthCounters {
                failed: failed.with_label_values(&[name]),
                successful: ok.with_label_values(&[name]),
            });
        }
        let protected = is_protected(&broker.config, &l.runtime.security.name);
        broker
            .tasks
            .spawn(accept_loop(broker.clone(), l, limits.clone(), protected));
    }
}

/// Kafka's rule: the inter-broker listener is exempt from connection limits when clients have
/// a listener of their own, so a client storm cannot stop replication.
fn is_protected(config: &Config, listener: &str) -> bool {
    config.listeners.len() > 1 && config.cluster.inter_broker_listener == listener
}

async fn accept_loop(
    broker: Arc<Broker>,
    listener: BoundListener,
    limits: Arc<ConnectionLimits>,
    protected: bool,
) {
    loop {
        if !protected {
            limits.wait_for_slot().await;
        }
        match listener.tcp.accept().await {
            Ok((stream, peer)) => {
                let Ok(admitted) = limits.admit(peer.ip(), protected) else {
                    // Closed at once, as Kafka does; `admit` logged it (rate-limited).
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                set_buffer_sizes(&stream, &broker.config);
                let rt = listener.runtime.clone();
                let b = broker.clone();
                broker.tasks.spawn_graceful(async move {
                    start_connection(b, rt, stream, peer).await;
                    drop(admitted);
                });
            }
            Err(e) => {
                // Usually EMFILE: back off instead of spinning.
                tracing::error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// `socket.send.buffer.bytes` and `socket.receive.buffer.bytes`, as Kafka applies them (100 KiB
/// each by default). Besides matching Kafka, the smaller send buffer measured about half the
/// kernel time per GB consumed over loopback compared with the autotuned size (docs/benchmarks.md).
fn set_buffer_sizes(stream: &TcpStream, config: &crate::config::Config) {
    let socket = socket2::SockRef::from(stream);
    if let Some(bytes) = config.socket_send_buffer_bytes {
        if let Err(e) = socket.set_send_buffer_size(bytes) {
            tracing::debug!(error = %e, "could not set socket.send.buffer.bytes");
        }
    }
    if let Some(bytes) = config.socket_receive_buffer_bytes {
        if let Err(e) = socket.set_recv_buffer_size(bytes) {
            tracing::debug!(error = %e, "could not set socket.receive.buffer.bytes");
        }
    }
}

async fn start_connection(
    broker: Arc<Broker>,
    rt: Arc<ListenerRuntime>,
    stream: TcpStream,
    peer: std::net::SocketAddr,
) {
    let Some(tls) = &rt.tls else {
        let session = Session::new(peer, rt.clone(), None);
        super::connection::serve(broker, stream, session).await;
        return;
    };
    let acceptor = tls.acceptor();
    let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
    let handshake = tokio::select! {
        r = handshake => r,
        () = broker.tasks.cancelled().cancelled() => return,
    };
    let stream = match handshake {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            // A plain EOF is a port probe, not a failed authentication.
            if e.kind() != std::io::ErrorKind::UnexpectedEof {
                rt.count_failure();
            }
            tracing::warn!(%peer, listener = %rt.security.name, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, listener = %rt.security.name, "TLS handshake timed out");
            return;
        }
    };
    let principal = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| principal_from_cert(cert.as_ref()));
    if principal.is_some() && !rt.security.protocol.uses_sasl() {
        rt.count_success();
    }
    let session = Session::new(peer, rt.clone(), principal);
    super::connection::serve(broker, stream, session).await;
}
