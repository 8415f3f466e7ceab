//! Which URLs are GitHub repository pages, and the repository they name.

use std::fmt;

use url::Url;

/// First path segments of github.com that are site pages, not users or organisations.
const RESERVED_OWNERS: &[&str] = &[
    "about",
    "account",
    "apps",
    "codespaces",
    "collections",
    "customer-stories",
    "dashboard",
    "enterprise",
    "explore",
    "features",
    "issues",
    "join",
    "login",
    "logout",
    "marketplace",
    "new",
    "notifications",
    "organizations",
    "orgs",
    "pricing",
    "pulls",
    "readme",
    "search",
    "security",
    "sessions",
    "settings",
    "signup",
    "site",
    "sponsors",
    "topics",
    "trending",
    "users",
];

/// A repository, as `owner/repo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRef {
    pub owner: String,
    pub repo: String,
}

impl RepoRef {
    /// `owner/repo`.
    pub fn new(owner: impl Into<String>, repo: impl Into<String>) -> Self {
        Self {
            owner: owner.into(),
            repo: repo.into(),
        }
    }
}

impl fmt::Display for RepoRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.repo)
    }
}

/// owner/repo of a GitHub repository page URL: `https://github.com/{owner}/{repo}[/anything]`.
///
/// The host is `github.com` or `www.github.com` (case-insensitive), on the default port; the
/// scheme is `https` or `http`. A trailing `.git` on the repository is stripped. Site pages
/// (`/orgs/...`, `/settings/...`, `/topics/...`, ...) and URLs without both segments are not
/// repositories, and neither are names outside GitHub's allowed characters `[A-Za-z0-9-_.]`.
pub fn parse_repo_url(url: &Url) -> Option<RepoRef> {
    if !matches!(url.scheme(), "https" | "http") || url.port().is_some() {
        return None;
    }
    let host = url.host_str()?;
    if !host.eq_ignore_ascii_case("github.com") && !host.eq_ignore_ascii_case("www.github.com") {
        return None;
    }
    let mut segments = url.path_segments()?;
    let owner = segments.next()?;
    let repo = segments.next()?;
    let repo = strip_suffix_ignore_case(repo, ".git").unwrap_or(repo);
    if !is_valid_name(owner) || !is_valid_name(repo) {
        return None;
    }
    if RESERVED_OWNERS
        .iter()
        .any(|reserved| owner.eq_ignore_ascii_case(reserved))
    {
        return None;
    }
    Some(RepoRef {
        owner: owner.to_owned(),
        repo: repo.to_owned(),
    })
}

fn strip_suffix_ignore_case<'a>(s: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = s.len().checked_sub(suffix.len())?;
    let (head, tail) = (s.get(..cut)?, s.get(cut..)?);
    tail.eq_ignore_ascii_case(suffix).then_some(head)
}

/// GitHub's owner and repository names: ASCII letters, digits, `-`, `_` and `.`, and not the path
/// segments `.` or `..` (which would change the API path we build).
pub(super) fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(owner: &str, name: &str) -> RepoRef {
        RepoRef::new(owner, name)
    }

    #[test]
    fn github_parse_repo_url() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("https://github.com/rust-lang/rust", Some(("rust-lang", "rust"))),
            ("https://github.com/rust-lang/rust/", Some(("rust-lang", "rust"))),
            ("https://github.com/rust-lang/rust.git", Some(("rust-lang", "rust"))),
            ("https://github.com/rust-lang/rust.GIT", Some(("rust-lang", "rust"))),
            ("https://www.github.com/tokio-rs/tokio", Some(("tokio-rs", "tokio"))),
            ("https://WWW.GitHub.COM/tokio-rs/tokio", Some(("tokio-rs", "tokio"))),
            ("http://github.com/a/b", Some(("a", "b"))),
            (
                "https://github.com/serde-rs/serde/blob/master/README.md#usage",
                Some(("serde-rs", "serde")),
            ),
            ("https://github.com/owner/repo/issues/1?x=1", Some(("owner", "repo"))),
            (
                "https://github.com/some_user/dotted.name.rs",
                Some(("some_user", "dotted.name.rs")),
            ),
            ("https://github.com/Owner/Repo", Some(("Owner", "Repo"))),
            // Reserved first segments.
            ("https://github.com/orgs/rust-lang/people", None),
            ("https://github.com/settings/profile", None),
            ("https://github.com/features/actions", None),
            ("https://github.com/topics/rust", None),
            ("https://github.com/marketplace/actions", None),
            ("https://github.com/sponsors/someone", None),
            ("https://github.com/apps/dependabot", None),
            ("https://github.com/login/oauth", None),
            ("https://github.com/about/careers", None),
            ("https://github.com/pricing/plans", None),
            ("https://github.com/explore/repos", None),
            ("https://github.com/notifications/beta", None),
            ("https://github.com/search/advanced", None),
            ("https://github.com/collections/x", None),
            ("https://github.com/trending/rust", None),
            ("https://github.com/enterprise/startups", None),
            ("https://github.com/customer-stories/x", None),
            ("https://github.com/security/advanced", None),
            ("https://github.com/site/terms", None),
            ("https://github.com/readme/guides", None),
            ("https://github.com/Settings/profile", None),
            // Other hosts, schemes and ports.
            ("https://gitlab.com/a/b", None),
            ("https://gist.github.com/a/b", None),
            ("https://api.github.com/repos/a", None),
            ("https://github.com.evil.example/a/b", None),
            ("https://github.com:8443/a/b", None),
            ("ftp://github.com/a/b", None),
            // Missing or invalid segments.
            ("https://github.com/", None),
            ("https://github.com/rust-lang", None),
            ("https://github.com/rust-lang/", None),
            ("https://github.com//rust", None),
            ("https://github.com/a/.git", None),
            ("https://github.com/a%20b/c", None),
            ("https://github.com/a/b%2Fc", None),
            ("https://github.com/caf%C3%A9/b", None),
        ];
        for (input, expected) in cases {
            let url = Url::parse(input).expect("valid URL");
            let expected = expected.map(|(owner, name)| repo(owner, name));
            assert_eq!(parse_repo_url(&url), expected, "{input}");
        }
    }
}
