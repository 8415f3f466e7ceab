//! The `links` table: saved URLs and what the jobs write back.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::link_url::LinkUrl;

/// A link's status.
pub const STATUSES: [&str; 4] = ["active", "inaccessible", "repo_unavailable", "archived"];

/// GitHub metadata of a repository link.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GithubInfo {
    /// Repository owner (the new one after a rename or transfer).
    pub owner: String,
    /// Repository name.
    pub repo: String,
    /// Stargazers.
    pub stars: Option<i32>,
    /// Repository description.
    pub description: Option<String>,
    /// Archived on GitHub.
    pub archived: Option<bool>,
    /// Last push.
    pub pushed_at: Option<DateTime<Utc>>,
}

/// A saved link as the CLI and API show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Link {
    /// Id.
    pub id: i64,
    /// Normalised URL.
    pub url: String,
    /// Host (concurrency group).
    pub host: String,
    /// `active`, `inaccessible`, `repo_unavailable` or `archived`.
    pub status: String,
    /// Page title.
    pub title: Option<String>,
    /// Page description.
    pub description: Option<String>,
    /// Favicon URL (not fetched).
    pub favicon_url: Option<String>,
    /// Open Graph image URL.
    pub image_url: Option<String>,
    /// Site name.
    pub site_name: Option<String>,
    /// GitHub metadata, for repository links.
    pub github: Option<GithubInfo>,
    /// Failed checks in a row.
    pub consecutive_failures: i32,
    /// HTTP status of the last check, if it got one.
    pub last_status_code: Option<i32>,
    /// `ok`, `dead`, `transient` or `blocked`.
    pub last_outcome: Option<String>,
    /// Reason of the last failed or blocked check.
    pub last_error: Option<String>,
    /// Last check.
    pub last_checked_at: Option<DateTime<Utc>>,
    /// Last refresh.
    pub refreshed_at: Option<DateTime<Utc>>,
    /// Trace id (32 hex digits) of the job that wrote the latest check or refresh result: its
    /// trace in Jaeger holds the producer's cycle, the queue wait, the attempts and their
    /// requests.
    pub last_trace_id: Option<String>,
    /// Saved at.
    pub created_at: DateTime<Utc>,
    /// Last write.
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug)]
struct LinkRow {
    id: i64,
    url: String,
    host: String,
    status: String,
    title: Option<String>,
    description: Option<String>,
    favicon_url: Option<String>,
    image_url: Option<String>,
    site_name: Option<String>,
    github_owner: Option<String>,
    github_repo: Option<String>,
    github_stars: Option<i32>,
    github_description: Option<String>,
    github_archived: Option<bool>,
    github_pushed_at: Option<DateTime<Utc>>,
    consecutive_failures: i32,
    last_status_code: Option<i32>,
    last_outcome: Option<String>,
    last_error: Option<String>,
    last_checked_at: Option<DateTime<Utc>>,
    refreshed_at: Option<DateTime<Utc>>,
    last_trace_id: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<LinkRow> for Link {
    fn from(r: LinkRow) -> Self {
        let github = match (r.github_owner, r.github_repo) {
            (Some(owner), Some(repo)) => Some(GithubInfo {
                owner,
                repo,
                stars: r.github_stars,
                description: r.github_description,
                archived: r.github_archived,
                pushed_at: r.github_pushed_at,
            }),
            _ => None,
        };
        Self {
            id: r.id,
            url: r.url,
            host: r.host,
            status: r.status,
            title: r.title,
            description: r.description,
            favicon_url: r.favicon_url,
            image_url: r.image_url,
            site_name: r.site_name,
            github,
            consecutive_failures: r.consecutive_failures,
            last_status_code: r.last_status_code,
            last_outcome: r.last_outcome,
            last_error: r.last_error,
            last_checked_at: r.last_checked_at,
            refreshed_at: r.refreshed_at,
            last_trace_id: r.last_trace_id,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// `sqlx::query_as!(LinkRow, …)` of a statement that reads every column of [`LinkRow`]:
/// `$head`, the column list, then `$tail`. One column list for every statement that returns
/// links (`query_as!` takes only literals, so a `const` cannot hold it).
macro_rules! query_links {
    ($head:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            LinkRow,
            $head
                + "id, url, host, status, title, description, favicon_url, image_url, site_name, \
                   github_owner, github_repo, github_stars, github_description, github_archived, github_pushed_at, \
                   consecutive_failures, last_status_code, last_outcome, last_error, last_checked_at, refreshed_at, \
                   last_trace_id, created_at, updated_at"
                + $tail
            $(, $arg)*
        )
    };
}

/// A link to save, as its caller decided it: this table stores what it is given and parses no
/// URL (which URLs are GitHub repositories is the caller's business).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLink {
    /// The validated, normalised URL and its host.
    pub link: LinkUrl,
    /// `(owner, repo)` when the URL is a GitHub repository page (its refresh asks the API).
    pub github: Option<(String, String)>,
}

/// Inserts links; returns the URLs that were new (the others were already saved).
///
/// # Errors
///
/// If the statement fails.
pub async fn insert_many(pool: &PgPool, links: &[NewLink]) -> Result<Vec<String>, sqlx::Error> {
    if links.is_empty() {
        return Ok(Vec::new());
    }
    let urls: Vec<String> = links.iter().map(|l| l.link.url.to_string()).collect();
    let hosts: Vec<&str> = links.iter().map(|l| l.link.host.as_str()).collect();
    let owners: Vec<Option<&str>> = links
        .iter()
        .map(|l| l.github.as_ref().map(|(owner, _)| owner.as_str()))
        .collect();
    let repos: Vec<Option<&str>> = links
        .iter()
        .map(|l| l.github.as_ref().map(|(_, repo)| repo.as_str()))
        .collect();
    sqlx::query_scalar!(
        "INSERT INTO links (url, host, github_owner, github_repo)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
         ON CONFLICT (url) DO NOTHING
         RETURNING url",
        &urls,
        // Borrowed strings: the macro's check expects owned ones for `text[]`.
        &hosts as &[&str],
        &owners as &[Option<&str>],
        &repos as &[Option<&str>],
    )
    .fetch_all(pool)
    .await
}

/// Lists links, oldest first, optionally of one status.
///
/// # Errors
///
/// If the query fails.
pub async fn list(pool: &PgPool, status: Option<&str>, limit: i64) -> Result<Vec<Link>, sqlx::Error> {
    // One checked statement per shape rather than a filter composed at run time.
    let rows = match status {
        Some(status) => {
            query_links!(
                "SELECT ",
                " FROM links WHERE status = $1 ORDER BY id LIMIT $2",
                status,
                limit.max(0)
            )
            .fetch_all(pool)
            .await?
        }
        None => {
            query_links!("SELECT ", " FROM links ORDER BY id LIMIT $1", limit.max(0))
                .fetch_all(pool)
                .await?
        }
    };
    Ok(rows.into_iter().map(Link::from).collect())
}

/// A link by id or by (normalised) URL.
///
/// # Errors
///
/// If the query fails.
pub async fn find(pool: &PgPool, id_or_url: &LinkRef) -> Result<Option<Link>, sqlx::Error> {
    let row = match id_or_url {
        LinkRef::Id(id) => {
            query_links!("SELECT ", " FROM links WHERE id = $1", id)
                .fetch_optional(pool)
                .await?
        }
        LinkRef::Url(url) => {
            query_links!("SELECT ", " FROM links WHERE url = $1", url)
                .fetch_optional(pool)
                .await?
        }
    };
    Ok(row.map(Link::from))
}

/// How an operator names a link: its id or its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkRef {
    /// `links.id`.
    Id(i64),
    /// The normalised URL.
    Url(String),
}

impl LinkRef {
    /// A number is an id; anything else is parsed and normalised as a URL.
    ///
    /// # Errors
    ///
    /// The URL's rejection reason.
    pub fn parse(input: &str) -> Result<Self, crate::link_url::UrlError> {
        match input.trim().parse::<i64>() {
            Ok(id) => Ok(Self::Id(id)),
            Err(_) => crate::link_url::parse_link(input).map(|l| Self::Url(l.url.to_string())),
        }
    }
}

/// Manual override: status `active`, failures 0. Returns the link, or `None` if unknown.
///
/// # Errors
///
/// If the statement fails.
pub async fn activate(pool: &PgPool, link: &LinkRef) -> Result<Option<Link>, sqlx::Error> {
    let row = match link {
        LinkRef::Id(id) => {
            query_links!(
                "UPDATE links SET status = 'active', consecutive_failures = 0, updated_at = now() WHERE id = $1 RETURNING ",
                "",
                id
            )
            .fetch_optional(pool)
            .await?
        }
        LinkRef::Url(url) => {
            query_links!(
                "UPDATE links SET status = 'active', consecutive_failures = 0, updated_at = now() WHERE url = $1 RETURNING ",
                "",
                url
            )
            .fetch_optional(pool)
            .await?
        }
    };
    Ok(row.map(Link::from))
}

/// The lease a write-back acts for. A write-back applies only while `token` and `attempt` are still
/// the job's current lease (a handler whose lease was rescued, and maybe claimed again, writes nothing), and
/// at most once per `run` (a retry after a write that did commit changes nothing, while a job an
/// operator requeued writes its new result).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteLease {
    /// The job.
    pub job_id: i64,
    /// The lease's token.
    pub token: uuid::Uuid,
    /// The job's run.
    pub run: uuid::Uuid,
    /// The lease's attempt: checked with the token, because the previous release's claims and
    /// rescues leave `lease_token` as it was (during a rolling upgrade) but always count attempts.
    pub attempt: i32,
}

