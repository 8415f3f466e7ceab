//! The network guard: fetches of user URLs never reach loopback, private, link-local (cloud
//! metadata) or otherwise non-public addresses, whatever form the address takes.
//!
//! Two gates, because hyper skips the resolver for IP-literal hosts: [`GuardPolicy::check_url`]
//! runs on every URL (first request and each redirect hop) before any connection, and
//! [`GuardedResolver`] resolves names itself and refuses a name if *any* of its addresses is
//! forbidden, so the connection only ever goes to addresses that were validated (no DNS
//! rebinding between check and connect).
//!
//! The refused ranges are one table of CIDRs per family ([`V4_RANGES`], [`V6_RANGES`]): a reader
//! audits the list, not a tangle of bit tests. IPv6 forms that carry an IPv4 address (mapped,
//! translated, compatible, NAT64, 6to4, Teredo) are judged by the address they carry.
//!
//! Two escape hatches with different reach: `LINKPULSE_ALLOW_PRIVATE_NETWORKS` opens the
//! [`Reach::Private`] ranges (self-hosting, tests) but never the [`Reach::Sensitive`] ones —
//! link-local space and the cloud metadata endpoints, where a fetch turns into credential theft —
//! which only a host named in `LINKPULSE_ALLOWED_HOSTS` may reach.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::{Ipv4Net, Ipv6Net};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Who may be reached.
#[derive(Debug, Clone, Default)]
pub struct GuardPolicy {
    /// `LINKPULSE_ALLOW_PRIVATE_NETWORKS`: open the private ranges (tests, self-hosting); link-local
    /// ranges and cloud metadata endpoints stay refused.
    pub allow_private_networks: bool,
    /// `LINKPULSE_ALLOWED_HOSTS`: host names (or IP literals) exempt from the guard entirely
    /// (lower-case).
    pub allowed_hosts: HashSet<String>,
}

/// Why the guard refused a URL; the fetch never connected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused by the network guard: {0}")]
pub struct Refused(pub String);

/// A name the resolver could not resolve: the fetcher's "no such host", typed here because we own
/// the resolver (no guessing from error text).
#[derive(Debug, thiserror::Error)]
#[error("no such host {host}: {source}")]
pub struct LookupFailed {
    /// The name looked up.
    pub host: String,
    /// What the system resolver said.
    #[source]
    pub source: std::io::Error,
}

/// Which escape hatch opens a refused range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Opened by `LINKPULSE_ALLOW_PRIVATE_NETWORKS` (loopback, RFC 1918, ULA, …).
    Private,
    /// Opened only by naming the host in `LINKPULSE_ALLOWED_HOSTS`: link-local space and cloud
    /// metadata endpoints.
    Sensitive,
}

/// A refused range: the network, what it is, and who may open it.
#[derive(Debug, Clone, Copy)]
pub struct Range<N> {
    /// The CIDR.
    pub net: N,
    /// What it is, for the refusal's reason.
    pub what: &'static str,
    /// Which escape hatch opens it.
    pub reach: Reach,
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8, what: &'static str, reach: Reach) -> Range<Ipv4Net> {
    Range {
        net: Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len),
        what,
        reach,
    }
}

const fn v6(s: [u16; 8], len: u8, what: &'static str, reach: Reach) -> Range<Ipv6Net> {
    Range {
        net: Ipv6Net::new_assert(Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]), len),
        what,
        reach,
    }
}

use Reach::{Private, Sensitive};

