//! A store's capacity: the most bytes of files it may hold, and the room
//! that puts in flight have reserved under it.
//!
//! A put reserves its bytes before it writes them (up front when the caller
//! announced the size, otherwise chunk by chunk as the body arrives) and
//! releases them when it ends, stored or not. A reservation succeeds only
//! if the bytes stored, plus every reservation, plus this one stay within
//! the capacity, so puts running at the same time can never together take
//! the store past it.
//!
//! Each put counts exactly once in that sum, at every instant: a stored
//! put's bytes move from its reservation to the stored counter in one step,
//! and a refused put gives back what it held in the step that refuses it.
//! So a put is refused only when the others really hold the room, never
//! because of one that is just finishing or just failed.
//!
//! The bytes counted are those of stored files, as the index sums them
//! ([`super::StoreStats::bytes`]); the index itself, temp files and
//! quarantined files are not counted.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::Arc;

use super::Inner;
use crate::error::{Error, Result};
use crate::id::ContentKey;

/// A number of bytes, written as a plain count (`1048576`) or with a unit:
/// `K`, `M`, `G`, `T` (powers of 1000, as in `--scrub-mb-per-s`) or `Ki`,
/// `Mi`, `Gi`, `Ti` (powers of 1024), each optionally followed by `B`, in
/// either case. A fraction is allowed with a unit (`1.5G`).
///
/// ```
/// use tritontube_core::store::ByteSize;
///
/// assert_eq!("1048576".parse::<ByteSize>().unwrap().0, 1_048_576);
/// assert_eq!("500M".parse::<ByteSize>().unwrap().0, 500_000_000);
/// assert_eq!("2GiB".parse::<ByteSize>().unwrap().0, 2 * 1024 * 1024 * 1024);
/// assert_eq!("1.5k".parse::<ByteSize>().unwrap().0, 1_500);
/// assert!("12 parsecs".parse::<ByteSize>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::invalid("byte size", s, why);
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, unit) = (&t[..split], t[split..].trim());
        if number.is_empty() {
            return Err(bad("must start with a number"));
        }
        let unit = unit.to_ascii_lowercase();
        let unit = unit.strip_suffix('b').unwrap_or(&unit);
        let scale: u64 = match unit {
            "" => 1,
            "k" => 1_000,
            "m" => 1_000_000,
            "g" => 1_000_000_000,
            "t" => 1_000_000_000_000,
            "ki" => 1 << 10,
            "mi" => 1 << 20,
            "gi" => 1 << 30,
            "ti" => 1 << 40,
            _ => return Err(bad("unknown unit; use K, M, G, T or Ki, Mi, Gi, Ti")),
        };
        let too_big = || bad("is more than 2^64 bytes");
        if let Ok(whole) = number.parse::<u64>() {
            return whole.checked_mul(scale).map(ByteSize).ok_or_else(too_big);
        }
        if scale == 1 {
            return Err(bad("a plain byte count must be a whole number"));
        }
        let x: f64 = number.parse().map_err(|_| bad("is not a number"))?;
        let bytes = (x * scale as f64).round();
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(too_big());
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0)
    }
}

/// The capacity of one store and the bytes reserved under it.
#[derive(Debug)]
pub(crate) struct Capacity {
    limit: Option<u64>,
    /// Bytes reserved by puts in flight. A mutex, not an atomic: a
    /// reservation must read the stored bytes and add to this in one step.
    reserved: Mutex<u64>,
}

impl Capacity {
    pub(crate) fn new(limit: Option<u64>) -> Self {
        Capacity {
            limit,
            reserved: Mutex::new(0),
        }
    }

    pub(crate) fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// Bytes reserved by puts in flight.
    pub(crate) fn reserved(&self) -> u64 {
        *self.reserved.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.reserved.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves `n` more bytes on top of the `held` this put already has,
    /// given the `stored` counter. On refusal gives back `held` too and
    /// returns the bytes that were free for this put (`held` included).
    fn reserve(&self, stored: &AtomicU64, held: u64, n: u64) -> std::result::Result<(), u64> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let mut reserved = self.lock();
        // A put's bytes join the stored counter only under this lock
        // (`settle`), so no put is counted twice here or missed.
        let used = stored.load(Ordering::SeqCst).saturating_add(*reserved);
        if used.saturating_add(n) > limit {
            *reserved = reserved.saturating_sub(held);
            return Err(limit.saturating_sub(used.saturating_sub(held)));
        }
        *reserved += n;
        Ok(())
    }

