//! The `links` table: saved URLs and what the jobs write back.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::link_url::LinkUrl;

/// A link's status.
pub const STATUSES: [&str; 5] = ["active", "inaccessible", "repo_unavailable", "archived", "paused"];

/// GitHub metadata of a repository link.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Link {
    /// Id.
    pub id: i64,
    /// Normalised URL.
    pub url: String,
    /// Host (concurrency group).
    pub host: String,
    /// `active`, `inaccessible`, `repo_unavailable`, `archived` or `paused`.
    pub status: String,
    /// Why the link has its status when someone or something set it by hand (`paused by api`,
    /// `excluded by rule "…"`); `None` otherwise.
    pub status_reason: Option<String>,
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
    status_reason: Option<String>,
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
            status_reason: r.status_reason,
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
                + "id, url, host, status, status_reason, title, description, favicon_url, image_url, site_name, \
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

/// Which links a listing returns; every given filter must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only this status.
    pub status: Option<String>,
    /// Only this host (exact, lower case as stored).
    pub host: Option<String>,
    /// Only links whose URL or title contains this text, ignoring case.
    pub text: Option<String>,
    /// Only links last checked before this instant (never-checked links do not match).
    pub checked_before: Option<DateTime<Utc>>,
    /// Only links with an id above this one: the keyset cursor of the previous page.
    pub after_id: Option<i64>,
}

/// Lists links, oldest first, optionally of one status.
///
/// # Errors
///
/// If the query fails.
pub async fn list(pool: &PgPool, status: Option<&str>, limit: i64) -> Result<Vec<Link>, sqlx::Error> {
    let filter = ListFilter {
        status: status.map(str::to_owned),
        ..ListFilter::default()
    };
    list_page(pool, &filter, limit).await
}

/// `link_list_page`: up to `limit` links matching `filter`, by id: one page of a keyset
/// pagination (the next page starts after the last id of this one), so a page costs the same
/// wherever it is and concurrent inserts never shift an item onto two pages. `links list`, the
/// API and the dashboard all read through here.
///
/// One statement for every combination of filters: an absent filter is a `NULL` parameter, which
/// the custom plans of our pools (`plan_cache_mode = force_custom_plan`) fold away. The text
/// filter is `strpos` over lower-cased text, so `%` and `_` in it are plain characters.
///
/// # Errors
///
/// If the query fails.
pub async fn list_page(pool: &PgPool, filter: &ListFilter, limit: i64) -> Result<Vec<Link>, sqlx::Error> {
    let rows = query_links!(
        "SELECT ",
        " FROM links
         WHERE ($1::text IS NULL OR status = $1)
           AND ($2::text IS NULL OR host = lower($2))
           AND ($3::text IS NULL
                OR strpos(lower(url), lower($3)) > 0
                OR strpos(lower(coalesce(title, '')), lower($3)) > 0)
           AND ($4::timestamptz IS NULL OR last_checked_at < $4)
           AND id > coalesce($5::int8, 0)
         ORDER BY id
         LIMIT $6",
        filter.status.as_deref(),
        filter.host.as_deref(),
        filter.text.as_deref(),
        filter.checked_before,
        filter.after_id,
        limit.max(0)
    )
    .fetch_all(pool)
    .await?;
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

impl LinkRef {
    /// The id and URL parameters of a statement that takes either (the other one is `NULL`).
    fn parts(&self) -> (Option<i64>, Option<&str>) {
        match self {
            Self::Id(id) => (Some(*id), None),
            Self::Url(url) => (None, Some(url.as_str())),
        }
    }
}

/// A manual status change: who asked, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange<'a> {
    /// `paused` or `active`.
    pub status: &'a str,
    /// Who asked: `cli:<user>`, `api`, `dashboard`.
    pub actor: &'a str,
    /// Why, as stored in the event (and as the link's `status_reason` while it is paused).
    pub reason: &'a str,
}

/// `link_set_status`: a manual status change and its `link_events` row in one statement, so
/// there is no transition without its event and no event without its transition. The event's
/// `seq` is the link's `event_seq + 1`, taken in the same `UPDATE` (the row lock orders
/// concurrent transitions of one link). Its type is `link.up` when a dead link (`inaccessible`,
/// `repo_unavailable`) becomes `active`, else `link.changed`.
///
/// Becoming `active` also resets the failure count (the operator's override); becoming `paused`
/// keeps it, frozen, as a paused link is never checked on schedule and a late result does not
/// count. A link already in `change.status` gets no event and keeps its reason.
///
/// Returns the link after the change, or `None` if there is no such link.
///
/// # Errors
///
/// If the statement fails.
pub async fn set_status(pool: &PgPool, link: &LinkRef, change: &StatusChange<'_>) -> Result<Option<Link>, sqlx::Error> {
    let (id, url) = link.parts();
    let status_reason = (change.status == "paused").then_some(change.reason);
    let row = query_links!(
        "WITH target AS (
             SELECT id, status AS from_status FROM links
             WHERE id = $1 OR url = $2
             FOR UPDATE
         ),
         changed AS (
             UPDATE links l
             SET status = $3,
                 status_reason = CASE WHEN t.from_status = $3 THEN l.status_reason ELSE $4 END,
                 consecutive_failures = CASE WHEN $3 = 'active' THEN 0 ELSE l.consecutive_failures END,
                 event_seq = l.event_seq + CASE WHEN t.from_status = $3 THEN 0 ELSE 1 END,
                 updated_at = now()
             FROM target t
             WHERE l.id = t.id
             RETURNING l.*, t.from_status
         ),
         event AS (
             INSERT INTO link_events (link_id, seq, url, type, from_status, to_status, reason, actor)
             SELECT id, event_seq, url, link_event_type(from_status, status), from_status, status, $5, $6
             FROM changed
             WHERE from_status <> status
         )
         SELECT ",
        " FROM changed",
        id,
        url,
        change.status,
        status_reason,
        change.reason,
        change.actor,
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Link::from))
}