/// Refused IPv4 ranges (IANA special-purpose registry, less the globally reachable entries).
/// The cloud metadata address `169.254.169.254` sits in the link-local range.
pub const V4_RANGES: &[Range<Ipv4Net>] = &[
    v4(0, 0, 0, 0, 8, "an unspecified (0.0.0.0/8) address", Private),
    v4(10, 0, 0, 0, 8, "a private address", Private),
    v4(100, 64, 0, 0, 10, "a carrier-grade NAT address", Private),
    v4(127, 0, 0, 0, 8, "a loopback address", Private),
    v4(
        169,
        254,
        0,
        0,
        16,
        "a link-local address (cloud metadata lives here)",
        Sensitive,
    ),
    v4(172, 16, 0, 0, 12, "a private address", Private),
    v4(192, 0, 0, 0, 24, "an IETF protocol assignment address", Private),
    v4(192, 0, 2, 0, 24, "a documentation address", Private),
    v4(192, 88, 99, 0, 24, "a 6to4 relay anycast address", Private),
    v4(192, 168, 0, 0, 16, "a private address", Private),
    v4(198, 18, 0, 0, 15, "a benchmarking address", Private),
    v4(198, 51, 100, 0, 24, "a documentation address", Private),
    v4(203, 0, 113, 0, 24, "a documentation address", Private),
    v4(224, 0, 0, 0, 4, "a multicast address", Private),
    v4(240, 0, 0, 0, 4, "a reserved or broadcast address", Private),
];

/// Refused IPv6 ranges, checked in order (the first match wins, so the AWS metadata address is
/// listed before the unique-local range that holds it). Ranges that embed an IPv4 address are not
/// here: see [`embedded_v4`].
pub const V6_RANGES: &[Range<Ipv6Net>] = &[
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128, "the unspecified address", Private),
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128, "a loopback address", Private),
    v6(
        [0x64, 0xff9b, 1, 0, 0, 0, 0, 0],
        48,
        "a local-use NAT64 address",
        Private,
    ),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "a discard-only address", Private),
    v6([0x2001, 0x2, 0, 0, 0, 0, 0, 0], 48, "a benchmarking address", Private),
    v6([0x2001, 0x10, 0, 0, 0, 0, 0, 0], 28, "an ORCHID address", Private),
    v6([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28, "an ORCHIDv2 address", Private),
    v6(
        [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
        32,
        "a documentation address",
        Private,
    ),
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "a documentation address", Private),
    v6(
        [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254],
        128,
        "a cloud metadata address",
        Sensitive,
    ),
    v6(
        [0xfc00, 0, 0, 0, 0, 0, 0, 0],
        7,
        "a unique-local (private) address",
        Private,
    ),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "a link-local address", Sensitive),
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "a site-local address", Private),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "a multicast address", Private),
];

/// Host names of cloud metadata services: refused like link-local addresses, whatever they
/// resolve to, unless named in `LINKPULSE_ALLOWED_HOSTS`.
pub const METADATA_HOSTS: &[&str] = &[
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
];

/// The IPv6 forms that carry an IPv4 address, as (prefix, how to read the IPv4 address, name).
/// Teredo (`2001::/32`) carries the client's address inverted in its last 32 bits; a Teredo
/// address is refused whatever it carries (nothing legitimate is a Teredo link target), with the
/// carried address deciding only which escape hatch could open it.
fn embedded_v4(ip: Ipv6Addr) -> Option<(Ipv4Addr, &'static str)> {
    let s = ip.segments();
    let v4_of = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => Some((v4_of(hi, lo), "an IPv4-mapped form of")),
        [0, 0, 0, 0, 0xffff, 0, hi, lo] => Some((v4_of(hi, lo), "an IPv4-translated form of")),
        [0, 0, 0, 0, 0, 0, hi, lo] => Some((v4_of(hi, lo), "an IPv4-compatible form of")),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some((v4_of(hi, lo), "a NAT64 form of")),
        [0x2002, hi, lo, ..] => Some((v4_of(hi, lo), "a 6to4 form of")),
        [0x2001, 0, _, _, _, _, hi, lo] => Some((v4_of(!hi, !lo), "a Teredo address carrying")),
        _ => None,
    }
}

