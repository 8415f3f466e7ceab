//! The network guard: fetches of user URLs never reach loopback, private, link-local (cloud
//! metadata) or otherwise non-public addresses, whatever form the address takes.
//!
//! Two gates, because hyper skips the resolver for IP-literal hosts: [`check_host`] runs on every
//! URL (first request and each redirect hop) before any connection, and [`GuardedResolver`]
//! resolves names itself and refuses a name if *any* of its addresses is forbidden, so the
//! connection only ever goes to addresses that were validated (no DNS rebinding between check
//! and connect).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Who may be reached.
#[derive(Debug, Clone, Default)]
pub struct GuardPolicy {
    /// `LINKPULSE_ALLOW_PRIVATE_NETWORKS`: turn the guard off (tests, self-hosting).
    pub allow_private_networks: bool,
    /// `LINKPULSE_ALLOWED_HOSTS`: host names exempt from the guard (lower-case).
    pub allowed_hosts: HashSet<String>,
}

/// Why the guard refused a URL; the fetch never connected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused by the network guard: {0}")]
pub struct Refused(pub String);

impl GuardPolicy {
    fn exempt(&self, host: &str) -> bool {
        self.allow_private_networks || self.allowed_hosts.contains(&host.to_ascii_lowercase())
    }

    /// Checks a URL's scheme, userinfo and host (names are checked again when resolved).
    ///
    /// # Errors
    ///
    /// [`Refused`] with the reason.
    pub fn check_url(&self, url: &Url) -> Result<(), Refused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused(format!("scheme {:?} is not allowed", url.scheme())));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refused("URLs with credentials are not fetched".into()));
        }
        let host = url.host().ok_or_else(|| Refused("URL has no host".into()))?;
        check_host(self, &host)
    }
}

/// Checks one host: IP literals against the forbidden ranges, `localhost` names by name.
///
/// # Errors
///
/// [`Refused`] with the reason.
pub fn check_host(policy: &GuardPolicy, host: &Host<&str>) -> Result<(), Refused> {
    let text = host.to_string();
    if policy.exempt(text.trim_start_matches('[').trim_end_matches(']')) {
        return Ok(());
    }
    match host {
        Host::Ipv4(ip) => forbidden_reason(IpAddr::V4(*ip)).map_or(Ok(()), |r| Err(Refused(format!("{ip} is {r}")))),
        Host::Ipv6(ip) => forbidden_reason(IpAddr::V6(*ip)).map_or(Ok(()), |r| Err(Refused(format!("{ip} is {r}")))),
        Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name == "localhost" || name.ends_with(".localhost") {
                Err(Refused(format!("{name} is a loopback name")))
            } else {
                Ok(())
            }
        }
    }
}

/// Why `ip` must not be fetched, or `None` if it is a public address.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let reason = match (a, b, c) {
        (0, _, _) => "an unspecified (0.0.0.0/8) address",
        (127, _, _) => "a loopback address",
        (10, _, _) => "a private address",
        (172, 16..=31, _) => "a private address",
        (192, 168, _) => "a private address",
        (169, 254, _) => "a link-local address (cloud metadata lives here)",
        (100, 64..=127, _) => "a carrier-grade NAT address",
        (192, 0, 0) => "an IETF protocol assignment address",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation address",
        (198, 18..=19, _) => "a benchmarking address",
        (224..=239, _, _) => "a multicast address",
        (240..=255, _, _) => "a reserved or broadcast address",
        _ => return None,
    };
    Some(reason)
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    if ip.is_unspecified() {
        return Some("the unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    // IPv4 embedded in IPv6: mapped (::ffff:a.b.c.d), compatible (::a.b.c.d), NAT64 (64:ff9b::),
    // 6to4 (2002:AABB:CCDD::) — judged by the IPv4 address they carry.
    let embedded = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_reason(v4).map(|_| "an IPv4-mapped form of a forbidden address");
    }
    if segments[..6] == [0, 0, 0, 0, 0, 0] {
        return v4_reason(embedded(segments[6], segments[7])).map(|_| "an IPv4-compatible form of a forbidden address");
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return v4_reason(embedded(segments[6], segments[7])).map(|_| "a NAT64 form of a forbidden address");
    }
    if segments[0] == 0x2002 {
        return v4_reason(embedded(segments[1], segments[2])).map(|_| "a 6to4 form of a forbidden address");
    }
    match segments[0] {
        s if s & 0xfe00 == 0xfc00 => Some("a unique-local (private) address"),
        s if s & 0xffc0 == 0xfe80 => Some("a link-local address"),
        s if s & 0xff00 == 0xff00 => Some("a multicast address"),
        0x2001 if segments[1] == 0x0db8 => Some("a documentation address"),
        _ => None,
    }
}

/// A DNS resolver that refuses names resolving to any forbidden address.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<GuardPolicy>,
}

impl GuardedResolver {
    /// A resolver enforcing `policy`.
    pub fn new(policy: Arc<GuardPolicy>) -> Self {
        Self { policy }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !policy.exempt(&host) {
                for addr in &addrs {
                    if let Some(reason) = forbidden_reason(addr.ip()) {
                        return Err(Box::new(Refused(format!("{host} resolves to {}, {reason}", addr.ip())))
                            as Box<dyn std::error::Error + Send + Sync>);
                    }
                }
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> bool {
        GuardPolicy::default()
            .check_url(&Url::parse(url).expect("url"))
            .is_err()
    }

    #[test]
    fn every_form_of_a_private_address_is_refused() {
        for url in [
            "http://127.0.0.1/",
            "http://localhost/",
            "http://app.localhost./",
            "http://[::1]/",
            "http://0x7f000001/",
            "http://2130706433/",
            "http://017700000001/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://[64:ff9b::7f00:1]/",
            "http://[2002:7f00:1::]/",
            "http://10.0.0.1/",
            "http://172.20.1.1/",
            "http://192.168.1.1/",
            "http://100.100.100.100/",
            "http://0.0.0.0/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://224.0.0.1/",
            "http://192.0.2.1/",
            "ftp://example.com/",
            "http://user:pw@example.com/",
        ] {
            assert!(refused(url), "{url} should be refused");
        }
    }

    #[test]
    fn public_addresses_and_names_pass() {
        for url in [
            "http://93.184.216.34/",
            "https://example.com/",
            "http://[2606:4700::1111]/",
            "http://172.32.0.1/",
        ] {
            assert!(!refused(url), "{url} should pass");
        }
    }

    #[test]
    fn the_escape_hatches_let_private_hosts_through() {
        let url = Url::parse("http://127.0.0.1:8080/").expect("url");
        let open = GuardPolicy {
            allow_private_networks: true,
            ..GuardPolicy::default()
        };
        assert!(open.check_url(&url).is_ok());
        let allowed = GuardPolicy {
            allowed_hosts: ["127.0.0.1".to_owned()].into(),
            ..GuardPolicy::default()
        };
        assert!(allowed.check_url(&url).is_ok());
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_by_the_resolver() {
        let resolver = GuardedResolver::new(Arc::new(GuardPolicy::default()));
        let name: Name = "localhost".parse().expect("name");
        let err = resolver.resolve(name).await.err().expect("refused");
        assert!(err.to_string().contains("resolves to"), "{err}");
    }
}