/// Manual override: status `active`, failures 0, with its event (see [`set_status`]). Returns
/// the link, or `None` if unknown.
///
/// # Errors
///
/// If the statement fails.
pub async fn activate(pool: &PgPool, link: &LinkRef, actor: &str) -> Result<Option<Link>, sqlx::Error> {
    let reason = format!("activated by {actor}");
    set_status(
        pool,
        link,
        &StatusChange {
            status: "active",
            actor,
            reason: &reason,
        },
    )
    .await
}

/// A new link as saved: what its first jobs need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inserted {
    /// `links.id`.
    pub id: i64,
    /// The normalised URL.
    pub url: String,
    /// Its host (the jobs' group).
    pub host: String,
    /// Its status (`paused` links get no jobs).
    pub status: String,
}

/// `link_ids_by_url`: the ids of those of `urls` that are saved, as `(id, url)`.
///
/// # Errors
///
/// If the query fails.
pub async fn ids_by_url<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    urls: &[String],
) -> Result<Vec<(i64, String)>, sqlx::Error> {
    let rows = sqlx::query!("SELECT id, url FROM links WHERE url = ANY($1)", urls)
        .fetch_all(executor)
        .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.url)).collect())
}

/// `link_delete`: deletes a link with `executor`; returns its id and URL, or `None` if there was
/// no such link. Its verdicts go with it, in the same statement (`link_verdicts` has no foreign
/// key: the write-back's hot path would pay its check per row); its events stay (the history
/// outlives the link). A job of it still running finds no row at its write-back and writes
/// nothing, verdict included.
///
/// # Errors
///
/// If the statement fails.
pub async fn delete<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    link: &LinkRef,
) -> Result<Option<(i64, String)>, sqlx::Error> {
    let (id, url) = link.parts();
    let row = sqlx::query!(
        "WITH gone AS (DELETE FROM links WHERE id = $1 OR url = $2 RETURNING id, url),
              verdicts AS (DELETE FROM link_verdicts v USING gone WHERE v.link_id = gone.id)
         SELECT id AS \"id!\", url AS \"url!\" FROM gone",
        id,
        url
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.map(|r| (r.id, r.url)))
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
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRecord {
    /// `ok`, `dead`, `transient` (attempts exhausted) or `blocked`.
    pub outcome: &'static str,
    /// HTTP status, if a response arrived.
    pub status_code: Option<u16>,
    /// Human-readable reason for anything but `ok`.
    pub error: Option<String>,
    /// Whether this result counts toward the failure threshold (dead or exhausted transient).
    pub counts_as_failure: bool,
    /// How long the check took, in milliseconds (kept in the link's verdict history); `None`
    /// when not measured.
    pub duration_ms: Option<f64>,
}

/// Records on the `db.write_back` span whether the row changed (`false`: a replay of a job
/// already written) or why the statement failed.
fn written(result: Result<bool, sqlx::Error>) -> Result<bool, sqlx::Error> {
    let span = tracing::Span::current();
    match result {
        Ok(applied) => {
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
/// A status change writes its `link_events` row in the same statement (so the same transaction),
/// and only when the row is written (a replay adds nothing).
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
        "WITH cur AS (
             -- locked: the event needs the status the update replaces (see check_writer)
             SELECT id, url, status AS from_status FROM links
             WHERE id = $1 AND last_refresh_run IS DISTINCT FROM $21
               AND EXISTS (SELECT 1 FROM queue_jobs q
                           WHERE q.id = $2 AND q.state = 'running' AND q.lease_token = $20 AND q.attempts = $22)
             FOR NO KEY UPDATE
         ),
         n AS (
             SELECT cur.*,
                    -- a paused link stays paused whatever a late refresh finds
                    CASE WHEN from_status = 'paused' THEN 'paused'
                         WHEN $14::bool IS TRUE THEN 'archived'
                         WHEN $17 THEN 'repo_unavailable'
                         WHEN $14::bool IS FALSE AND from_status IN ('archived', 'repo_unavailable') THEN 'active'
                         ELSE from_status END AS to_status
             FROM cur
         ),
         w AS (
             UPDATE links l
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
                 status = n.to_status,
                 event_seq = l.event_seq + (n.to_status <> n.from_status)::int,
                 last_error = CASE WHEN $18::text IS NOT NULL THEN $18 ELSE last_error END,
                 refreshed_at = now(),
                 last_refresh_job_id = $2,
                 last_refresh_run = $21,
                 last_trace_id = $19,
                 updated_at = now()
             FROM n
             WHERE l.id = n.id
             RETURNING n.id, n.url, n.from_status, n.to_status, l.event_seq
         ),
         events AS (
             INSERT INTO link_events (link_id, seq, url, type, from_status, to_status, reason, job_id)
             SELECT id, event_seq, url, link_event_type(from_status, to_status), from_status, to_status,
                    CASE to_status WHEN 'archived' THEN 'repository archived on GitHub'
                                   WHEN 'repo_unavailable' THEN 'repository not found on GitHub'
                                   ELSE 'repository found on GitHub' END,
                    $2
             FROM w
             WHERE to_status <> from_status
         )
         -- one row per written link: `written` counts it
         SELECT id FROM w",
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
    .fetch_optional(pool)
    .await;
    written(result.map(|row| row.is_some()))
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
