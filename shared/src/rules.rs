//! Rules per host, from the TOML file named by `LINKPULSE_RULES_FILE`, as lychee users expect them:
//!
//! - `[[exclude]] pattern = "…"`: a regular expression (crate `regex`) on the normalised URL. A
//!   matching link is stored but never fetched: it is saved `paused`, with
//!   `excluded by rule "<pattern>"` as its status reason, and `producer links apply-rules` pauses
//!   the saved links that match.
//! - `[[host]] name = "…" accept = [403, 429]`: status codes that count as `ok` for a host (an
//!   exact host, or `*.example.org` for every subdomain of `example.org`), for sites known to
//!   answer robots with 403 or 429 while people get the page.
//!
//! The file is read and validated once, at start ([`crate::config::Settings::from_env`]): a bad
//! file stops the process with its path and the line at fault, instead of a rule that silently
//! never matches.

use std::io::Read;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The variable naming the rules file.
pub const RULES_FILE_VAR: &str = "LINKPULSE_RULES_FILE";

/// Largest rules file read: a rules file is a few lines, and a path pointing at something huge
/// (or endless, like `/dev/zero`) must fail instead of filling memory.
pub const MAX_RULES_FILE_BYTES: u64 = 1024 * 1024;

/// Largest compiled size of one pattern (the `regex` default is 10 MiB per pattern; exclusions are
/// matched against every saved URL, so keep them small).
const MAX_PATTERN_SIZE: usize = 1024 * 1024;

/// Why a rules file was refused; the message names the line at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RulesError {
    /// The file could not be read.
    #[error("cannot read the rules file: {0}")]
    Read(#[source] std::io::Error),
    /// Larger than [`MAX_RULES_FILE_BYTES`].
    #[error("the rules file is larger than {MAX_RULES_FILE_BYTES} bytes")]
    TooLarge,
    /// Not valid TOML, an unknown key, a wrong type, a bad pattern, host or status code.
    #[error("line {line}: {message}")]
    Invalid {
        /// 1-based line of the fault.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesSpec {
    #[serde(default)]
    exclude: Vec<ExcludeSpec>,
    #[serde(default)]
    host: Vec<HostSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExcludeSpec {
    pattern: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostSpec {
    name: Spanned<String>,
    accept: Spanned<Vec<Spanned<u16>>>,
}

/// One exclude pattern.
#[derive(Debug, Clone)]
struct Exclude {
    pattern: String,
    regex: Regex,
}

/// Which hosts a `[[host]]` rule covers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    /// This host only.
    Exact(String),
    /// Every subdomain of this domain (not the domain itself).
    Subdomains(String),
}

impl HostMatch {
    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => host.eq_ignore_ascii_case(name),
            Self::Subdomains(domain) => {
                let (host, domain) = (host.as_bytes(), domain.as_bytes());
                host.len() > domain.len() + 1
                    && host[host.len() - domain.len() - 1] == b'.'
                    && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
            }
        }
    }
}

/// A host's accepted status codes, as `producer config` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostRule {
    /// The host as written (normalised: lower case, punycode), or `*.domain`.
    pub name: String,
    /// Status codes that count as `ok` for it.
    pub accept: Vec<u16>,
    #[serde(skip)]
    matcher: HostMatch,
}

/// The rules in force: none by default.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    file: Option<PathBuf>,
    excludes: Vec<Exclude>,
    hosts: Vec<HostRule>,
}

/// What `producer config` shows of the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RulesSummary {
    /// The file read, if any.
    pub file: Option<String>,
    /// How many exclude patterns.
    pub exclude_patterns: usize,
    /// The patterns, in file order.
    pub patterns: Vec<String>,
    /// Hosts with accepted status codes, in file order.
    pub hosts: Vec<HostRule>,
}

