//! The GitHub half of a refresh: which repository to ask for, and what the API's answer means for
//! the stored facts (found, renamed, not modified, gone, rate-limited, transient, other failures).

use std::time::Duration;

use url::Url;

use crate::db::links::{CacheState, GithubRecord, RefreshRecord};
use crate::github::{GithubClient, GithubError, RepoLookup, RepoRef, parse_repo_url};

/// Whether the refresh of `url` asks the GitHub API too: a repository link, or one that was a
/// repository at the last refresh (its page may have moved; the stored name has not).
pub fn is_repository(url: &Url, cache: &CacheState) -> bool {
    cache.github_owner.is_some() || parse_repo_url(url).is_some()
}

/// The repository to ask for: the name stored at the last refresh (a renamed repository is asked
/// for under its new name), else the one in the URL; `None` for other links.
pub fn repo_to_ask(url: &Url, cache: &CacheState) -> Option<RepoRef> {
    match (&cache.github_owner, &cache.github_repo) {
        (Some(owner), Some(repo)) => Some(RepoRef {
            owner: owner.clone(),
            repo: repo.clone(),
        }),
        _ => parse_repo_url(url),
    }
}

/// What the API's answer means for the stored facts.
#[derive(Debug, Clone, PartialEq)]
pub enum RepoOutcome {
    /// The repository's facts, under its current name (a rename is followed and stored).
    Found(GithubRecord),
    /// 304 for our ETag: the stored facts stand.
    NotModified,
    /// 404, 410 or 451: the repository is gone, private or blocked (the link becomes
    /// `repo_unavailable`).
    Missing,
    /// The API's rate limit is spent for this long: not the link's fault, nothing to record.
    RateLimited {
        /// How long to wait before asking again.
        retry_after: Duration,
    },
    /// No answer this time (network, timeout, 5xx), `GitHub API: <reason>`: another attempt may
    /// get one.
    Transient(String),
    /// Any other failure, `GitHub API: <error>`: recorded, the refresh goes on without the facts.
    Failed(String),
}

impl RepoOutcome {
    /// The meaning of `lookup`, the API's answer for `asked`.
    pub fn from_lookup(asked: RepoRef, lookup: Result<RepoLookup, GithubError>) -> Self {
        match lookup {
            Ok(RepoLookup::Found { info, etag, renamed_to }) => {
                let current = renamed_to.unwrap_or(asked);
                Self::Found(GithubRecord {
                    owner: current.owner,
                    repo: current.repo,
                    stars: info.stars,
                    description: info.description,
                    archived: info.archived,
                    pushed_at: info.pushed_at,
                    etag,
                })
            }
            Ok(RepoLookup::NotModified) => Self::NotModified,
            Ok(RepoLookup::NotFound) => Self::Missing,
            Ok(RepoLookup::RateLimited { retry_after }) => Self::RateLimited { retry_after },
            Err(GithubError::Transient(reason)) => Self::Transient(format!("GitHub API: {reason}")),
            Err(error) => Self::Failed(format!("GitHub API: {error}")),
        }
    }

    /// Writes what this outcome says into `record`: the facts, the repository's absence, or the
    /// failure as the record's error (it takes the place of a page error: the API's is the one to
    /// see). Not modified and rate-limited write nothing.
    pub fn record_into(self, record: &mut RefreshRecord) {
        match self {
            Self::Found(github) => record.github = Some(github),
            Self::Missing => record.repo_missing = true,
            Self::Transient(reason) | Self::Failed(reason) => record.error = Some(reason),
            Self::NotModified | Self::RateLimited { .. } => {}
        }
    }
}