/// Why `ip` must not be fetched and which escape hatch could open it, or `None` for a public
/// address.
pub fn classify(ip: IpAddr) -> Option<(String, Reach)> {
    match ip {
        IpAddr::V4(ip) => V4_RANGES
            .iter()
            .find(|r| r.net.contains(&ip))
            .map(|r| (r.what.to_owned(), r.reach)),
        IpAddr::V6(ip) => {
            // `::` and `::1` first: they also match the IPv4-compatible pattern.
            if let Some(r) = V6_RANGES.iter().take(2).find(|r| r.net.contains(&ip)) {
                return Some((r.what.to_owned(), r.reach));
            }
            if let Some((carried, form)) = embedded_v4(ip) {
                let inner = classify(IpAddr::V4(carried));
                let teredo = form.starts_with("a Teredo");
                return match inner {
                    Some((what, reach)) => Some((format!("{form} {what}"), reach)),
                    None if teredo => Some(("a Teredo tunnel address".to_owned(), Private)),
                    None => None,
                };
            }
            V6_RANGES
                .iter()
                .find(|r| r.net.contains(&ip))
                .map(|r| (r.what.to_owned(), r.reach))
        }
    }
}

/// Why `ip` must not be fetched (under the default policy), or `None` if it is a public address.
pub fn forbidden_reason(ip: IpAddr) -> Option<String> {
    classify(ip).map(|(what, _)| what)
}

impl GuardPolicy {
    fn allowed_host(&self, host: &str) -> bool {
        !self.allowed_hosts.is_empty() && self.allowed_hosts.contains(&host.to_ascii_lowercase())
    }

    /// Whether a refused range of `reach` is opened by this policy's private-network switch.
    fn opens(&self, reach: Reach) -> bool {
        self.allow_private_networks && reach == Reach::Private
    }

    /// What `ip` is when this policy refuses it (its range is not opened), else `None`.
    fn refusal(&self, ip: IpAddr) -> Option<String> {
        classify(ip).and_then(|(what, reach)| (!self.opens(reach)).then_some(what))
    }

