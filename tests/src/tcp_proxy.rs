//! A TCP proxy that can go silent: it keeps every socket open but stops forwarding bytes in
//! both directions, as a network partition or a stopped server process does. Bytes read
//! while silent are held and delivered on [`SilentProxy::resume`], as a healed network
//! delivers retransmitted packets.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Forwards connections from a local port to `upstream` until dropped.
pub struct SilentProxy {
    address: SocketAddr,
    forwarding: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl SilentProxy {
    /// Listens on `127.0.0.1:0` and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (forwarding, watching) = watch::channel(true);
        let accept = tokio::spawn(async move {
            // Dropped with the accept task, which aborts every connection's pumps.
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                connections.spawn(pump(client_read, server_write, watching.clone()));
                connections.spawn(pump(server_read, client_write, watching.clone()));
            }
        });
        Ok(SilentProxy {
            address,
            forwarding,
            accept,
        })
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops forwarding in both directions; sockets stay open.
    pub fn go_silent(&self) {
        self.forwarding.send_replace(false);
    }

    /// Forwards again, the bytes held meanwhile first.
    pub fn resume(&self) {
        self.forwarding.send_replace(true);
    }
}

impl Drop for SilentProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies `from` to `to`, holding each chunk while the proxy is silent.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut forwarding: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if forwarding.wait_for(|on| *on).await.is_err()
            || to.write_all(&buffer[..read]).await.is_err()
        {
            return;
        }
    }
    let _ = to.shutdown().await;
}
