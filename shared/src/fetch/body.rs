//! Capped bodies: at most so many decoded bytes, whatever `Content-Length` says.
//!
//! The decompressor runs inside the stream, so a gzip bomb stops at the cap instead of expanding
//! in memory. One reader for every response we read: the fetcher's pages and the GitHub API's
//! JSON.

/// Decides, while a body streams in, where reading may stop (the scrape stops at the end of an
/// HTML head). Fed every chunk once, in order, so a scanner that keeps its state does linear work
/// however the server slices the body.
pub trait StopAt: Send {
    /// The next chunk; returns the length of the body worth keeping once it is known.
    fn feed(&mut self, chunk: &[u8]) -> Option<usize>;
}

/// Makes a fresh [`StopAt`] for each response (a plain `fn`, so requests stay `Clone`).
pub type StopAtFactory = fn() -> Box<dyn StopAt>;

/// Reads at most `max` bytes of `chunks`; `stop` sees each chunk once. Returns the bytes and
/// whether the body was cut: at the cap (a body that fills the cap exactly counts as cut — the
/// rest is not read to find out) or where `stop` said.
///
/// # Errors
///
/// The stream's first error.
pub async fn read_capped<S, B, E>(
    mut chunks: S,
    max: usize,
    mut stop: Option<Box<dyn StopAt>>,
) -> Result<(Vec<u8>, bool), E>
where
    S: futures::Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
{
    use futures::StreamExt;
    let mut body = Vec::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        let chunk = chunk.as_ref();
        let room = max.saturating_sub(body.len());
        let taken = &chunk[..chunk.len().min(room)];
        body.extend_from_slice(taken);
        if let Some(end) = stop.as_mut().and_then(|stop| stop.feed(taken)) {
            body.truncate(end);
            return Ok((body, true));
        }
        if chunk.len() >= room {
            return Ok((body, true));
        }
    }
    Ok((body, false))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::scrape::{HeadScanner, MAX_HEAD_BYTES};

    /// Counts the bytes handed to the scanner it wraps.
    struct Counting(HeadScanner, Arc<AtomicUsize>);

    impl StopAt for Counting {
        fn feed(&mut self, chunk: &[u8]) -> Option<usize> {
            self.1.fetch_add(chunk.len(), Ordering::Relaxed);
            self.0.feed(chunk)
        }
    }

    #[tokio::test]
    async fn a_body_in_one_byte_chunks_is_scanned_once_not_once_per_chunk() {
        let mut page = vec![b'x'; MAX_HEAD_BYTES - 7];
        page.extend_from_slice(b"</head>");
        page.extend_from_slice(b"<body>never read</body>");
        let fed = Arc::new(AtomicUsize::new(0));
        let stop: Box<dyn StopAt> = Box::new(Counting(HeadScanner::default(), fed.clone()));
        let chunks = futures::stream::iter(page.chunks(1).map(Ok::<_, std::io::Error>));
        let (body, truncated) = read_capped(chunks, MAX_HEAD_BYTES, Some(stop)).await.expect("read");
        assert_eq!(body.len(), MAX_HEAD_BYTES);
        assert!(body.ends_with(b"</head>") && truncated);
        let fed = fed.load(Ordering::Relaxed);
        assert!(
            fed < 2 * body.len(),
            "{fed} bytes scanned for a {}-byte head",
            body.len()
        );
    }

    #[tokio::test]
    async fn the_cap_holds_without_a_stop() {
        let chunks = futures::stream::iter([Ok::<_, std::io::Error>(vec![b'a'; 700]), Ok(vec![b'b'; 700])]);
        let (body, truncated) = read_capped(chunks, 1000, None).await.expect("read");
        assert_eq!((body.len(), truncated), (1000, true));
    }

    #[tokio::test]
    async fn a_body_under_the_cap_is_whole() {
        let chunks = futures::stream::iter([Ok::<_, std::io::Error>(vec![b'a'; 700]), Ok(vec![b'b'; 299])]);
        let (body, truncated) = read_capped(chunks, 1000, None).await.expect("read");
        assert_eq!((body.len(), truncated), (999, false));
    }
}