impl From<&linkpulse_queue::JobLease> for WriteLease {
    fn from(lease: &linkpulse_queue::JobLease) -> Self {
        Self {
            job_id: lease.job_id,
            token: lease.token,
            run: lease.run,
            attempt: lease.attempt,
        }
    }
}

/// The result of one check, as written back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRecord {
    /// `ok`, `dead`, `transient` (attempts exhausted) or `blocked`.
    pub outcome: &'static str,
    /// HTTP status, if a response arrived.
    pub status_code: Option<u16>,
    /// Human-readable reason for anything but `ok`.
    pub error: Option<String>,
    /// Whether this result counts toward the failure threshold (dead or exhausted transient).
    pub counts_as_failure: bool,
}

/// Records on the `db.write_back` span whether the row changed (`false`: a replay of a job
/// already written) or why the statement failed.
fn written(result: Result<sqlx::postgres::PgQueryResult, sqlx::Error>) -> Result<bool, sqlx::Error> {
    let span = tracing::Span::current();
    match result {
        Ok(done) => {
            let applied = done.rows_affected() == 1;
            span.record("applied", applied);
            Ok(applied)
        }
        Err(error) => {
            crate::telemetry::set_error(&span, &linkpulse_util::errors::error_chain(&error));
            Err(error)
        }
    }
}

