//! `producer healthcheck` and `worker healthcheck`, the compose health checks (the image has no
//! shell): exit 0 against a running process, 1 when nothing listens on the configured address.

use std::process::Stdio;
use std::time::Duration;

use sqlx::PgPool;
use tokio::process::Command;

use crate::helpers::url_of;
use crate::hostile::ServiceProcess;

/// Runs `BIN healthcheck ARGS` with only `var=addr` set (no `DATABASE_URL`: it needs none) and
/// returns its exit code and output.
async fn healthcheck(bin: &str, var: &str, addr: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut command = Command::new(bin);
    command
        .arg("healthcheck")
        .args(args)
        .env_clear()
        .env(var, addr)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("the healthcheck exits in time")
        .expect("run healthcheck");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

/// An address where nothing listens: a port the OS handed out, closed again.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr.to_string()
}

#[sqlx::test(migrator = "linkpulse_shared::db::MIGRATOR")]
async fn healthcheck_exits_0_against_a_running_producer_and_worker_and_1_when_nothing_listens(pool: PgPool) {
    let database_url = url_of(&pool).await;
    let producer_bin = env!("CARGO_BIN_EXE_linkpulse-producer");
    let worker_bin = env!("CARGO_BIN_EXE_linkpulse-worker");

    let producer = ServiceProcess::spawn(
        &[
            ("DATABASE_URL", database_url.clone()),
            ("LINKPULSE_ADMIN_ADDR", "127.0.0.1:0".into()),
            ("RUST_LOG", "info".into()),
        ],
        &["serve"],
    );
    let worker = ServiceProcess::spawn_worker(&[
        ("DATABASE_URL", database_url),
        ("LINKPULSE_WORKER_ADDR", "127.0.0.1:0".into()),
        ("RUST_LOG", "info".into()),
    ]);
    let admin = producer.logged_addr("admin server listening").await;
    let health = worker.logged_addr("worker ready").await;

    for args in [&[][..], &["--live"][..]] {
        let (code, out) = healthcheck(producer_bin, "LINKPULSE_ADMIN_ADDR", &admin, args).await;
        assert_eq!(code, Some(0), "producer healthcheck {args:?}: {out}");
        assert!(out.contains("healthy: GET http://"), "{out}");
        let (code, out) = healthcheck(worker_bin, "LINKPULSE_WORKER_ADDR", &health, args).await;
        assert_eq!(code, Some(0), "worker healthcheck {args:?}: {out}");
    }
    // A wildcard bind address is probed on loopback, as in the image (0.0.0.0:PORT).
    let port = health.rsplit(':').next().expect("port");
    let (code, out) = healthcheck(worker_bin, "LINKPULSE_WORKER_ADDR", &format!("0.0.0.0:{port}"), &[]).await;
    assert_eq!(code, Some(0), "{out}");

    let nothing = closed_port();
    let (code, out) = healthcheck(producer_bin, "LINKPULSE_ADMIN_ADDR", &nothing, &[]).await;
    assert_eq!(code, Some(1), "producer healthcheck with nothing listening: {out}");
    assert!(out.contains("unhealthy"), "{out}");
    let (code, out) = healthcheck(worker_bin, "LINKPULSE_WORKER_ADDR", &nothing, &[]).await;
    assert_eq!(code, Some(1), "worker healthcheck with nothing listening: {out}");
    // A bad address is the same verdict: unhealthy, never a crash.
    let (code, out) = healthcheck(worker_bin, "LINKPULSE_WORKER_ADDR", "not-an-address", &[]).await;
    assert_eq!(code, Some(1), "{out}");
    drop((producer, worker));
}
