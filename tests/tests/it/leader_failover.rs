//! A leader whose node vanishes behind something that still answers at the TCP level (a proxy,
//! a NAT, a pooler) keeps its backend alive as far as keepalives can tell: the producer's leader
//! lock and the workers' maintenance lock must still pass to another process within 60 s.
//!
//! The vanished node is a TCP proxy between one process and PostgreSQL that stops forwarding in
//! both directions while it keeps every socket open: the shared [`TcpProxy`] in `Stall` mode for
//! the producer, and a proxy of this file's own for the maintenance lock, which must freeze at one
//! moment of the protocol (the lock taken, its transaction not yet committed) that a test cannot
//! time from outside.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use integration_tests::TestJob;
use linkpulse_queue::maintenance::MAINTENANCE_LOCK_KEY;

use crate::app::TestApp;
use crate::helpers::{WorkerProcess, enqueue, url_of, wait_for};
use crate::producer_loop::ProducerRun;
use crate::tcp_proxy::{Mode, TcpProxy};

/// What the issue asks: a standby leads, and maintenance resumes, within this of the node's loss.
const TAKEOVER_TARGET: Duration = Duration::from_secs(60);

/// The PostgreSQL server the tests use.
const POSTGRES: &str = "127.0.0.1:5432";

/// A TCP proxy to PostgreSQL that freezes by itself at a moment of the protocol (see
/// [`FreezeBeforeCommitAfter`]): it forwards nothing more, in either direction, and keeps every
/// socket open (new connections are accepted and never forwarded).
struct FreezingProxy {
    addr: SocketAddr,
    /// Cancelled when the proxy freezes.
    frozen: CancellationToken,
    /// Cancelled when the test is done: every socket closes.
    closed: CancellationToken,
    /// Local ports of the proxy's connections to PostgreSQL (`pg_stat_activity.client_port`).
    upstream_ports: Arc<Mutex<Vec<u16>>>,
}

/// When the proxy freezes by itself: after a connection that sent `marker` then sends `COMMIT`
/// (the transaction that ran the marked statement stays open on the server, idle).
#[derive(Clone, Copy)]
struct FreezeBeforeCommitAfter(&'static [u8]);

impl FreezingProxy {
    async fn start(trigger: FreezeBeforeCommitAfter) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let proxy = Self {
            addr,
            frozen: CancellationToken::new(),
            closed: CancellationToken::new(),
            upstream_ports: Arc::default(),
        };
        let (frozen, closed, ports) = (proxy.frozen.clone(), proxy.closed.clone(), proxy.upstream_ports.clone());
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    () = closed.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => client,
                        Err(_) => continue,
                    },
                };
                let (frozen, closed) = (frozen.clone(), closed.clone());
                if frozen.is_cancelled() {
                    // A vanished node opens nothing new; hold the socket like the others.
                    tokio::spawn(async move {
                        closed.cancelled().await;
                        drop(client);
                    });
                    continue;
                }
                let upstream = TcpStream::connect(POSTGRES).await.expect("connect to PostgreSQL");
                ports
                    .lock()
                    .expect("lock")
                    .push(upstream.local_addr().expect("upstream addr").port());
                let (client_read, client_write) = client.into_split();
                let (upstream_read, upstream_write) = upstream.into_split();
                tokio::spawn(pump(
                    client_read,
                    upstream_write,
                    frozen.clone(),
                    closed.clone(),
                    Some(trigger),
                ));
                tokio::spawn(pump(upstream_read, client_write, frozen, closed, None));
            }
        });
        proxy
    }

    /// `url` with the proxy's address instead of PostgreSQL's.
    fn url_through(&self, url: &str) -> String {
        let mut url = url::Url::parse(url).expect("database URL");
        url.set_port(Some(self.addr.port())).expect("port");
        url.to_string()
    }

    /// Closes every socket, then waits until PostgreSQL has ended the backends the proxy fed
    /// (the test database can only be dropped without them).
    async fn close(&self, pool: &PgPool) {
        self.closed.cancel();
        let ports: Vec<i32> = self
            .upstream_ports
            .lock()
            .expect("lock")
            .iter()
            .map(|&p| i32::from(p))
            .collect();
        wait_for(Duration::from_secs(30), "the proxied backends to end", || async {
            let (left,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM pg_stat_activity WHERE client_port = ANY($1) AND client_addr = '127.0.0.1'",
            )
            .bind(&ports)
            .fetch_one(pool)
            .await
            .expect("pg_stat_activity");
            (left == 0).then_some(())
        })
        .await;
    }
}

