//! A TCP proxy that can go silent: it keeps every socket open but stops forwarding bytes in
//! both directions, as a network partition or a stopped server process does. Bytes read
//! while silent are held and delivered on [`SilentProxy::resume`], as a healed network
//! delivers retransmitted packets.
//!
//! It also tells a test what went through it: how many bytes from its clients it holds back
//! ([`SilentProxy::held_from_clients`]), and the addresses its own connections to the server
//! come from ([`SilentProxy::upstream_addresses`]), which is how the server sees the clients.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Forwards connections from a local port to `upstream` until dropped.
pub struct SilentProxy {
    address: SocketAddr,
    forwarding: watch::Sender<bool>,
    held_from_clients: Arc<AtomicUsize>,
    upstream_addresses: Arc<Mutex<Vec<SocketAddr>>>,
    accept: JoinHandle<()>,
}

impl SilentProxy {
    /// Listens on `127.0.0.1:0` and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (forwarding, watching) = watch::channel(true);
        let held_from_clients = Arc::new(AtomicUsize::new(0));
        let upstream_addresses = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let (held, addresses) = (held_from_clients.clone(), upstream_addresses.clone());
            async move {
                // Dropped with the accept task, which aborts every connection's pumps.
                let mut connections = JoinSet::new();
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        continue;
                    };
                    if let Ok(from) = server.local_addr() {
                        lock(&addresses).push(from);
                    }
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let to_server = pump(client_read, server_write, watching.clone(), held.clone());
                    let to_client =
                        pump(server_read, client_write, watching.clone(), Arc::default());
                    connections.spawn(to_server);
                    connections.spawn(to_client);
                }
            }
        });
        Ok(SilentProxy {
            address,
            forwarding,
            held_from_clients,
            upstream_addresses,
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

    /// Bytes the proxy has read from its clients and not yet passed on to the server: while
    /// silent, what the clients sent since (their first chunk at least; the rest may still
    /// wait in the socket).
    pub fn held_from_clients(&self) -> usize {
        self.held_from_clients.load(Ordering::SeqCst)
    }

    /// The local addresses of the proxy's connections to the server, one per client
    /// connection so far, in the order the clients connected: what the server reports as
    /// those clients' addresses (`addr=` in Redis's `CLIENT LIST`, for a server on this host).
    pub fn upstream_addresses(&self) -> Vec<SocketAddr> {
        lock(&self.upstream_addresses).clone()
    }
}

impl Drop for SilentProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Copies `from` to `to`, holding each chunk while the proxy is silent; `held` counts the
/// bytes read and not yet written.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut forwarding: watch::Receiver<bool>,
    held: Arc<AtomicUsize>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        held.fetch_add(read, Ordering::SeqCst);
        if forwarding.wait_for(|on| *on).await.is_err()
            || to.write_all(&buffer[..read]).await.is_err()
        {
            return;
        }
        held.fetch_sub(read, Ordering::SeqCst);
    }
    let _ = to.shutdown().await;
}