/// What a refresh learned; `None` fields leave the stored value alone (fill-only: a page that
/// lost its description, or a challenge page, never erases a good value).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RefreshRecord {
    /// Page title.
    pub title: Option<String>,
    /// Page description.
    pub description: Option<String>,
    /// Favicon URL.
    pub favicon_url: Option<String>,
    /// Open Graph image.
    pub image_url: Option<String>,
    /// Site name.
    pub site_name: Option<String>,
    /// `ETag` of the page, for the next conditional refresh.
    pub http_etag: Option<String>,
    /// `Last-Modified` of the page.
    pub http_last_modified: Option<String>,
    /// GitHub facts, when the link is a repository and the API answered.
    pub github: Option<GithubRecord>,
    /// The GitHub API said the repository does not exist.
    pub repo_missing: bool,
    /// Error of a part that failed without failing the refresh (e.g. the GitHub API).
    pub error: Option<String>,
}

/// GitHub facts to write back.
#[derive(Debug, Clone, PartialEq)]
pub struct GithubRecord {
    /// Current owner (after renames).
    pub owner: String,
    /// Current name.
    pub repo: String,
    /// Stars.
    pub stars: i32,
    /// Description.
    pub description: Option<String>,
    /// Archived.
    pub archived: bool,
    /// Last push.
    pub pushed_at: Option<DateTime<Utc>>,
    /// ETag for the next conditional request.
    pub etag: Option<String>,
}