    /// Counts a put of `size` bytes over a file of `replaced` bytes as
    /// stored, and gives back the `held` it reserved, in one step.
    fn settle(&self, stored: &AtomicU64, replaced: u64, size: u64, held: u64) {
        let mut reserved = self.limit.map(|_| self.lock());
        if size >= replaced {
            stored.fetch_add(size - replaced, Ordering::SeqCst);
        } else {
            stored.fetch_sub(replaced - size, Ordering::SeqCst);
        }
        if let Some(r) = reserved.as_mut() {
            **r = r.saturating_sub(held);
        }
    }

    fn release(&self, n: u64) {
        if self.limit.is_some() && n > 0 {
            let mut reserved = self.lock();
            *reserved = reserved.saturating_sub(n);
        }
    }
}

/// The room one put holds under its store's capacity; released when the
/// put's bytes are counted as stored, when it is refused, or when it is
/// dropped (the put failed otherwise, or its caller went away).
#[derive(Debug)]
pub(crate) struct Reservation {
    inner: Arc<Inner>,
    key: ContentKey,
    held: u64,
    /// Size of the file this put replaces: it grows the store only by what
    /// it writes beyond that.
    credit: u64,
}

impl Reservation {
    /// A put of `key` over a file of `credit` bytes (0 if none), holding
    /// nothing yet.
    pub(crate) fn new(inner: Arc<Inner>, key: ContentKey, credit: u64) -> Self {
        Reservation {
            inner,
            key,
            held: 0,
            credit,
        }
    }

    /// Makes sure a body of `size` bytes is covered, reserving what is
    /// missing; [`Error::Full`] if the capacity does not allow it.
    pub(crate) fn cover(&mut self, size: u64) -> Result<()> {
        let need = size.saturating_sub(self.credit);
        if need <= self.held {
            return Ok(());
        }
        let capacity = &self.inner.capacity;
        match capacity.reserve(&self.inner.bytes, self.held, need - self.held) {
            Ok(()) => {
                self.held = need;
                Ok(())
            }
            Err(free) => {
                self.held = 0;
                Err(Error::Full {
                    node: self.inner.base.display().to_string(),
                    key: self.key.to_string(),
                    needed: need,
                    capacity: capacity.limit(),
                    free: Some(free),
                })
            }
        }
    }

    /// Covers a body of `size` bytes replacing a file of `replaced` bytes,
    /// as found with the key locked just before the body is installed (the
    /// file may have changed since the put began).
    pub(crate) fn cover_replacing(&mut self, size: u64, replaced: Option<u64>) -> Result<()> {
        self.credit = replaced.unwrap_or(0);
        self.cover(size)
    }

    /// Counts the put's `size` bytes, over a file of `replaced` bytes, as
    /// stored, and gives back the room it held, in one step.
    pub(crate) fn settle(&mut self, replaced: u64, size: u64) {
        let held = std::mem::take(&mut self.held);
        self.inner
            .capacity
            .settle(&self.inner.bytes, replaced, size, held);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.inner.capacity.release(std::mem::take(&mut self.held));
    }
}

