//! The blob fetch protocol, node side. Pure: no I/O, time passed in.
//!
//! A node asks for a window of chunks starting at the first byte it lacks; when the window
//! is in, it asks for the next. A fetch that makes no progress for [`STALL`] is asked
//! again from where it stopped, so a lost chunk, a reconnect or a control-plane restart
//! only costs a retry, never a restart from zero. When the last byte is in, the SHA-256 is
//! checked; a mismatch discards the bytes and starts over.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use wedge_shared::Digest;
use wedge_shared::messages::{BLOB_CHUNK_SIZE, BlobChunk, BlobRequest};

/// Chunks asked for at once.
pub const WINDOW: u32 = 8;
/// A fetch without progress for this long is asked for again.
pub const STALL: Duration = Duration::from_secs(3);

/// What a chunk did to its fetch.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Not for an active fetch, or not the next bytes: ignored.
    Ignored,
    /// Appended; nothing else to do yet.
    Appended,
    /// Appended and the window is in: send this request for the next one.
    More(BlobRequest),
    /// The blob is complete and its digest verified.
    Complete(Digest, Vec<u8>),
    /// The blob is complete but its digest is wrong (or its size is); it starts over.
    Corrupt(Digest, String),
}

#[derive(Debug)]
struct Fetch {
    size: u64,
    buf: Vec<u8>,
    window_end: u64,
    last_progress: Instant,
}

impl Fetch {
    fn request(&mut self, digest: Digest, now: Instant) -> BlobRequest {
        let offset = self.buf.len() as u64;
        self.window_end = (offset + u64::from(WINDOW) * BLOB_CHUNK_SIZE as u64).min(self.size);
        self.last_progress = now;
        BlobRequest {
            digest,
            offset,
            max_chunks: WINDOW,
        }
    }
}

/// All blob fetches in progress.
#[derive(Debug, Default)]
pub struct Fetcher {
    active: HashMap<Digest, Fetch>,
}

impl Fetcher {
    /// Starts fetching `digest` of `size` bytes unless it is already under way; returns
    /// the first request to send.
    pub fn want(&mut self, digest: Digest, size: u64, now: Instant) -> Option<BlobRequest> {
        if self.active.contains_key(&digest) {
            return None;
        }
        let mut fetch = Fetch {
            size,
            // Capacity is a hint only: never trust a remote size for an allocation.
            buf: Vec::with_capacity(size.min(1024 * 1024) as usize),
            window_end: 0,
            last_progress: now,
        };
        let req = fetch.request(digest, now);
        self.active.insert(digest, fetch);
        Some(req)
    }

    pub fn is_fetching(&self, digest: &Digest) -> bool {
        self.active.contains_key(digest)
    }

    /// Forgets fetches of blobs no longer wanted.
    pub fn retain(&mut self, wanted: &[Digest]) {
        self.active.retain(|d, _| wanted.contains(d));
    }

    pub fn on_chunk(&mut self, chunk: BlobChunk, now: Instant) -> Progress {
        let Some(fetch) = self.active.get_mut(&chunk.digest) else {
            return Progress::Ignored;
        };
        if chunk.offset != fetch.buf.len() as u64 || chunk.data.is_empty() {
            return Progress::Ignored;
        }
        let digest = chunk.digest;
        if chunk.total != fetch.size
            || fetch.buf.len() as u64 + chunk.data.len() as u64 > fetch.size
        {
            let reason = format!(
                "control plane sent a blob of {} bytes, desired state says {}",
                chunk.total, fetch.size
            );
            fetch.buf.clear();
            return Progress::Corrupt(digest, reason);
        }
        fetch.buf.extend_from_slice(&chunk.data);
        fetch.last_progress = now;
        let have = fetch.buf.len() as u64;
        if have == fetch.size {
            let Some(done) = self.active.remove(&digest) else {
                return Progress::Ignored;
            };
            let actual = Digest::of(&done.buf);
            if actual != digest {
                // Start over on the next stall check.
                self.active.insert(
                    digest,
                    Fetch {
                        buf: Vec::new(),
                        window_end: 0,
                        ..done
                    },
                );
                return Progress::Corrupt(digest, format!("blob digest mismatch: got {actual}"));
            }
            return Progress::Complete(digest, done.buf);
        }
        if have >= fetch.window_end {
            return Progress::More(fetch.request(digest, now));
        }
        Progress::Appended
    }

