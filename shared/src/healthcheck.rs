//! `producer healthcheck` and `worker healthcheck`: a container health check for images without a
//! shell or curl. GETs the process's own `/readyz` (or `/livez`) on its configured address and maps
//! the answer to an exit code: 0 for a 2xx, 1 for anything else (refused, timed out, 503).
//!
//! Reads only the address setting (`LINKPULSE_ADMIN_ADDR` or `LINKPULSE_WORKER_ADDR`), not the
//! whole configuration: a probe needs no `DATABASE_URL`, and sets up no telemetry.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use crate::config::{ConfigError, Env};

/// How long one probe may take in all (connect and answer): below Docker's default 30 s timeout,
/// above the 2 s the servers give their database check.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Where to connect for a server bound to `bound`: a wildcard address (`0.0.0.0`, `::`) is
/// reached on the loopback address of its family.
pub fn target(bound: SocketAddr) -> SocketAddr {
    let ip = match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bound.port())
}

/// The address in `var` (or `default`), as the server reads it.
///
/// # Errors
///
/// [`ConfigError::Invalid`] when the variable is set but not an address.
pub fn address<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    var: &'static str,
    default: &str,
) -> Result<SocketAddr, ConfigError> {
    let default = default
        .parse()
        .map_err(|e: std::net::AddrParseError| ConfigError::Invalid {
            var,
            value: default.to_owned(),
            reason: e.to_string(),
        })?;
    env.parse(var, default)
}

/// GETs `http://{target(bound)}{path}`; `Ok` with the status line's text for a 2xx.
///
/// # Errors
///
/// A description of what went wrong: no answer within [`TIMEOUT`], refused, or a non-2xx status.
pub async fn probe(bound: SocketAddr, path: &str) -> Result<String, String> {
    let url = format!("http://{}{path}", target(bound));
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", linkpulse_util::errors::error_chain(&e)))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    // The servers answer a word ("ready", "draining"); anything else is cut to one short line.
    let body: String = body
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(200)
        .collect();
    if status.is_success() {
        Ok(format!("GET {url}: {status} {body}"))
    } else {
        Err(format!("GET {url}: {status} {body}"))
    }
}

/// The whole subcommand: the address in `env`'s `var` (default `default`), `/livez` when `live`,
/// else `/readyz`; prints the outcome and returns exit code 0 or 1. The binaries pass their parsed
/// command line, so `--admin-addr`/`--worker-addr` work as the variables do.
pub async fn run<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    var: &'static str,
    default: &str,
    live: bool,
) -> ExitCode {
    let bound = match address(env, var, default) {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("unhealthy: {e}");
            return ExitCode::from(1);
        }
    };
    let path = if live { "/livez" } else { "/readyz" };
    match probe(bound, path).await {
        Ok(line) => {
            println!("healthy: {line}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("unhealthy: {reason}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_addresses_are_probed_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:9090".parse().expect("addr");
        assert_eq!(target(v4), "127.0.0.1:9090".parse().expect("addr"));
        let v6: SocketAddr = "[::]:8080".parse().expect("addr");
        assert_eq!(target(v6), "[::1]:8080".parse().expect("addr"));
        let exact: SocketAddr = "10.1.2.3:8080".parse().expect("addr");
        assert_eq!(target(exact), exact);
    }

    #[test]
    fn the_address_comes_from_the_variable_or_the_default() {
        let set = Env::new(|k| (k == "X_ADDR").then(|| "127.0.0.1:1234".to_owned()));
        assert_eq!(
            address(&set, "X_ADDR", "0.0.0.0:9090").expect("addr"),
            "127.0.0.1:1234".parse().expect("addr")
        );
        let unset = Env::new(|_| None);
        assert_eq!(
            address(&unset, "X_ADDR", "0.0.0.0:9090").expect("addr"),
            "0.0.0.0:9090".parse().expect("addr")
        );
        let bad = Env::new(|_| Some("nope".to_owned()));
        assert!(address(&bad, "X_ADDR", "0.0.0.0:9090").is_err());
    }
}