    /// Refuses `ip` unless this policy opens its range.
    fn check_ip(&self, ip: IpAddr) -> Result<(), Refused> {
        self.refusal(ip)
            .map_or(Ok(()), |what| Err(Refused(format!("{ip} is {what}"))))
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

/// Checks one host: IP literals against the refused ranges, loopback and metadata names by name.
///
/// # Errors
///
/// [`Refused`] with the reason.
pub fn check_host(policy: &GuardPolicy, host: &Host<&str>) -> Result<(), Refused> {
    let text = host.to_string();
    if policy.allowed_host(text.trim_start_matches('[').trim_end_matches(']')) {
        return Ok(());
    }
    match host {
        Host::Ipv4(ip) => policy.check_ip(IpAddr::V4(*ip)),
        Host::Ipv6(ip) => policy.check_ip(IpAddr::V6(*ip)),
        Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if policy.allowed_host(&name) {
                Ok(())
            } else if METADATA_HOSTS.contains(&name.as_str()) {
                Err(Refused(format!("{name} is a cloud metadata endpoint")))
            } else if (name == "localhost" || name.ends_with(".localhost")) && !policy.opens(Reach::Private) {
                Err(Refused(format!("{name} is a loopback name")))
            } else {
                Ok(())
            }
        }
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
            let looked_up = tokio::net::lookup_host((host.as_str(), 0)).await.map(Iterator::collect);
            let addrs: Vec<SocketAddr> = match looked_up {
                Ok(addrs) => addrs,
                Err(source) => {
                    return Err(Box::new(LookupFailed { host, source }) as Box<dyn std::error::Error + Send + Sync>);
                }
            };
            if !policy.allowed_host(host.trim_end_matches('.')) {
                for addr in &addrs {
                    if let Some(what) = policy.refusal(addr.ip()) {
                        return Err(Box::new(Refused(format!("{host} resolves to {}, {what}", addr.ip())))
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
    use proptest::prelude::*;

    fn refused_by(policy: &GuardPolicy, url: &str) -> bool {
        policy.check_url(&Url::parse(url).expect("url")).is_err()
    }

    fn refused(url: &str) -> bool {
        refused_by(&GuardPolicy::default(), url)
    }

    fn private_open() -> GuardPolicy {
        GuardPolicy {
            allow_private_networks: true,
            ..GuardPolicy::default()
        }
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
    fn the_gaps_once_connected_to_are_refused() {
        for url in [
            // local-use NAT64
            "http://[64:ff9b:1::a00:1]/",
            // IPv4-translated loopback
            "http://[::ffff:0:7f00:1]/",
            // site-local
            "http://[fec0::1]/",
            // Teredo, carrying a public and a loopback client address
            "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
            "http://[2001:0:4136:e378::80ff:fffe]/",
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
            "http://[::ffff:93.184.216.34]/",
            "http://[64:ff9b::5db8:d822]/",
        ] {
            assert!(!refused(url), "{url} should pass");
        }
    }

    #[test]
    fn allowing_private_networks_never_opens_link_local_or_metadata_endpoints() {
        let open = private_open();
        for url in [
            "http://127.0.0.1:8080/",
            "http://10.1.2.3/",
            "http://[fd00::1]/",
            "http://localhost/",
        ] {
            assert!(
                !refused_by(&open, url),
                "{url} should pass with private networks allowed"
            );
        }
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://169.254.1.1/",
            "http://[fe80::1]/",
            "http://[fd00:ec2::254]/",
            "http://[::ffff:169.254.169.254]/",
            "http://[::ffff:0:a9fe:a9fe]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[2002:a9fe:a9fe::1]/",
            "http://2852039166/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://METADATA.GOOGLE.INTERNAL./",
        ] {
            assert!(
                refused_by(&open, url),
                "{url} must stay refused with private networks allowed"
            );
        }
    }

    #[test]
    fn a_host_named_in_allowed_hosts_is_exempt_even_from_the_sensitive_ranges() {
        let allowed = GuardPolicy {
            allowed_hosts: ["127.0.0.1", "169.254.169.254", "metadata.google.internal"]
                .map(str::to_owned)
                .into(),
            ..GuardPolicy::default()
        };
        for url in [
            "http://127.0.0.1:8080/",
            "http://169.254.169.254/",
            "http://metadata.google.internal/",
        ] {
            assert!(!refused_by(&allowed, url), "{url} is allowed by name");
        }
        assert!(
            refused_by(&allowed, "http://169.254.169.253/"),
            "only the named host is exempt"
        );
    }

    #[test]
    fn the_resolver_applies_the_same_reach_as_the_literal_check() {
        let open = private_open();
        assert_eq!(open.refusal("127.0.0.1".parse().expect("ip")), None);
        assert!(open.refusal("169.254.169.254".parse().expect("ip")).is_some());
        assert!(
            GuardPolicy::default()
                .refusal("127.0.0.1".parse().expect("ip"))
                .is_some()
        );
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_by_the_resolver() {
        let resolver = GuardedResolver::new(Arc::new(GuardPolicy::default()));
        let name: Name = "localhost".parse().expect("name");
        let err = resolver.resolve(name).await.err().expect("refused");
        assert!(err.to_string().contains("resolves to"), "{err}");
    }

    /// An IPv4 address inside a refused range, with the range.
    fn refused_v4() -> impl Strategy<Value = (Ipv4Addr, Reach)> {
        (0..V4_RANGES.len(), any::<u32>()).prop_map(|(i, bits)| {
            let range = &V4_RANGES[i];
            let host_mask = !u32::from(range.net.netmask());
            let ip = Ipv4Addr::from(u32::from(range.net.network()) | (bits & host_mask));
            (ip, range.reach)
        })
    }

    /// An IPv6 address inside a refused range (the table's or an IPv4-carrying form of a refused
    /// IPv4 address), with the reach that should apply.
    fn refused_v6() -> impl Strategy<Value = (Ipv6Addr, Reach)> {
        let table = (0..V6_RANGES.len(), any::<u128>()).prop_map(|(i, bits)| {
            let range = &V6_RANGES[i];
            let host_mask = !u128::from(range.net.netmask());
            let ip = Ipv6Addr::from(u128::from(range.net.network()) | (bits & host_mask));
            // A few table ranges overlap sensitive ones listed earlier (fd00:ec2::254 in fc00::/7):
            // the address's own class decides.
            let reach = classify(IpAddr::V6(ip)).map_or(range.reach, |(_, reach)| reach);
            (ip, reach)
        });
        let carried = (refused_v4(), 0..5usize, any::<u32>()).prop_map(|((v4, reach), form, noise)| {
            let [a, b, c, d] = v4.octets();
            let hi = u16::from_be_bytes([a, b]);
            let lo = u16::from_be_bytes([c, d]);
            let n = noise as u16;
            let segments = match form {
                0 => [0, 0, 0, 0, 0, 0xffff, hi, lo],
                1 => [0, 0, 0, 0, 0xffff, 0, hi, lo],
                2 => [0x64, 0xff9b, 0, 0, 0, 0, hi, lo],
                3 => [0x2002, hi, lo, n, 0, 0, 0, 1],
                _ => [0x2001, 0, n, n, 0, 0, !hi, !lo],
            };
            (Ipv6Addr::from(segments), reach)
        });
        prop_oneof![table, carried]
    }

    /// Every spelling of an IPv4 address the WHATWG URL parser turns back into it.
    fn v4_spellings(ip: Ipv4Addr) -> Vec<String> {
        let [a, b, c, d] = ip.octets();
        let n = u32::from(ip);
        let dotted = format!("{a}.{b}.{c}.{d}");
        let fullwidth: String = dotted
            .chars()
            .map(|ch| match ch.to_digit(10) {
                Some(digit) => char::from_u32(0xff10 + digit).unwrap_or(ch),
                None => ch,
            })
            .collect();
        let percent: String = dotted.bytes().map(|byte| format!("%{byte:02X}")).collect();
        vec![
            dotted.clone(),
            format!("{dotted}."),
            n.to_string(),
            format!("0x{n:x}"),
            format!("0X{n:X}"),
            format!("0{n:o}"),
            format!("0x{a:x}.0x{b:x}.0x{c:x}.0x{d:x}"),
            format!("0{a:o}.0{b:o}.0{c:o}.0{d:o}"),
            format!("{a}.{b}.{}", u32::from(c) << 8 | u32::from(d)),
            format!("{a}.{}", n & 0x00ff_ffff),
            format!("[::ffff:{dotted}]"),
            format!("[::ffff:{:x}:{:x}]", n >> 16, n & 0xffff),
            format!("[::ffff:0:{dotted}]"),
            format!("[64:ff9b::{dotted}]"),
            fullwidth,
            percent,
        ]
    }

    /// Every spelling of an IPv6 address the URL parser accepts.
    fn v6_spellings(ip: Ipv6Addr) -> Vec<String> {
        let s = ip.segments();
        let full = s.map(|x| format!("{x:04x}")).join(":");
        let [.., w, x, y, z] = ip.octets();
        let dotted_tail = format!(
            "{}:{w}.{x}.{y}.{z}",
            s[..6].iter().map(|x| format!("{x:x}")).collect::<Vec<_>>().join(":")
        );
        vec![
            format!("[{ip}]"),
            format!("[{full}]"),
            format!("[{}]", full.to_uppercase()),
            format!("[{dotted_tail}]"),
        ]
    }

    fn assert_refused_in_every_spelling(spellings: Vec<String>, reach: Reach) -> Result<(), TestCaseError> {
        for spelling in spellings {
            let url = Url::parse(&format!("http://{spelling}/x"))
                .map_err(|e| TestCaseError::fail(format!("{spelling} did not parse: {e}")))?;
            prop_assert!(
                GuardPolicy::default().check_url(&url).is_err(),
                "{spelling} ({url}) was not refused"
            );
            if reach == Reach::Sensitive {
                prop_assert!(
                    private_open().check_url(&url).is_err(),
                    "{spelling} ({url}) is sensitive but passed with private networks allowed"
                );
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_address_in_a_refused_v4_range_is_refused_in_every_spelling((ip, reach) in refused_v4()) {
            assert_refused_in_every_spelling(v4_spellings(ip), reach)?;
        }

        #[test]
        fn any_address_in_a_refused_v6_range_is_refused_in_every_spelling((ip, reach) in refused_v6()) {
            assert_refused_in_every_spelling(v6_spellings(ip), reach)?;
        }
    }
}