    /// Requests for fetches that stalled, resuming where each stopped.
    pub fn stalled(&mut self, now: Instant) -> Vec<BlobRequest> {
        self.active
            .iter_mut()
            .filter(|(_, f)| now.duration_since(f.last_progress) >= STALL)
            .map(|(d, f)| f.request(*d, now))
            .collect()
    }

    /// Requests for every fetch, resuming where each stopped (after a reconnect).
    pub fn resume_all(&mut self, now: Instant) -> Vec<BlobRequest> {
        self.active
            .iter_mut()
            .map(|(d, f)| f.request(*d, now))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(blob: &[u8], digest: Digest, from: usize) -> Vec<BlobChunk> {
        blob[from..]
            .chunks(BLOB_CHUNK_SIZE)
            .enumerate()
            .map(|(i, data)| BlobChunk {
                digest,
                offset: (from + i * BLOB_CHUNK_SIZE) as u64,
                total: blob.len() as u64,
                data: data.to_vec(),
            })
            .collect()
    }

    #[test]
    fn fetches_in_windows_and_verifies() {
        let blob: Vec<u8> = (0..(BLOB_CHUNK_SIZE * 10 + 5)).map(|i| i as u8).collect();
        let d = Digest::of(&blob);
        let now = Instant::now();
        let mut f = Fetcher::default();
        let first = f.want(d, blob.len() as u64, now).unwrap();
        assert_eq!(first.offset, 0);
        assert_eq!(
            f.want(d, blob.len() as u64, now),
            None,
            "no duplicate fetch"
        );
        let all = chunks(&blob, d, 0);
        let mut outcomes = Vec::new();
        for c in all {
            outcomes.push(f.on_chunk(c, now));
        }
        assert!(
            matches!(outcomes[WINDOW as usize - 1], Progress::More(BlobRequest { offset, .. }) if offset == (WINDOW as usize * BLOB_CHUNK_SIZE) as u64)
        );
        assert_eq!(outcomes.last(), Some(&Progress::Complete(d, blob.clone())));
        assert!(!f.is_fetching(&d));
    }

    #[test]
    fn duplicates_and_strangers_are_ignored_and_stalls_resume() {
        let blob = vec![7u8; BLOB_CHUNK_SIZE * 2];
        let d = Digest::of(&blob);
        let t0 = Instant::now();
        let mut f = Fetcher::default();
        f.want(d, blob.len() as u64, t0);
        let cs = chunks(&blob, d, 0);
        assert_eq!(f.on_chunk(cs[0].clone(), t0), Progress::Appended);
        assert_eq!(f.on_chunk(cs[0].clone(), t0), Progress::Ignored);
        let stranger = BlobChunk {
            digest: Digest::of(b"other"),
            ..cs[1].clone()
        };
        assert_eq!(f.on_chunk(stranger, t0), Progress::Ignored);
        assert!(f.stalled(t0 + Duration::from_secs(1)).is_empty());
        let again = f.stalled(t0 + STALL);
        assert_eq!(again.len(), 1);
        assert_eq!(
            again[0].offset, BLOB_CHUNK_SIZE as u64,
            "resumes, not restarts"
        );
        assert_eq!(f.on_chunk(cs[1].clone(), t0), Progress::Complete(d, blob));
    }

    #[test]
    fn corrupt_blob_starts_over() {
        let blob = vec![1u8; 100];
        let d = Digest::of(b"something else");
        let t0 = Instant::now();
        let mut f = Fetcher::default();
        f.want(d, 100, t0);
        let c = chunks(&blob, d, 0).remove(0);
        assert!(matches!(f.on_chunk(c, t0), Progress::Corrupt(..)));
        assert!(f.is_fetching(&d));
        assert_eq!(f.stalled(t0 + STALL)[0].offset, 0);
    }

    #[test]
    fn wrong_size_is_refused() {
        let d = Digest::of(b"x");
        let mut f = Fetcher::default();
        let t0 = Instant::now();
        f.want(d, 10, t0);
        let c = BlobChunk {
            digest: d,
            offset: 0,
            total: 20,
            data: vec![0; 20],
        };
        assert!(matches!(f.on_chunk(c, t0), Progress::Corrupt(..)));
    }
}
