//! Accept loops for the Kafka listeners; each connection gets its own task.

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::state::Broker;

pub async fn bind_all(config: &Config) -> anyhow::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for l in &config.listeners {
        let addr = l.bind_addr();
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (listener {}): {e}", l.name))?;
        tracing::info!(listener = %l.name, %addr, "listening");
        out.push(listener);
    }
    Ok(out)
}

pub async fn accept_loop(broker: Arc<Broker>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(super::connection::serve(broker.clone(), stream, peer));
            }
            Err(e) => {
                // Usually EMFILE: back off instead of spinning.
                tracing::error!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}
