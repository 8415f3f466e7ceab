//! Why a fetch got no response, and how a transport failure becomes one of those reasons.
//!
//! [`FetchError::from_reqwest`] reads the *types* in a failure's cause chain, not its text: the
//! guard's [`Refused`] and the resolver's [`LookupFailed`] are ours, TLS failures are
//! [`rustls::Error`]s, and socket failures are [`std::io::Error`]s with a kind or an OS code. One
//! case has no type, and is matched by text (see [`TLS_HANDSHAKE_EOF`]).

use std::error::Error as StdError;
use std::time::Duration;

use super::guard::{LookupFailed, Refused};

/// Why a fetch got no response. Classified by the check into dead, transient or blocked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The guard refused the URL or a redirect target; nothing was connected to.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The host name does not exist.
    #[error("no such host: {0}")]
    NoSuchHost(String),
    /// A deadline passed: which phase was waiting, and the limit that ran out.
    #[error("timed out after {limit:?} {phase}")]
    Timeout {
        /// What the fetch was waiting for.
        phase: TimeoutPhase,
        /// The limit that ran out (the connect timeout, or the whole fetch's deadline).
        limit: Duration,
    },
    /// Connection refused, reset or closed early.
    #[error("connection failed: {0}")]
    Connect(String),
    /// TLS handshake or certificate failure.
    #[error("TLS failure: {0}")]
    Tls(String),
    /// More than [`MAX_REDIRECTS`](super::MAX_REDIRECTS) hops.
    #[error("more than {0} redirects")]
    TooManyRedirects(u32),
    /// A redirect came back to a URL already visited.
    #[error("redirect loop at {0}")]
    RedirectLoop(String),
    /// A redirect without a usable `Location`.
    #[error("invalid redirect: {0}")]
    InvalidRedirect(String),
    /// Our side cannot make requests (no egress, out of file descriptors): never the link's fault.
    #[error("local failure: {0}")]
    Local(String),
    /// Any other transport failure.
    #[error("request failed: {0}")]
    Other(String),
}

/// What a timed-out fetch was waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeoutPhase {
    /// The TCP (and TLS) connection.
    Connect,
    /// The response's status line and headers.
    Headers,
    /// The rest of the body, after the headers arrived.
    Body,
}

impl std::fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Connect => "connecting",
            Self::Headers => "waiting for the response headers",
            Self::Body => "reading the body",
        })
    }
}

impl TimeoutPhase {
    /// A small number for an atomic: the hops record their phase while a deadline may cut them.
    pub(super) fn code(self) -> u8 {
        match self {
            Self::Connect => 0,
            Self::Headers => 1,
            Self::Body => 2,
        }
    }

    /// The phase of a [`TimeoutPhase::code`].
    pub(super) fn from_code(code: u8) -> Self {
        match code {
            0 => Self::Connect,
            2 => Self::Body,
            _ => Self::Headers,
        }
    }
}

/// The message tokio-rustls gives a peer that closes the connection in the middle of the TLS
/// handshake: an `io::Error` of kind `UnexpectedEof` with this text and no typed payload — the
/// one failure matched by text. It is a TLS failure (the server took the TCP connection and would
/// not speak TLS on it), not a reset.
const TLS_HANDSHAKE_EOF: &str = "tls handshake eof";

/// OS error codes that mean our side cannot make requests: `ENFILE` (23), `EMFILE` (24),
/// `EADDRNOTAVAIL` (99) and `ENETUNREACH` (101) — never the link's fault.
const LOCAL_OS_ERRORS: [i32; 4] = [23, 24, 99, 101];

impl FetchError {
    /// A stable name for the kind of failure (the `outcome.class` of an `http.fetch` span).
    pub fn class(&self) -> &'static str {
        match self {
            Self::Refused(_) => "refused",
            Self::NoSuchHost(_) => "no_such_host",
            Self::Timeout { .. } => "timeout",
            Self::Connect(_) => "connect",
            Self::Tls(_) => "tls",
            Self::TooManyRedirects(_) => "too_many_redirects",
            Self::RedirectLoop(_) => "redirect_loop",
            Self::InvalidRedirect(_) => "invalid_redirect",
            Self::Local(_) => "local",
            Self::Other(_) => "other",
        }
    }

    /// What a `reqwest` failure means for the link, read from the types in its cause chain.
    ///
    /// `phase` is what the request was waiting for when it failed; `connect_limit` and `limit`
    /// are the connect timeout and the fetch's deadline, named in a [`FetchError::Timeout`]. The
    /// request's URL is dropped from the text (a saved link's query can hold a token).
    pub fn from_reqwest(error: reqwest::Error, phase: TimeoutPhase, connect_limit: Duration, limit: Duration) -> Self {
        let error = error.without_url();
        let chain = linkpulse_util::redact::urls_in(&linkpulse_util::errors::error_chain(&error)).into_owned();
        let timeout = |phase| Self::Timeout {
            phase,
            limit: if phase == TimeoutPhase::Connect {
                connect_limit
            } else {
                limit
            },
        };
        if error.is_connect() && error.is_timeout() {
            return timeout(TimeoutPhase::Connect);
        }
        for cause in causes(&error) {
            if let Some(refused) = cause.downcast_ref::<Refused>() {
                return Self::Refused(refused.clone());
            }
            if let Some(lookup) = cause.downcast_ref::<LookupFailed>() {
                return Self::NoSuchHost(format!("{}: {}", lookup.host, lookup.source));
            }
            if cause.is::<rustls::Error>() {
                return Self::Tls(chain);
            }
            if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind::*;
                match io.kind() {
                    UnexpectedEof if io.get_ref().is_some_and(|e| e.to_string() == TLS_HANDSHAKE_EOF) => {
                        return Self::Tls(chain);
                    }
                    ConnectionRefused | ConnectionReset | ConnectionAborted | UnexpectedEof | BrokenPipe => {
                        return Self::Connect(chain);
                    }
                    TimedOut => return timeout(phase),
                    _ if io.raw_os_error().is_some_and(|code| LOCAL_OS_ERRORS.contains(&code)) => {
                        return Self::Local(chain);
                    }
                    _ => {}
                }
            }
        }
        if error.is_timeout() {
            timeout(phase)
        } else if error.is_connect() {
            Self::Connect(chain)
        } else {
            Self::Other(chain)
        }
    }
}

/// Every error in `error`'s cause chain, outermost first, *including* what an `io::Error` wraps:
/// `io::Error::source` skips its own payload (it returns the payload's source), and TLS failures
/// arrive as a rustls error inside one or two `io::Error`s.
fn causes<'a>(error: &'a (dyn StdError + 'static)) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(error), |&cause: &&'a (dyn StdError + 'static)| {
        match cause.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            Some(payload) => Some(payload as &(dyn StdError + 'static)),
            None => cause.source(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_reaches_a_rustls_error_inside_two_io_errors() {
        let inner = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let outer = std::io::Error::other(inner);
        assert!(
            causes(&outer).any(|cause| cause.is::<rustls::Error>()),
            "io::Error::source alone never yields the rustls error"
        );
        assert!(std::error::Error::source(&outer).is_none());
    }
}