impl Rules {
    /// Reads and validates the rules file at `path`.
    ///
    /// # Errors
    ///
    /// [`RulesError`]: unreadable, too large, or invalid (with the line).
    pub fn load(path: &Path) -> Result<Self, RulesError> {
        let file = std::fs::File::open(path).map_err(RulesError::Read)?;
        let mut text = String::new();
        file.take(MAX_RULES_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(RulesError::Read)?;
        if text.len() as u64 > MAX_RULES_FILE_BYTES {
            return Err(RulesError::TooLarge);
        }
        let mut rules = Self::parse(&text)?;
        rules.file = Some(path.to_owned());
        Ok(rules)
    }

    /// Parses and validates rules from TOML text.
    ///
    /// # Errors
    ///
    /// [`RulesError::Invalid`] with the line at fault.
    pub fn parse(text: &str) -> Result<Self, RulesError> {
        let spec: RulesSpec = toml::from_str(text).map_err(|e| RulesError::Invalid {
            line: e.span().map_or(1, |span| line_of(text, span.start)),
            message: e.message().trim().to_owned(),
        })?;
        let invalid = |start: usize, message: String| RulesError::Invalid {
            line: line_of(text, start),
            message,
        };
        let mut excludes = Vec::with_capacity(spec.exclude.len());
        for exclude in spec.exclude {
            let span = exclude.pattern.span();
            let pattern = exclude.pattern.into_inner();
            if pattern.is_empty() {
                return Err(invalid(
                    span.start,
                    "an empty exclude pattern would match every link".into(),
                ));
            }
            let regex = regex::RegexBuilder::new(&pattern)
                .size_limit(MAX_PATTERN_SIZE)
                .build()
                .map_err(|e| invalid(span.start, format!("invalid pattern {pattern:?}: {e}")))?;
            excludes.push(Exclude { pattern, regex });
        }
        let mut hosts = Vec::with_capacity(spec.host.len());
        for host in spec.host {
            let span = host.name.span();
            let (name, matcher) =
                parse_host_name(host.name.get_ref()).map_err(|message| invalid(span.start, message))?;
            let accept_span = host.accept.span();
            let mut accept = Vec::new();
            for code in host.accept.into_inner() {
                let value = *code.get_ref();
                if !(100..=999).contains(&value) {
                    return Err(invalid(
                        code.span().start,
                        format!("status code {value} is not between 100 and 999"),
                    ));
                }
                if !accept.contains(&value) {
                    accept.push(value);
                }
            }
            if accept.is_empty() {
                return Err(invalid(
                    accept_span.start,
                    format!("host {name:?} accepts no status code"),
                ));
            }
            hosts.push(HostRule { name, accept, matcher });
        }
        Ok(Self {
            file: None,
            excludes,
            hosts,
        })
    }

    /// The file the rules came from.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// No rule at all (nothing to apply).
    pub fn is_empty(&self) -> bool {
        self.excludes.is_empty() && self.hosts.is_empty()
    }

    /// Whether there is any exclude pattern.
    pub fn has_excludes(&self) -> bool {
        !self.excludes.is_empty()
    }

    /// The first exclude pattern matching the normalised `url`.
    pub fn excluded_by(&self, url: &str) -> Option<&str> {
        self.excludes
            .iter()
            .find(|e| e.regex.is_match(url))
            .map(|e| e.pattern.as_str())
    }

    /// The status reason of a link that `url`'s exclusion pauses: `excluded by rule "<pattern>"`.
    pub fn exclusion_reason(&self, url: &str) -> Option<String> {
        self.excluded_by(url).map(exclusion_reason)
    }

    /// Whether `status` counts as `ok` for `host` (any matching `[[host]]` rule lists it).
    pub fn accepts(&self, host: &str, status: u16) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host);
        self.hosts
            .iter()
            .any(|rule| rule.accept.contains(&status) && rule.matcher.matches(host))
    }

    /// What `producer config` shows.
    pub fn summary(&self) -> RulesSummary {
        RulesSummary {
            file: self.file.as_ref().map(|p| p.display().to_string()),
            exclude_patterns: self.excludes.len(),
            patterns: self.excludes.iter().map(|e| e.pattern.clone()).collect(),
            hosts: self.hosts.clone(),
        }
    }
}

/// The status reason of a link paused by `pattern`.
pub fn exclusion_reason(pattern: &str) -> String {
    format!("excluded by rule \"{pattern}\"")
}

/// Normalises a `[[host]] name` the way link hosts are stored (lower case, punycode, IPv6 in
/// brackets), so the comparison is exact.
fn parse_host_name(raw: &str) -> Result<(String, HostMatch), String> {
    let trimmed = raw.trim();
    let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
    let (wildcard, host) = match trimmed.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, trimmed),
    };
    if host.is_empty() || host.contains(['/', '*', '@']) {
        return Err(format!(
            "host name {raw:?} is not a host (expected e.g. \"example.org\" or \"*.example.org\")"
        ));
    }
    let parsed = url::Host::parse(host).map_err(|e| format!("host name {raw:?} is not a host: {e}"))?;
    let normal = parsed.to_string();
    match (wildcard, parsed) {
        (true, url::Host::Domain(_)) => Ok((format!("*.{normal}"), HostMatch::Subdomains(normal))),
        (true, _) => Err(format!("host name {raw:?}: a wildcard needs a domain, not an address")),
        (false, _) => Ok((normal.clone(), HostMatch::Exact(normal))),
    }
}

/// The 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(at.min(text.len()))
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
# Rules of the README's example.
[[exclude]]
pattern = "^https://(www\\.)?linkedin\\.com/"

[[host]]
name = "Example.org"
accept = [403, 429]

