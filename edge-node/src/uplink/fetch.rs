//! The blob fetch protocol, node side. Pure: no I/O, time passed in.
//!
//! A node asks for a window of chunks starting at the first byte it lacks; when the window
//! is in, it asks for the next. A fetch that makes no progress for [`STALL`] is asked
//! again from where it stopped, so a lost chunk, a reconnect or a control-plane restart
//! only costs a retry, never a restart from zero. When the last byte is in, the SHA-256 is
//! checked; a mismatch discards the bytes and starts over.
//!
//! A circuit breaker per blob: after [`TRIP_AFTER`] failures in a row (stalls, corrupt
//! blobs, "not found") the fetch pauses — 30 s, doubling to 5 min while it keeps failing —
//! then tries once (half-open); any progress closes it again. Without it a fleet whose
//! control plane lost a blob, or serves it broken, would ask for it every 3 s per node
//! forever. A reconnect closes every circuit: the failures may have been the link's.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use wedge_proto::Digest;
use wedge_proto::messages::{BLOB_CHUNK_SIZE, BlobChunk, BlobRequest};

/// Chunks asked for at once.
pub const WINDOW: u32 = 8;
/// A fetch without progress for this long is asked for again.
pub const STALL: Duration = Duration::from_secs(3);
/// Failures in a row that open a fetch's circuit.
pub const TRIP_AFTER: u32 = 5;
/// First pause of an open circuit; it doubles each time it opens again, up to the max.
pub const COOLDOWN: Duration = Duration::from_secs(30);
pub const COOLDOWN_MAX: Duration = Duration::from_secs(300);

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
    /// Failures since the last progress.
    failures: u32,
    /// Times the circuit opened since the last progress.
    trips: u32,
    /// While set and in the future, no requests are sent.
    open_until: Option<Instant>,
}

impl Fetch {
    fn new(size: u64, now: Instant) -> Self {
        Self {
            size,
            // Capacity is a hint only: never trust a remote size for an allocation.
            buf: Vec::with_capacity(size.min(1024 * 1024) as usize),
            window_end: 0,
            last_progress: now,
            failures: 0,
            trips: 0,
            open_until: None,
        }
    }

    /// Counts a failure; returns the pause when it opens the circuit.
    fn fail(&mut self, now: Instant) -> Option<Duration> {
        self.failures += 1;
        if self.failures < TRIP_AFTER {
            return None;
        }
        let pause = COOLDOWN
            .saturating_mul(1 << self.trips.min(8))
            .min(COOLDOWN_MAX);
        self.trips += 1;
        // Half-open afterwards: one more failure opens it again.
        self.failures = TRIP_AFTER - 1;
        self.open_until = Some(now + pause);
        Some(pause)
    }

    fn progressed(&mut self) {
        self.failures = 0;
        self.trips = 0;
        self.open_until = None;
    }

    fn is_open(&self, now: Instant) -> bool {
        self.open_until.is_some_and(|t| now < t)
    }

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
        let mut fetch = Fetch::new(size, now);
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
            trip_log(&digest, fetch.fail(now));
            return Progress::Corrupt(digest, reason);
        }
        fetch.buf.extend_from_slice(&chunk.data);
        fetch.last_progress = now;
        fetch.progressed();
        let have = fetch.buf.len() as u64;
        if have == fetch.size {
            let Some(done) = self.active.remove(&digest) else {
                return Progress::Ignored;
            };
            let actual = Digest::of(&done.buf);
            if actual != digest {
                // Start over on the next stall check.
                let mut again = Fetch {
                    buf: Vec::new(),
                    window_end: 0,
                    ..done
                };
                trip_log(&digest, again.fail(now));
                self.active.insert(digest, again);
                return Progress::Corrupt(digest, format!("blob digest mismatch: got {actual}"));
            }
            return Progress::Complete(digest, done.buf);
        }
        if have >= fetch.window_end {
            return Progress::More(fetch.request(digest, now));
        }
        Progress::Appended
    }

    /// The control plane has no such blob: a failure of its fetch.
    pub fn not_found(&mut self, digest: &Digest, now: Instant) {
        if let Some(fetch) = self.active.get_mut(digest) {
            trip_log(digest, fetch.fail(now));
        }
    }

    /// Whether `digest`'s fetch is paused by its circuit breaker.
    pub fn is_paused(&self, digest: &Digest, now: Instant) -> bool {
        self.active.get(digest).is_some_and(|f| f.is_open(now))
    }

    /// Requests for fetches that stalled, resuming where each stopped; a stall is a
    /// failure, and fetches whose circuit is open are left alone until it half-opens.
    pub fn stalled(&mut self, now: Instant) -> Vec<BlobRequest> {
        let mut out = Vec::new();
        for (digest, fetch) in &mut self.active {
            if fetch.is_open(now) {
                continue;
            }
            let half_open = fetch.open_until.take().is_some();
            if !half_open && now.duration_since(fetch.last_progress) < STALL {
                continue;
            }
            if !half_open && let Some(pause) = fetch.fail(now) {
                trip_log(digest, Some(pause));
                continue;
            }
            out.push(fetch.request(*digest, now));
        }
        out
    }

    /// Requests for every fetch, resuming where each stopped (after a reconnect, which
    /// closes every circuit).
    pub fn resume_all(&mut self, now: Instant) -> Vec<BlobRequest> {
        self.active
            .iter_mut()
            .map(|(d, f)| {
                f.progressed();
                f.request(*d, now)
            })
            .collect()
    }
}

fn trip_log(digest: &Digest, pause: Option<Duration>) {
    if let Some(pause) = pause {
        tracing::warn!(%digest, ?pause, "blob fetch keeps failing; pausing it (circuit open)");
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
    fn repeated_failures_open_the_circuit_and_progress_closes_it() {
        let blob = vec![3u8; BLOB_CHUNK_SIZE * 2];
        let d = Digest::of(&blob);
        let t0 = Instant::now();
        let mut f = Fetcher::default();
        f.want(d, blob.len() as u64, t0);
        // Stalls 1..TRIP_AFTER-1 are retried; the TRIP_AFTER-th opens the circuit.
        let mut t = t0;
        for _ in 1..TRIP_AFTER {
            t += STALL;
            assert_eq!(f.stalled(t).len(), 1);
        }
        t += STALL;
        assert!(f.stalled(t).is_empty(), "circuit open");
        assert!(f.is_paused(&d, t));
        assert!(f.stalled(t + COOLDOWN - Duration::from_secs(1)).is_empty());
        // Half-open: one try; failing again pauses twice as long.
        t += COOLDOWN;
        assert_eq!(f.stalled(t).len(), 1);
        t += STALL;
        assert!(f.stalled(t).is_empty());
        assert!(f.is_paused(&d, t + COOLDOWN));
        assert!(!f.is_paused(&d, t + 2 * COOLDOWN));
        // "Not found" counts too, and a reconnect closes the circuit.
        f.not_found(&d, t);
        assert_eq!(f.resume_all(t).len(), 1);
        assert!(!f.is_paused(&d, t));
        // Progress resets the count: four more stalls are retried again.
        let cs = chunks(&blob, d, 0);
        assert_eq!(f.on_chunk(cs[0].clone(), t), Progress::Appended);
        for _ in 1..TRIP_AFTER {
            t += STALL;
            assert_eq!(f.stalled(t).len(), 1);
        }
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