/// Copies `from` to `to` until the proxy freezes, then holds both sockets open until it closes.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    frozen: CancellationToken,
    closed: CancellationToken,
    trigger: Option<FreezeBeforeCommitAfter>,
) {
    let mut buf = vec![0_u8; 64 * 1024];
    let mut armed = false;
    loop {
        let n = tokio::select! {
            () = frozen.cancelled() => break,
            () = closed.cancelled() => return,
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
        };
        let chunk = &buf[..n];
        if let Some(FreezeBeforeCommitAfter(marker)) = trigger {
            if contains(chunk, marker) {
                armed = true;
            } else if armed && contains(chunk, b"ROLLBACK") {
                armed = false;
            } else if armed && contains(chunk, b"COMMIT") {
                frozen.cancel();
            }
        }
        if frozen.is_cancelled() {
            break;
        }
        if to.write_all(chunk).await.is_err() {
            return;
        }
    }
    closed.cancelled().await;
    drop((from, to));
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `linkpulse_producer_leader` of a producer, once its loop has set it.
async fn leader_gauge(producer: &ProducerRun) -> Option<f64> {
    producer.metrics().await.get("linkpulse_producer_leader").copied()
}

/// Producer A cycles through the proxy; producer B, connected directly, follows. The proxy
/// freezes (A's node is gone, its TCP connections still answered): B leads and cycles within
/// 60 s, because A's lock connection is ended by the server (`idle_session_timeout`) once A's
/// checks stop arriving, whatever the keepalives see.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn a_standby_producer_cycles_within_a_minute_of_its_leaders_node_vanishing(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.add_links(&[app.url("/a")]).await;
    let direct = url_of(&app.pool).await;
    let proxy = TcpProxy::start(POSTGRES.parse().expect("address")).await;
    let env = [
        ("LINKPULSE_CYCLE_INTERVAL", "500ms"),
        ("LINKPULSE_CHECK_AFTER", "0s"),
        ("LINKPULSE_REFRESH_ENABLED", "false"),
    ];
    let a = ProducerRun::spawn(&proxy.url_through(&direct), &env).await;
    wait_for(Duration::from_secs(30), "producer A to cycle", || async {
        (a.cycles().await >= 1.0).then_some(())
    })
    .await;
    let b = ProducerRun::spawn(&direct, &env).await;
    wait_for(Duration::from_secs(30), "producer B to follow", || async {
        (leader_gauge(&b).await == Some(0.0)).then_some(())
    })
    .await;
    assert_eq!(leader_gauge(&a).await, Some(1.0), "premise: A leads");
    assert_eq!(b.cycles().await, 0.0, "premise: B does not cycle while A leads");

    proxy.set(Mode::Stall);
    let frozen = Instant::now();
    wait_for(TAKEOVER_TARGET, "producer B to cycle", || async {
        (b.cycles().await >= 1.0).then_some(())
    })
    .await;
    let took = frozen.elapsed();
    assert!(took <= TAKEOVER_TARGET, "B cycled {took:?} after A's node vanished");
    assert!(!b.logged("became the cycling leader").is_empty(), "B says it leads");
    eprintln!("standby producer cycled {took:?} after the leader's node vanished");

    assert_eq!(b.stop(Signal::SIGTERM).await, Some(0));
    a.stop(Signal::SIGKILL).await;
    // Closes every proxied connection (the test database can only be dropped without them).
    drop(proxy);
}

/// A production worker process on `database_url` with a short rescue window (maintenance every
/// second), no job kinds of the tests' own, its stderr echoed.
fn spawn_worker(database_url: &str, label: &'static str) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_linkpulse-worker"))
        .env("DATABASE_URL", database_url)
        .env("LINKPULSE_WORKER_ADDR", "127.0.0.1:0")
        .env("LINKPULSE_HEARTBEAT_INTERVAL", "500ms")
        .env("LINKPULSE_RESCUE_AFTER", "3s")
        .env("LINKPULSE_POLL_INTERVAL", "300ms")
        .env("RUST_LOG", "info")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn worker");
    let stderr = child.stderr.take().expect("stderr");
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[worker {label}] {line}");
        }
    });
    child
}

