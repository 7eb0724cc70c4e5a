//! Where the bytes of videos live: the [`ContentStore`] trait and its
//! implementations.
//!
//! Shaped after `object_store`: a small trait of required methods whose
//! bodies stream (a large file never sits whole in memory), convenience
//! methods in [`ContentStoreExt`] with a blanket impl, and forwarding impls so
//! that `Arc<dyn ContentStore>` is itself a store.

use std::fmt::Debug;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

use crate::error::Result;
use crate::id::{ContentKey, VideoId};

/// A stream of chunks of a file's body.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send + 'static>>;

/// A stream of file facts, as listed.
pub type MetaStream<'a> = Pin<Box<dyn Stream<Item = Result<ObjectMeta>> + Send + 'a>>;

pub use crate::layout::{ObjectMeta, Sha256Digest};

/// Options of a [`ContentStore::put`].
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// If set, the store refuses (and keeps nothing) when the body hashes to
    /// anything else.
    pub expected_sha256: Option<Sha256Digest>,
    /// If set, the store refuses when the body has another length.
    pub expected_size: Option<u64>,
}

/// Options of a [`ContentStore::get`].
#[derive(Debug, Clone, Default)]
pub struct GetOptions {
    /// Only these bytes of the body (end exclusive, clamped to the size).
    pub range: Option<Range<u64>>,
    /// The SHA-256 recorded for the file when it was stored, if known. A
    /// store holding several copies serves only a copy with this checksum
    /// and fails over past any other; a single copy that disagrees is
    /// [`crate::Error::BadCopy`].
    pub expected_sha256: Option<Sha256Digest>,
}

/// The answer to a [`ContentStore::get`]: the whole file's facts, and the
/// (possibly ranged) body.
pub struct GetResult {
    /// Facts of the whole file (not of the range).
    pub meta: ObjectMeta,
    /// The bytes actually returned (the range, clamped, or the whole file).
    pub range: Range<u64>,
    /// The body.
    pub stream: ByteStream,
}

impl Debug for GetResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetResult")
            .field("meta", &self.meta)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// A place that stores the files of videos under [`ContentKey`]s.
///
/// # Contract
///
/// - `put` is atomic: after it returns `Ok` the whole file is readable; after
///   it fails (stream error, checksum or size mismatch, I/O error) nothing of
///   it is visible and any earlier file under that key is unchanged. A put
///   over an existing key replaces it.
/// - A store with no room for a put (a node at its capacity, a full disk)
///   refuses it with [`crate::Error::Full`], under the same rule: nothing
///   of it is kept.
/// - `put` consumes the body as a stream and keeps only a bounded amount of
///   it in memory, whatever its size.
/// - `get`, `head` and `delete` of a key that is not stored fail with
///   [`crate::Error::NotFound`], never with another error.
/// - `head` returns the size and SHA-256 without reading the body.
/// - `list` yields every stored file (or every file of one video) exactly
///   once, in no particular order, in bounded memory.
/// - Every key reaching a store is a validated [`ContentKey`], and a store
///   never touches anything outside its own namespace.
#[async_trait]
pub trait ContentStore: Debug + Send + Sync + 'static {
    /// Stores `body` under `key`, returning the stored file's facts.
    async fn put(&self, key: &ContentKey, body: ByteStream, opts: PutOptions)
    -> Result<ObjectMeta>;

    /// Streams the file at `key` (or a range of it).
    async fn get(&self, key: &ContentKey, opts: GetOptions) -> Result<GetResult>;

    /// The facts of the file at `key`.
    async fn head(&self, key: &ContentKey) -> Result<ObjectMeta>;

    /// Removes the file at `key`.
    async fn delete(&self, key: &ContentKey) -> Result<()>;

    /// Lists stored files: all, or those of `video`.
    fn list(&self, video: Option<&VideoId>) -> MetaStream<'_>;
}

macro_rules! forward_store {
    ($t:ty) => {
        #[async_trait]
        impl<S: ContentStore + ?Sized> ContentStore for $t {
            async fn put(
                &self,
                key: &ContentKey,
                body: ByteStream,
                opts: PutOptions,
            ) -> Result<ObjectMeta> {
                (**self).put(key, body, opts).await
            }
            async fn get(&self, key: &ContentKey, opts: GetOptions) -> Result<GetResult> {
                (**self).get(key, opts).await
            }
            async fn head(&self, key: &ContentKey) -> Result<ObjectMeta> {
                (**self).head(key).await
            }
            async fn delete(&self, key: &ContentKey) -> Result<()> {
                (**self).delete(key).await
            }
            fn list(&self, video: Option<&VideoId>) -> MetaStream<'_> {
                (**self).list(video)
            }
        }
    };
}

forward_store!(Arc<S>);
forward_store!(Box<S>);

/// Convenience methods on every [`ContentStore`].
#[async_trait]
pub trait ContentStoreExt: ContentStore {
    /// Stores a body held in memory.
    async fn put_bytes(&self, key: &ContentKey, body: Bytes) -> Result<ObjectMeta> {
        let stream: ByteStream = Box::pin(futures::stream::once(async move { Ok(body) }));
        self.put(key, stream, PutOptions::default()).await
    }

    /// Reads a whole file into memory.
    async fn get_bytes(&self, key: &ContentKey) -> Result<Bytes> {
        use futures::TryStreamExt;
        let got = self.get(key, GetOptions::default()).await?;
        let chunks: Vec<Bytes> = got.stream.try_collect().await?;
        Ok(chunks.concat().into())
    }

    /// Collects the listing of one video (or everything) into a vector.
    async fn list_all(&self, video: Option<&VideoId>) -> Result<Vec<ObjectMeta>> {
        use futures::TryStreamExt;
        self.list(video).try_collect().await
    }
}

impl<S: ContentStore + ?Sized> ContentStoreExt for S {}

pub mod conformance;
mod local;

pub use local::{ByteSize, CHUNK, LocalContentStore, LocalOptions, ScrubStats, StoreStats};