/// Asks the API about the repository of `url` ([`repo_to_ask`]) with the stored ETag; `None` when
/// the link is not a repository.
pub async fn lookup_repo(github: &GithubClient, url: &Url, cache: &CacheState) -> Option<RepoOutcome> {
    let repo = repo_to_ask(url, cache)?;
    let lookup = github.repo(&repo, cache.github_etag.as_deref()).await;
    Some(RepoOutcome::from_lookup(repo, lookup))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::github::RepoInfo;

    fn repo(owner: &str, name: &str) -> RepoRef {
        RepoRef::new(owner, name)
    }

    fn info(full_name: &str) -> RepoInfo {
        RepoInfo {
            full_name: full_name.into(),
            description: Some("A tool".into()),
            stars: 42,
            archived: false,
            pushed_at: None,
            html_url: None,
        }
    }

    #[test]
    fn the_stored_name_is_asked_for_before_the_url() {
        let url = Url::parse("https://github.com/old/name").expect("valid URL");
        assert_eq!(repo_to_ask(&url, &CacheState::default()), Some(repo("old", "name")));
        let renamed = CacheState {
            github_owner: Some("new".into()),
            github_repo: Some("home".into()),
            ..CacheState::default()
        };
        assert_eq!(repo_to_ask(&url, &renamed), Some(repo("new", "home")));
        assert!(is_repository(&url, &CacheState::default()));
        let page = Url::parse("https://example.com/").expect("valid URL");
        assert_eq!(repo_to_ask(&page, &CacheState::default()), None);
        assert!(!is_repository(&page, &CacheState::default()));
    }

    #[test]
    fn a_found_repository_is_stored_under_its_current_name() {
        let found = RepoOutcome::from_lookup(
            repo("old", "name"),
            Ok(RepoLookup::Found {
                info: info("new/home"),
                etag: Some("\"e\"".into()),
                renamed_to: Some(repo("new", "home")),
            }),
        );
        let mut record = RefreshRecord::default();
        found.record_into(&mut record);
        let github = record.github.expect("facts recorded");
        assert_eq!((github.owner.as_str(), github.repo.as_str()), ("new", "home"));
        assert_eq!((github.stars, github.etag.as_deref()), (42, Some("\"e\"")));
        let same = RepoOutcome::from_lookup(
            repo("old", "name"),
            Ok(RepoLookup::Found {
                info: info("old/name"),
                etag: None,
                renamed_to: None,
            }),
        );
        let RepoOutcome::Found(github) = same else {
            panic!("expected facts");
        };
        assert_eq!((github.owner.as_str(), github.repo.as_str()), ("old", "name"));
    }

    #[test]
    fn each_answer_means_one_thing_for_the_record() {
        let asked = || repo("o", "r");
        let mut record = RefreshRecord {
            error: Some("refresh: HTTP 404: Not Found".into()),
            ..RefreshRecord::default()
        };
        RepoOutcome::from_lookup(asked(), Ok(RepoLookup::NotModified)).record_into(&mut record);
        let wait = Duration::from_secs(60);
        let limited = RepoOutcome::from_lookup(asked(), Ok(RepoLookup::RateLimited { retry_after: wait }));
        assert_eq!(limited, RepoOutcome::RateLimited { retry_after: wait });
        limited.record_into(&mut record);
        assert_eq!(record.error.as_deref(), Some("refresh: HTTP 404: Not Found"));
        assert!(record.github.is_none() && !record.repo_missing);

        RepoOutcome::from_lookup(asked(), Ok(RepoLookup::NotFound)).record_into(&mut record);
        assert!(record.repo_missing);

        let transient = RepoOutcome::from_lookup(asked(), Err(GithubError::Transient("timed out".into())));
        assert_eq!(transient, RepoOutcome::Transient("GitHub API: timed out".into()));
        transient.record_into(&mut record);
        assert_eq!(record.error.as_deref(), Some("GitHub API: timed out"));

        let failed = RepoOutcome::from_lookup(
            asked(),
            Err(GithubError::Unexpected {
                status: 422,
                message: "odd".into(),
            }),
        );
        let RepoOutcome::Failed(reason) = &failed else {
            panic!("expected a failure, got {failed:?}");
        };
        assert!(reason.starts_with("GitHub API: ") && reason.contains("422"), "{reason}");
    }
}