/// True if `e` says the disk (or the user's quota on it) is full.
pub(crate) fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use futures::StreamExt;

    use super::ByteSize;
    use crate::error::Error;
    use crate::id::ContentKey;
    use crate::store::{
        ByteStream, ContentStore, ContentStoreExt, LocalContentStore, LocalOptions, PutOptions,
    };

    fn store_with_capacity(dir: &std::path::Path, capacity: u64) -> LocalContentStore {
        let options = LocalOptions {
            capacity_bytes: Some(capacity),
            ..Default::default()
        };
        LocalContentStore::open(dir, options).unwrap()
    }

    fn key(s: &str) -> ContentKey {
        s.parse().unwrap()
    }

    fn body(len: usize, seed: u8) -> Bytes {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
            .collect::<Vec<u8>>()
            .into()
    }

    /// `b` as a stream of `piece`-byte chunks.
    fn chunked(b: Bytes, piece: usize) -> ByteStream {
        let parts: Vec<_> = (0..b.len())
            .step_by(piece)
            .map(|i| Ok(b.slice(i..(i + piece).min(b.len()))))
            .collect();
        Box::pin(futures::stream::iter(parts))
    }

    fn announced(size: u64) -> PutOptions {
        PutOptions {
            expected_size: Some(size),
            ..Default::default()
        }
    }

    fn temp_files(store: &LocalContentStore) -> usize {
        std::fs::read_dir(store.base().join(".tritontube").join("tmp"))
            .unwrap()
            .count()
    }

    #[test]
    fn byte_sizes_parse_with_and_without_units() {
        let parse = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(parse("0").unwrap(), 0);
        assert_eq!(parse(" 750 ").unwrap(), 750);
        assert_eq!(parse("500M").unwrap(), 500_000_000);
        assert_eq!(parse("500mb").unwrap(), 500_000_000);
        assert_eq!(parse("2G").unwrap(), 2_000_000_000);
        assert_eq!(parse("1 T").unwrap(), 1_000_000_000_000);
        assert_eq!(parse("512Mi").unwrap(), 512 << 20);
        assert_eq!(parse("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse("18446744073709551615").unwrap(), u64::MAX);
        for bad in ["", "M", "1.5", "-1", "1.2.3G", "5X", "20000000T", "1e3"] {
            assert!(
                matches!(parse(bad), Err(Error::InvalidInput { .. })),
                "{bad:?} is refused"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_put_past_the_capacity_is_refused_and_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_capacity(dir.path(), 1000);
        assert_eq!(store.capacity(), Some(1000));
        store.put_bytes(&key("v/a"), body(600, 1)).await.unwrap();

        // A body of unknown length: refused as soon as it outgrows the room.
        let e = store
            .put(
                &key("v/b"),
                chunked(body(500, 2), 100),
                PutOptions::default(),
            )
            .await
            .unwrap_err();
        let Error::Full {
            needed,
            capacity,
            free,
            ..
        } = &e
        else {
            panic!("expected node full, got {e:?}");
        };
        assert_eq!((*capacity, *free), (Some(1000), Some(400)));
        assert!(*needed > 400 && *needed <= 500, "{e}");
        let message = e.to_string();
        assert!(message.contains("node full"), "{message}");
        assert!(message.contains("capacity of 1000 bytes"), "{message}");
        assert!(message.contains(&format!("{needed} bytes")), "{message}");

        // An announced length: refused before a byte is written.
        let e = store
            .put(&key("v/b"), chunked(body(500, 2), 100), announced(500))
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Full {
                    needed: 500,
                    free: Some(400),
                    ..
                }
            ),
            "{e:?}"
        );

        // Nothing of either is kept, and no room stays reserved.
        assert!(store.head(&key("v/b")).await.unwrap_err().is_not_found());
        let stats = store.stats();
        assert_eq!((stats.files, stats.bytes, stats.reserved), (1, 600, 0));
        assert_eq!(store.list_all(None).await.unwrap().len(), 1);
        assert_eq!(temp_files(&store), 0);

        // The room left is usable to the last byte, and a delete frees room.
        store.put_bytes(&key("v/b"), body(400, 3)).await.unwrap();
        assert_eq!(store.stats().bytes, 1000);
        let e = store.put_bytes(&key("v/c"), body(1, 4)).await.unwrap_err();
        assert!(matches!(e, Error::Full { free: Some(0), .. }), "{e:?}");
        store.delete(&key("v/a")).await.unwrap();
        store.put_bytes(&key("v/c"), body(600, 4)).await.unwrap();
        assert_eq!(store.stats().bytes, 1000);

        // The capacity holds across a restart (the counters come from the index).
        drop(store);
        let store = store_with_capacity(dir.path(), 1000);
        let e = store.put_bytes(&key("v/d"), body(1, 5)).await.unwrap_err();
        assert!(matches!(e, Error::Full { .. }), "{e:?}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn replacing_a_file_counts_only_the_difference() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_capacity(dir.path(), 1000);
        let k = key("v/manifest.mpd");
        store.put_bytes(&k, body(800, 1)).await.unwrap();

        // 800 -> 1000 grows the store by 200, which fits.
        store
            .put(&k, chunked(body(1000, 2), 128), PutOptions::default())
            .await
            .unwrap();
        assert_eq!(store.stats().bytes, 1000);

        // One byte more does not, and the stored file is left as it was.
        let e = store
            .put(&k, chunked(body(1001, 3), 128), announced(1001))
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Full {
                    needed: 1,
                    free: Some(0),
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(store.get_bytes(&k).await.unwrap(), body(1000, 2));

        // Shrinking always fits, and frees the difference for others.
        store.put_bytes(&k, body(10, 4)).await.unwrap();
        store
            .put_bytes(&key("v/other"), body(990, 5))
            .await
            .unwrap();
        let stats = store.stats();
        assert_eq!((stats.files, stats.bytes, stats.reserved), (2, 1000, 0));
        assert_eq!(temp_files(&store), 0);
    }

    /// Twenty puts of 1000 bytes into a store with room for ten, all in
    /// flight at once (`reserve_up_front`: the size announced; otherwise
    /// streamed in 100-byte chunks). Returns the store (and its directory)
    /// and how many were stored.
    async fn twenty_puts_at_once(
        reserve_up_front: bool,
    ) -> (tempfile::TempDir, LocalContentStore, usize) {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_capacity(dir.path(), 10_000);
        // Every body stops after its first chunk until all twenty puts are
        // in flight (or refused), so none can finish before the others start.
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (go_tx, go_rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for i in 0..20 {
            let store = store.clone();
            let in_flight = in_flight.clone();
            let mut go = go_rx.clone();
            tasks.push(tokio::spawn(async move {
                let b = body(1000, i as u8);
                let first = futures::stream::once({
                    let in_flight = in_flight.clone();
                    let c = b.slice(..100);
                    async move {
                        in_flight.fetch_add(1, Ordering::SeqCst);
                        Ok(c)
                    }
                });
                let rest = futures::stream::once(async move {
                    let _ = go.wait_for(|go| *go).await;
                })
                .flat_map(move |()| chunked(b.slice(100..), 100));
                let body: ByteStream = Box::pin(first.chain(rest));
                let opts = if reserve_up_front {
                    announced(1000)
                } else {
                    PutOptions::default()
                };
                let r = store.put(&key(&format!("v/f{i}")), body, opts).await;
                if r.is_err() {
                    in_flight.fetch_add(1, Ordering::SeqCst);
                }
                r
            }));
        }
        while in_flight.load(Ordering::SeqCst) < 20 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // Room is held before bytes are written: the whole of it by ten
        // puts (the other ten refused), or each first chunk's.
        // (A streamed put reserves its first chunk just after taking it.)
        let reserved = if reserve_up_front { 10_000 } else { 20 * 100 };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while store.stats().reserved != reserved && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(store.stats().reserved, reserved);
        assert_eq!(store.stats().bytes, 0);
        go_tx.send(true).unwrap();
        let mut stored = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(m) => {
                    assert_eq!(m.size, 1000);
                    stored += 1;
                }
                Err(e) => assert!(matches!(e, Error::Full { .. }), "{e:?}"),
            }
        }
        (dir, store, stored)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_puts_never_overshoot_the_capacity() {
        for reserve_up_front in [true, false] {
            let (_dir, store, stored) = twenty_puts_at_once(reserve_up_front).await;
            let stats = store.stats();
            assert_eq!(stored, 10, "up front: {reserve_up_front}");
            assert_eq!(stats.bytes, 10_000, "up front: {reserve_up_front}");
            assert_eq!(stats.files, 10);
            assert_eq!(stats.reserved, 0, "every reservation was given back");
            assert_eq!(store.list_all(None).await.unwrap().len(), 10);
            assert_eq!(temp_files(&store), 0);
        }
    }

    /// Set to a directory on a small tmpfs by
    /// [`a_full_disk_is_node_full_and_keeps_nothing`] for the run of
    /// [`full_disk_inside_small_tmpfs`].
    const SMALL_DISK_ENV: &str = "TRITONTUBE_TEST_SMALL_DISK";

    #[test]
    fn a_full_disk_is_node_full_and_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let Some(mut cmd) =
            crate::testing::on_small_disk(dir.path(), 2 << 20, std::env::current_exe().unwrap())
        else {
            eprintln!("skipped: this machine cannot mount a private tmpfs (unshare -rm)");
            return;
        };
        let inner = module_path!()
            .split_once("::")
            .map(|(_, m)| format!("{m}::full_disk_inside_small_tmpfs"))
            .unwrap();
        let out = cmd
            .args([&inner, "--exact", "--ignored", "--nocapture"])
            .env(SMALL_DISK_ENV, dir.path())
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{log}");
        assert!(log.contains("1 passed"), "the inner test ran: {log}");
    }

    /// Run by [`a_full_disk_is_node_full_and_keeps_nothing`] with a 2 MiB
    /// tmpfs mounted at `$TRITONTUBE_TEST_SMALL_DISK`.
    #[tokio::test]
    #[ignore = "run inside a small tmpfs by a_full_disk_is_node_full_and_keeps_nothing"]
    async fn full_disk_inside_small_tmpfs() {
        let Some(dir) = std::env::var_os(SMALL_DISK_ENV) else {
            eprintln!("not inside a small tmpfs; nothing to do");
            return;
        };
        // No capacity: only the disk can say it is full.
        let store = LocalContentStore::new(&dir).unwrap();
        let k = key("v/chunk-0-00001.m4s");
        let e = store
            .put(
                &k,
                chunked(body(4 << 20, 1), 64 << 10),
                PutOptions::default(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Full {
                    capacity: None,
                    free: None,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("no space left"), "{e}");
        assert_eq!(temp_files(&store), 0, "the partial body is removed");
        assert!(store.head(&k).await.unwrap_err().is_not_found());
        let stats = store.stats();
        assert_eq!((stats.files, stats.bytes), (0, 0));
        // The space it took is free again.
        store.put_bytes(&k, body(1 << 20, 2)).await.unwrap();
        assert_eq!(store.get_bytes(&k).await.unwrap(), body(1 << 20, 2));
    }
}