/// Backends of this database holding the maintenance lock in a transaction left idle.
async fn idle_maintenance_lock_holders(pool: &PgPool) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
           AND l.objid = ($1::int8 & 4294967295)::oid AND l.database = \
               (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND a.state = 'idle in transaction'",
    )
    .bind(MAINTENANCE_LOCK_KEY)
    .fetch_one(pool)
    .await
    .expect("pg_locks");
    n
}

/// Worker A, through the proxy, holds the maintenance lock when its node vanishes (the proxy
/// freezes right after A took the lock, before A's COMMIT). A job is then orphaned by a killed
/// worker: worker B, connected directly, rescues it within 60 s, because the server ends A's idle
/// lock transaction (`idle_in_transaction_session_timeout`).
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn maintenance_resumes_within_a_minute_of_its_holders_node_vanishing(pool: PgPool) {
    let direct = url_of(&pool).await;
    let proxy = FreezingProxy::start(FreezeBeforeCommitAfter(b"pg_try_advisory_xact_lock")).await;
    let a = spawn_worker(&proxy.url_through(&direct), "A");
    wait_for(Duration::from_secs(30), "worker A's maintenance pass", || async {
        proxy.frozen.is_cancelled().then_some(())
    })
    .await;
    let frozen = Instant::now();
    assert_eq!(
        idle_maintenance_lock_holders(&pool).await,
        1,
        "premise: A's idle transaction holds the maintenance lock"
    );

    // A job left running by a worker that died: only maintenance brings it back.
    let job = enqueue(
        &pool,
        &[(
            TestJob {
                sleep_ms: 600_000,
                ..TestJob::default()
            },
            None,
        )],
        5,
    )
    .await[0];
    let orphaner = WorkerProcess::spawn(&pool, &[]).await;
    wait_for(Duration::from_secs(30), "the job to run", || async {
        (crate::helpers::job(&pool, job).await.0 == "running").then_some(())
    })
    .await;
    orphaner.signal(Signal::SIGKILL);
    orphaner.wait(Duration::from_secs(10)).await;

    let b = spawn_worker(&direct, "B");
    wait_for(TAKEOVER_TARGET, "the orphaned job's rescue", || async {
        let (_, _, errors) = crate::helpers::job(&pool, job).await;
        errors
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["kind"] == "lost"))
            .then_some(())
    })
    .await;
    let took = frozen.elapsed();
    assert!(took <= TAKEOVER_TARGET, "rescued {took:?} after A's node vanished");
    eprintln!("maintenance resumed {took:?} after its holder's node vanished");
    drop((a, b));
    proxy.close(&pool).await;
}

/// Every pool the binaries open asks the server for TCP keepalives (the queue engine's `LISTEN`
/// connection clones its pool's options, the leader's lock connection starts from the same
/// options), so the server notices a vanished client in about 25 s, not two hours.
#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn every_pool_asks_the_server_for_tcp_keepalives(pool: PgPool) {
    use linkpulse_shared::db;
    let url = url_of(&pool).await;
    let pools = [
        ("producer", db::connect(&url, 1).await.expect("pool")),
        ("readers", db::connect_readers(&url, 1).await.expect("readers")),
        ("engine", db::connect_engine(&url).await.expect("engine")),
        ("handlers", db::connect_handler_pool(&url).await.expect("handlers")),
    ];
    for (name, pool) in pools {
        let (idle, interval, count): (String, String, String) = sqlx::query_as(
            "SELECT current_setting('tcp_keepalives_idle'), current_setting('tcp_keepalives_interval'), \
             current_setting('tcp_keepalives_count')",
        )
        .fetch_one(&pool)
        .await
        .expect("settings");
        assert_eq!(
            (idle.as_str(), interval.as_str(), count.as_str()),
            ("10", "5", "3"),
            "the {name} pool"
        );
        pool.close().await;
    }
}