/// `link_record_refresh`: fill-only write of a refresh; fenced by the lease and idempotent per run
/// like
/// [`CheckWriter::record`](super::check_writer::CheckWriter::record). GitHub `archived` makes the
/// link `archived`; a missing repository makes it `repo_unavailable`; a repository found again
/// restores `active`. Traced as `db.write_back`, storing the job's trace id like
/// [`CheckWriter::record`](super::check_writer::CheckWriter::record).
///
/// # Errors
///
/// If the statement fails.
#[tracing::instrument(
    name = "db.write_back",
    skip_all,
    fields(
        db.system.name = "postgresql",
        db.operation.name = "link_record_refresh",
        link.id = link_id,
        job.id = lease.job_id,
        applied = tracing::field::Empty,
    )
)]
pub async fn record_refresh(
    pool: &PgPool,
    link_id: i64,
    lease: WriteLease,
    r: &RefreshRecord,
) -> Result<bool, sqlx::Error> {
    let gh = r.github.as_ref();
    let result = sqlx::query!(
        "UPDATE links
         SET title = coalesce($3, title),
             description = coalesce($4, description),
             favicon_url = coalesce($5, favicon_url),
             image_url = coalesce($6, image_url),
             site_name = coalesce($7, site_name),
             http_etag = coalesce($8, http_etag),
             http_last_modified = coalesce($9, http_last_modified),
             github_owner = coalesce($10, github_owner),
             github_repo = coalesce($11, github_repo),
             github_stars = coalesce($12, github_stars),
             github_description = coalesce($13, github_description),
             github_archived = coalesce($14, github_archived),
             github_pushed_at = coalesce($15, github_pushed_at),
             github_etag = coalesce($16, github_etag),
             status = CASE WHEN $14 IS TRUE THEN 'archived'
                           WHEN $17 THEN 'repo_unavailable'
                           WHEN $14 IS FALSE AND status IN ('archived', 'repo_unavailable') THEN 'active'
                           ELSE status END,
             last_error = CASE WHEN $18::text IS NOT NULL THEN $18 ELSE last_error END,
             refreshed_at = now(),
             last_refresh_job_id = $2,
             last_refresh_run = $21,
             last_trace_id = $19,
             updated_at = now()
         WHERE id = $1 AND last_refresh_run IS DISTINCT FROM $21
           AND EXISTS (SELECT 1 FROM queue_jobs q
                       WHERE q.id = $2 AND q.state = 'running' AND q.lease_token = $20 AND q.attempts = $22)",
        link_id,
        lease.job_id,
        r.title.as_deref(),
        r.description.as_deref(),
        r.favicon_url.as_deref(),
        r.image_url.as_deref(),
        r.site_name.as_deref(),
        r.http_etag.as_deref(),
        r.http_last_modified.as_deref(),
        gh.map(|g| g.owner.as_str()),
        gh.map(|g| g.repo.as_str()),
        gh.map(|g| g.stars),
        gh.and_then(|g| g.description.as_deref()),
        gh.map(|g| g.archived),
        gh.and_then(|g| g.pushed_at),
        gh.and_then(|g| g.etag.as_deref()),
        r.repo_missing,
        r.error.as_deref(),
        crate::telemetry::current_trace_id(),
        lease.token,
        lease.run,
        lease.attempt,
    )
    .execute(pool)
    .await;
    written(result)
}

/// Conditional-request state of a link (ETag, Last-Modified, GitHub ETag and repo).
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct CacheState {
    /// Page ETag.
    pub http_etag: Option<String>,
    /// Page Last-Modified.
    pub http_last_modified: Option<String>,
    /// GitHub owner.
    pub github_owner: Option<String>,
    /// GitHub repo.
    pub github_repo: Option<String>,
    /// GitHub ETag.
    pub github_etag: Option<String>,
}

/// Reads a link's conditional-request state; `None` when the link was deleted.
///
/// # Errors
///
/// If the query fails.
pub async fn cache_state(pool: &PgPool, link_id: i64) -> Result<Option<CacheState>, sqlx::Error> {
    sqlx::query_as!(
        CacheState,
        "SELECT http_etag, http_last_modified, github_owner, github_repo, github_etag FROM links WHERE id = $1",
        link_id
    )
    .fetch_optional(pool)
    .await
}
