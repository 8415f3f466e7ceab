//! The writes of an import and of the host rules: a batch of links saved with their titles and
//! the exclusions of `LINKPULSE_RULES_FILE`, with the first jobs of the new ones; and the pausing
//! of saved links an exclude pattern matches (`producer links apply-rules`).
//!
//! A batch is one transaction: its links and their first check and refresh commit together (as
//! [`super::lifecycle::add`] does for `links add`), so an import interrupted between batches
//! leaves whole batches, each link with its jobs, and running it again reports the saved ones as
//! duplicates.

use sqlx::PgPool;

use linkpulse_queue::{CancelSelection, NewJob, control};

use super::lifecycle::{LifecycleError, job_now};
use super::links::{self, Inserted, LinkRef, ListFilter, NewLink, StatusChange};
use crate::link_jobs::{CHECK, REFRESH, dedupe_key};
use crate::rules::Rules;

/// One link of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportLink {
    /// The validated URL and its GitHub repository, if any.
    pub link: NewLink,
    /// The title the file gave it; stored when the link has none yet.
    pub title: Option<String>,
    /// `excluded by rule "…"` when an exclude pattern matches: the link is saved `paused` with
    /// this reason and gets no job.
    pub excluded: Option<String>,
}

/// What a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedBatch {
    /// The links that were new.
    pub inserted: Vec<Inserted>,
    /// Links saved before whose empty title the file filled.
    pub titled: u64,
    /// Jobs enqueued (a check and a refresh per new link that is not paused).
    pub enqueued: u64,
}

/// Saves `batch` (its URLs distinct) in one transaction: new links with their title, `paused`
/// with their reason when excluded; an already saved link gets the file's title only if it has
/// none. With `first_jobs` (the jobs' `max_attempts`), every new link that is not paused gets its
/// check and refresh at once, like a link added by hand.
///
/// # Errors
///
/// [`LifecycleError`] if a statement fails; nothing of the batch is saved then.
#[tracing::instrument(name = "links.import_batch", skip_all, fields(links = batch.len(), added, enqueued))]
pub async fn save_batch(
    pool: &PgPool,
    batch: &[ImportLink],
    first_jobs: Option<i32>,
) -> Result<SavedBatch, LifecycleError> {
    if batch.is_empty() {
        return Ok(SavedBatch::default());
    }
    let urls: Vec<String> = batch.iter().map(|l| l.link.link.url.to_string()).collect();
    let hosts: Vec<&str> = batch.iter().map(|l| l.link.link.host.as_str()).collect();
    let owners: Vec<Option<&str>> = batch
        .iter()
        .map(|l| l.link.github.as_ref().map(|(owner, _)| owner.as_str()))
        .collect();
    let repos: Vec<Option<&str>> = batch
        .iter()
        .map(|l| l.link.github.as_ref().map(|(_, repo)| repo.as_str()))
        .collect();
    let titles: Vec<Option<&str>> = batch.iter().map(|l| l.title.as_deref()).collect();
    let reasons: Vec<Option<&str>> = batch.iter().map(|l| l.excluded.as_deref()).collect();
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query_as!(
        Inserted,
        "INSERT INTO links (url, host, github_owner, github_repo, title, status, status_reason)
         SELECT url, host, owner, repo, title,
                CASE WHEN reason IS NULL THEN 'active' ELSE 'paused' END, reason
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
              AS input(url, host, owner, repo, title, reason)
         ON CONFLICT (url) DO NOTHING
         RETURNING id, url, host, status",
        &urls,
        // Borrowed strings: the macro's check expects owned ones for `text[]`.
        &hosts as &[&str],
        &owners as &[Option<&str>],
        &repos as &[Option<&str>],
        &titles as &[Option<&str>],
        &reasons as &[Option<&str>],
    )
    .fetch_all(&mut *tx)
    .await?;
    // Links saved before: the file's title fills an empty one, never replaces one (a refresh may
    // have read a better one from the page). The rows inserted above have theirs already.
    let titled = sqlx::query!(
        "UPDATE links l SET title = input.title, updated_at = now()
         FROM unnest($1::text[], $2::text[]) AS input(url, title)
         WHERE l.url = input.url AND input.title IS NOT NULL AND coalesce(l.title, '') = ''",
        &urls,
        &titles as &[Option<&str>],
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let jobs: Vec<NewJob> = match first_jobs {
        Some(max_attempts) => inserted
            .iter()
            .filter(|link| link.status != "paused")
            .flat_map(|link| [CHECK, REFRESH].map(|kind| job_now(kind, link.id, &link.url, &link.host, max_attempts)))
            .collect(),
        None => Vec::new(),
    };
    let report = linkpulse_queue::insert_many(&mut *tx, &jobs).await?;
    tx.commit().await?;
    let span = tracing::Span::current();
    span.record("added", inserted.len());
    span.record("enqueued", report.inserted);
    Ok(SavedBatch {
        inserted,
        titled,
        enqueued: report.inserted,
    })
}

/// Links read per statement while applying the rules.
const APPLY_BATCH: i64 = 1000;

/// A saved link an exclude pattern paused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PausedByRule {
    /// Its id.
    pub id: i64,
    /// Its URL.
    pub url: String,
    /// Its status before.
    pub from: String,
    /// `excluded by rule "…"`.
    pub reason: String,
    /// Its queued jobs, cancelled (a running one finishes).
    pub cancelled_jobs: u64,
}

/// Pauses every saved link that an exclude pattern of `rules` matches and is not paused yet, with
/// `excluded by rule "<pattern>"` as its reason and a `link.changed` event by `rule`, and cancels
/// its queued jobs. Links are read in keyset batches (patterns are Rust regexes, matched here
/// rather than by PostgreSQL, whose regex dialect differs). Returns the links paused.
///
/// # Errors
///
/// [`LifecycleError`] if a statement fails; the links paused before it stay paused.
pub async fn apply_rules(pool: &PgPool, rules: &Rules) -> Result<Vec<PausedByRule>, LifecycleError> {
    let mut paused = Vec::new();
    if !rules.has_excludes() {
        return Ok(paused);
    }
    let mut filter = ListFilter::default();
    loop {
        let page = links::list_page(pool, &filter, APPLY_BATCH).await?;
        let Some(last) = page.last() else {
            break;
        };
        filter.after_id = Some(last.id);
        for link in page.iter().filter(|l| l.status != "paused") {
            let Some(reason) = rules.exclusion_reason(&link.url) else {
                continue;
            };
            let change = StatusChange {
                status: "paused",
                actor: "rule",
                reason: &reason,
            };
            // The status (with its event) first, then the queued jobs: once paused, no cycle
            // enqueues more, and a job claimed in between finds the link paused.
            let Some(changed) = links::set_status(pool, &LinkRef::Id(link.id), &change).await? else {
                continue;
            };
            let selection = CancelSelection {
                dedupe_key: Some(dedupe_key(link.id)),
                ..CancelSelection::default()
            };
            let cancelled_jobs = control::cancel(pool, &selection, Some(&reason), "rule").await?;
            paused.push(PausedByRule {
                id: changed.id,
                url: changed.url,
                from: link.status.clone(),
                reason,
                cancelled_jobs,
            });
        }
    }
    Ok(paused)
}
