//! A TCP proxy on 127.0.0.1 in front of PostgreSQL, for faults a test cannot ask the shared
//! server for: a database outage (connections cut, new ones refused) and a vanished node behind
//! something that still answers TCP (sockets kept open, nothing forwarded).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways.
    Forward,
    /// Keep every socket open but forward nothing (a vanished peer behind a NAT or pooler).
    Stall,
    /// Close every connection and refuse new ones at once (the database is down).
    Down,
}

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Closes every connection too: their tasks watch the mode.
        self.mode.send_replace(Mode::Down);
    }
}

impl TcpProxy {
    /// Starts forwarding from a fresh port on 127.0.0.1 to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (mode, _) = watch::channel(Mode::Forward);
        let mode = Arc::new(mode);
        let accepting = mode.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *accepting.borrow() == Mode::Down {
                    drop(client);
                    continue;
                }
                let watcher = accepting.subscribe();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        relay(client, server, watcher).await;
                    }
                });
            }
        });
        Self { addr, mode, accept }
    }

    /// `url` (a PostgreSQL URL on 127.0.0.1:5432 or any port) pointed at this proxy.
    pub fn url_through(&self, url: &str) -> String {
        let mut parsed = url::Url::parse(url).expect("database url");
        parsed.set_host(Some("127.0.0.1")).expect("host");
        parsed.set_port(Some(self.addr.port())).expect("port");
        parsed.to_string()
    }

    /// Switches what the proxy does with traffic, for every connection at once.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

/// Copies both ways until either side closes or the proxy goes down; while stalled, holds the
/// bytes (and the sockets) without forwarding.
async fn relay(mut client: TcpStream, mut server: TcpStream, mut mode: watch::Receiver<Mode>) {
    let mut from_client = vec![0u8; 16 * 1024];
    let mut from_server = vec![0u8; 16 * 1024];
    loop {
        let current = *mode.borrow_and_update();
        match current {
            Mode::Down => return,
            Mode::Stall => {
                if mode.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Mode::Forward => {}
        }
        tokio::select! {
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            read = client.read(&mut from_client) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if !wait_forwarding(&mut mode).await || server.write_all(&from_client[..n]).await.is_err() {
                        return;
                    }
                }
            },
            read = server.read(&mut from_server) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if !wait_forwarding(&mut mode).await || client.write_all(&from_server[..n]).await.is_err() {
                        return;
                    }
                }
            },
        }
    }
}

/// Waits while stalled; `false` when the proxy went down meanwhile.
async fn wait_forwarding(mode: &mut watch::Receiver<Mode>) -> bool {
    loop {
        let current = *mode.borrow_and_update();
        match current {
            Mode::Forward => return true,
            Mode::Down => return false,
            Mode::Stall => {
                if mode.changed().await.is_err() {
                    return false;
                }
            }
        }
    }
}