[[host]]
name = "*.cdn.example"
accept = [403]
"#;

    fn err_line(text: &str) -> (usize, String) {
        match Rules::parse(text) {
            Err(RulesError::Invalid { line, message }) => (line, message),
            other => panic!("expected an invalid file, got {other:?}"),
        }
    }

    #[test]
    fn excludes_match_the_normalised_url() {
        let rules = Rules::parse(EXAMPLE).expect("valid rules");
        assert_eq!(
            rules.excluded_by("https://www.linkedin.com/in/someone"),
            Some(r"^https://(www\.)?linkedin\.com/")
        );
        assert_eq!(
            rules.excluded_by("https://linkedin.com/"),
            Some(r"^https://(www\.)?linkedin\.com/")
        );
        assert_eq!(rules.excluded_by("https://example.com/?u=https://linkedin.com/"), None);
        assert_eq!(
            rules.exclusion_reason("https://linkedin.com/x").as_deref(),
            Some(r#"excluded by rule "^https://(www\.)?linkedin\.com/""#)
        );
    }

    #[test]
    fn accepted_codes_apply_to_their_host_only() {
        let rules = Rules::parse(EXAMPLE).expect("valid rules");
        assert!(rules.accepts("example.org", 403));
        assert!(rules.accepts("example.org", 429));
        assert!(!rules.accepts("example.org", 404));
        assert!(
            !rules.accepts("www.example.org", 403),
            "an exact name covers no subdomain"
        );
        assert!(!rules.accepts("notexample.org", 403));
        assert!(rules.accepts("img.cdn.example", 403));
        assert!(rules.accepts("a.b.cdn.example", 403));
        assert!(!rules.accepts("cdn.example", 403), "a wildcard covers subdomains only");
        assert!(!rules.accepts("xcdn.example", 403));
        assert!(!rules.accepts("img.cdn.example", 429));
    }

    #[test]
    fn host_names_are_normalised_like_stored_hosts() {
        let rules = Rules::parse(
            "[[host]]\nname = \"127.0.0.1\"\naccept = [403]\n[[host]]\nname = \"Bücher.example\"\naccept = [401]\n",
        )
        .expect("valid");
        assert!(rules.accepts("127.0.0.1", 403));
        assert!(rules.accepts("xn--bcher-kva.example", 401));
        let names: Vec<String> = rules.summary().hosts.into_iter().map(|h| h.name).collect();
        assert_eq!(names, ["127.0.0.1", "xn--bcher-kva.example"]);
    }

    #[test]
    fn an_empty_file_has_no_rules() {
        let rules = Rules::parse("").expect("valid");
        assert!(rules.is_empty());
        assert_eq!(rules.excluded_by("https://example.com/"), None);
        assert!(!rules.accepts("example.com", 403));
    }

    #[test]
    fn bad_files_name_the_line_at_fault() {
        let (line, message) = err_line("[[exclude]]\npattern = \"^https://(unclosed\"\n");
        assert_eq!(line, 2, "{message}");
        assert!(message.contains("invalid pattern"), "{message}");

        let (line, message) = err_line("[[host]]\nname = \"example.org\"\naccept = [403, 70000]\n");
        assert_eq!(line, 3, "{message}");

        let (line, message) = err_line("[[host]]\nname = \"example.org\"\naccept = [403, 42]\n");
        assert_eq!(line, 3);
        assert!(message.contains("between 100 and 999"), "{message}");

        let (line, message) = err_line("\n\n[[host]]\nname = \"example.org\"\naccept = []\n");
        assert_eq!(line, 5);
        assert!(message.contains("accepts no status code"), "{message}");

        let (line, message) = err_line("[[host]]\nname = \"https://example.org/\"\naccept = [403]\n");
        assert_eq!(line, 2);
        assert!(message.contains("not a host"), "{message}");

        let (line, message) = err_line("[[exclude]]\npatern = \"x\"\n");
        assert_eq!(line, 2, "{message}");
        assert!(message.contains("patern"), "unknown keys are named: {message}");

        let (line, _) = err_line("[[exclude]]\npattern = \"\"\n");
        assert_eq!(line, 2);

        let (line, _) = err_line("[[host]\nname = \"x\"\n");
        assert_eq!(line, 1);
    }

    #[test]
    fn the_setting_names_the_variable_the_file_and_the_line() {
        let dir = std::env::temp_dir().join(format!("linkpulse-rules-setting-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let bad = dir.join("rules.toml");
        std::fs::write(&bad, "[[exclude]]\npattern = \"(\"\n").expect("write");
        let path = bad.display().to_string();
        let env = crate::config::Env::new(|k| (k == RULES_FILE_VAR).then(|| path.clone()));
        let err = crate::config::rules(&env).expect_err("invalid");
        let message = err.to_string();
        assert!(message.starts_with("LINKPULSE_RULES_FILE="), "{message}");
        assert!(message.contains(&path) && message.contains("line 2"), "{message}");
        let unset = crate::config::Env::new(|_| None);
        assert!(crate::config::rules(&unset).expect("no file, no rules").is_empty());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_missing_or_huge_file_is_refused() {
        assert!(matches!(
            Rules::load(Path::new("/nonexistent/linkpulse-rules.toml")),
            Err(RulesError::Read(_))
        ));
        let dir = std::env::temp_dir().join(format!("linkpulse-rules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let big = dir.join("big.toml");
        std::fs::write(
            &big,
            "#".repeat(usize::try_from(MAX_RULES_FILE_BYTES).expect("fits") + 1),
        )
        .expect("write");
        assert!(matches!(Rules::load(&big), Err(RulesError::TooLarge)));
        let good = dir.join("good.toml");
        std::fs::write(&good, EXAMPLE).expect("write");
        let rules = Rules::load(&good).expect("valid");
        assert_eq!(rules.file(), Some(good.as_path()));
        assert_eq!(rules.summary().exclude_patterns, 1);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
