//! The one public error type of the library.
//!
//! Every backend (local directory, storage node over gRPC, SQLite, etcd, ...)
//! keeps its own details private and converts into [`Error`], so a caller
//! matches on a small, stable set of cases. Each case carries what it concerns
//! (the key, the node, the path) so that a log line or an HTTP body says
//! exactly what went wrong. The mapping to HTTP and gRPC status codes lives in
//! one place, here.

/// A boxed error from a dependency, kept as the `source` of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result type of the whole library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in TritonTube.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value supplied by a caller is malformed (a video id, file name,
    /// node address, ...). Nothing was changed.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidInput {
        /// What kind of value it was ("video id", "file name", ...).
        what: &'static str,
        /// The offending value, as given.
        value: String,
        /// Why it was refused.
        reason: String,
    },

    /// The thing asked for does not exist.
    #[error("not found: {key}")]
    NotFound {
        /// The key, id or path that was looked up.
        key: String,
    },

    /// A create-if-absent found the thing already there.
    #[error("already exists: {key}")]
    AlreadyExists {
        /// The key or id that already exists.
        key: String,
    },

    /// Bytes did not hash to the SHA-256 they were expected to have.
    #[error("checksum mismatch for {key}: expected {expected}, got {actual}")]
    ChecksumMismatch {
        /// The content key.
        key: String,
        /// Expected digest (hex).
        expected: String,
        /// Digest of the bytes received (hex).
        actual: String,
    },

    /// A stored copy's bytes disagree with the checksum recorded for them
    /// (bit rot, a file rewritten behind the store's back). The copy is not
    /// served; another copy may be good.
    #[error("bad copy of {key}: {detail}")]
    BadCopy {
        /// The content key.
        key: String,
        /// What disagreed, and where.
        detail: String,
    },

    /// A storage node does not offer a call (an older version).
    #[error("storage node {node} does not support {what}")]
    Unsupported {
        /// The node address.
        node: String,
        /// The call, as the node named it.
        what: String,
    },

    /// A ring with no nodes cannot place a key.
    #[error("the ring has no nodes")]
    EmptyRing,

    /// A node that is already a member was added again.
    #[error("node {node} is already in the ring")]
    NodeExists {
        /// The node address.
        node: String,
    },

    /// A node that is not a member was named.
    #[error("node {node} is not in the ring")]
    UnknownNode {
        /// The node address.
        node: String,
    },

    /// A storage node could not be reached or failed a request.
    #[error("storage node {node}: {message}")]
    Node {
        /// The node address.
        node: String,
        /// What failed.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// A replicated write reached fewer nodes than it needed.
    #[error("write of {key} reached {succeeded} of {needed} nodes; failed: {}", format_failures(.failures))]
    InsufficientReplicas {
        /// The content key.
        key: String,
        /// Copies needed.
        needed: usize,
        /// Copies written.
        succeeded: usize,
        /// `(node, error)` for every node that failed.
        failures: Vec<(String, String)>,
    },

    /// An optimistic update lost a race: the value changed underneath.
    #[error("conflict on {key}: {reason}")]
    Conflict {
        /// What was being updated.
        key: String,
        /// Details.
        reason: String,
    },

    /// The cluster-wide admin lock is held by someone else.
    #[error("another cluster change is in progress (lock held by {holder})")]
    Locked {
        /// Who holds the lock.
        holder: String,
    },

    /// A job was cancelled on request and undone (a ring change rolled
    /// back).
    #[error("cancelled: {what}")]
    Cancelled {
        /// What was cancelled, and what became of it.
        what: String,
    },

    /// The request is well-formed but not allowed in the current state
    /// (removing the last node, too few nodes for the replica count, ...).
    #[error("refused: {reason}")]
    Refused {
        /// Why.
        reason: String,
    },

    /// A stored record could not be decoded.
    #[error("corrupt record at {key}: {reason}")]
    Corrupt {
        /// The storage key of the record.
        key: String,
        /// What was wrong with it.
        reason: String,
    },

    /// A body was larger than allowed.
    #[error("too large: {what} exceeds the limit of {limit} bytes")]
    TooLarge {
        /// What was too large.
        what: String,
        /// The limit in bytes.
        limit: u64,
    },

    /// A storage node has no room for a write: the write would take the
    /// bytes it stores past its configured capacity, or its disk ran out of
    /// space while the body was being written. Nothing of the write was
    /// kept and any earlier file under the key is unchanged; the same write
    /// may succeed once files are deleted from the node.
    #[error("node full: {}", describe_full(.node, .key, *.needed, *.capacity, *.free))]
    Full {
        /// The node: its address (as a client names it) or its directory.
        node: String,
        /// The content key being written.
        key: String,
        /// Bytes the write needed (at least: a streamed body is measured as
        /// it arrives, and the refusal may come before its end).
        needed: u64,
        /// The node's capacity in bytes; `None` when the disk itself filled
        /// up (no capacity set, or the disk is smaller than it).
        capacity: Option<u64>,
        /// Bytes of the capacity that were free for this write; `None` when
        /// the disk itself filled up.
        free: Option<u64>,
    },

    /// The caller did not present valid credentials.
    #[error("unauthenticated: {reason}")]
    Unauthenticated {
        /// Why.
        reason: String,
    },

    /// The caller is known but may not do this (someone else's video, say).
    /// Nothing was changed.
    #[error("forbidden: {reason}")]
    Forbidden {
        /// Why.
        reason: String,
    },

    /// A file-system operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The path concerned.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A backend (SQLite, etcd, ffmpeg, ...) failed.
    #[error("{backend}: {message}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// What failed.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// Too much of something is already in progress (uploads at once, in
    /// all or from one client). Nothing was done; the same request may
    /// succeed after `retry_after_secs`.
    #[error("busy: {what}; try again in {retry_after_secs} s")]
    Busy {
        /// What is at its limit, as a sentence for the caller.
        what: String,
        /// The limit reached.
        limit: usize,
        /// Seconds the caller should wait before trying again.
        retry_after_secs: u32,
        /// True when the caller's own share is used up (HTTP 429), false
        /// when the server's is (HTTP 503).
        per_client: bool,
    },

    /// A dependency did not answer in time, or is down.
    #[error("unavailable: {what}: {reason}")]
    Unavailable {
        /// What was unavailable.
        what: String,
        /// Details.
        reason: String,
    },
}

fn format_failures(failures: &[(String, String)]) -> String {
    failures
        .iter()
        .map(|(n, e)| format!("{n} ({e})"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_full(
    node: &str,
    key: &str,
    needed: u64,
    capacity: Option<u64>,
    free: Option<u64>,
) -> String {
    match capacity {
        Some(capacity) => format!(
            "{node} cannot store {key}: it needs at least {needed} bytes, \
             {} of the node's capacity of {capacity} bytes are free",
            free.map_or_else(|| "none".to_string(), |f| f.to_string())
        ),
        None if needed == 0 => format!("no space left on the disk of {node} for {key}"),
        None => format!(
            "no space left on the disk of {node} while storing {key} \
             (at least {needed} bytes needed)"
        ),
    }
}

impl Error {
    /// Shorthand for [`Error::InvalidInput`].
    pub fn invalid(
        what: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidInput {
            what,
            value: value.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::NotFound`].
    pub fn not_found(key: impl Into<String>) -> Self {
        Error::NotFound { key: key.into() }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// Shorthand for [`Error::Backend`] with a source error.
    pub fn backend(
        backend: &'static str,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Backend {
            backend,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A stable, lower-case name of the case (`"not-found"`,
    /// `"checksum-mismatch"`, ...), sent beside gRPC errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidInput { .. } => "invalid-input",
            Error::NotFound { .. } => "not-found",
            Error::AlreadyExists { .. } => "already-exists",
            Error::ChecksumMismatch { .. } => "checksum-mismatch",
            Error::BadCopy { .. } => "bad-copy",
            Error::Unsupported { .. } => "unsupported",
            Error::EmptyRing => "empty-ring",
            Error::NodeExists { .. } => "node-exists",
            Error::UnknownNode { .. } => "unknown-node",
            Error::Node { .. } => "node",
            Error::Unavailable { .. } => "unavailable",
            Error::Busy { .. } => "busy",
            Error::InsufficientReplicas { .. } => "insufficient-replicas",
            Error::Conflict { .. } => "conflict",
            Error::Locked { .. } => "locked",
            Error::Cancelled { .. } => "cancelled",
            Error::Refused { .. } => "refused",
            Error::TooLarge { .. } => "too-large",
            Error::Full { .. } => "full",
            Error::Unauthenticated { .. } => "unauthenticated",
            Error::Forbidden { .. } => "forbidden",
            Error::Corrupt { .. } => "corrupt",
            Error::Io { .. } => "io",
            Error::Backend { .. } => "backend",
        }
    }

    /// True for [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// Seconds after which the same request may succeed, for errors that
    /// say so (HTTP `Retry-After`).
    pub fn retry_after_secs(&self) -> Option<u32> {
        match self {
            Error::Busy {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// The HTTP status code this error is answered with.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::InvalidInput { .. } | Error::ChecksumMismatch { .. } => 400,
            Error::Unauthenticated { .. } => 401,
            Error::Forbidden { .. } => 403,
            Error::NotFound { .. } | Error::UnknownNode { .. } => 404,
            Error::AlreadyExists { .. }
            | Error::NodeExists { .. }
            | Error::Conflict { .. }
            | Error::Locked { .. }
            | Error::Cancelled { .. }
            | Error::Refused { .. } => 409,
            Error::TooLarge { .. } => 413,
            // Insufficient Storage: the server has no room, not the request's fault.
            Error::Full { .. } => 507,
            Error::Busy {
                per_client: true, ..
            } => 429,
            Error::Busy { .. } => 503,
            Error::EmptyRing
            | Error::Node { .. }
            | Error::InsufficientReplicas { .. }
            | Error::Unavailable { .. } => 503,
            Error::Corrupt { .. } | Error::Io { .. } | Error::Backend { .. } => 500,
            // A server fault, not the client's: no good copy could be read.
            Error::BadCopy { .. } => 502,
            Error::Unsupported { .. } => 501,
        }
    }
}

/// The gRPC metadata key carrying [`Error::kind`].
pub const ERROR_KIND_HEADER: &str = "tt-error-kind";

/// The gRPC metadata key carrying [`Error::Full`]'s `needed` bytes.
pub const FULL_NEEDED_HEADER: &str = "tt-needed-bytes";

/// The gRPC metadata key carrying [`Error::Full`]'s `capacity` (absent when
/// `None`).
pub const FULL_CAPACITY_HEADER: &str = "tt-capacity-bytes";

/// The gRPC metadata key carrying [`Error::Full`]'s `free` bytes (absent
/// when `None`).
pub const FULL_FREE_HEADER: &str = "tt-free-bytes";

#[cfg(feature = "runtime")]
impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic::Code;
        let code = match &e {
            Error::InvalidInput { .. } => Code::InvalidArgument,
            // The caller sent bytes that are not what it said they were.
            Error::ChecksumMismatch { .. } => Code::InvalidArgument,
            Error::BadCopy { .. } => Code::DataLoss,
            Error::Unsupported { .. } => Code::Unimplemented,
            Error::Unauthenticated { .. } => Code::Unauthenticated,
            Error::Forbidden { .. } => Code::PermissionDenied,
            Error::NotFound { .. } | Error::UnknownNode { .. } => Code::NotFound,
            Error::AlreadyExists { .. } | Error::NodeExists { .. } => Code::AlreadyExists,
            Error::Conflict { .. } => Code::Aborted,
            Error::Cancelled { .. } => Code::Cancelled,
            Error::Locked { .. } | Error::Refused { .. } | Error::EmptyRing => {
                Code::FailedPrecondition
            }
            Error::TooLarge { .. } | Error::Busy { .. } | Error::Full { .. } => {
                Code::ResourceExhausted
            }
            Error::Node { .. } | Error::InsufficientReplicas { .. } | Error::Unavailable { .. } => {
                Code::Unavailable
            }
            Error::Corrupt { .. } | Error::Io { .. } | Error::Backend { .. } => Code::Internal,
        };
        let mut status = tonic::Status::new(code, e.to_string());
        // The case travels beside the message, so a client never has to
        // recognise an error by its wording.
        if let Ok(v) = e.kind().parse() {
            status.metadata_mut().insert(ERROR_KIND_HEADER, v);
        }
        if let Error::Full {
            needed,
            capacity,
            free,
            ..
        } = &e
        {
            // The numbers too, so a client rebuilds the same error.
            let details = [
                (FULL_NEEDED_HEADER, Some(*needed)),
                (FULL_CAPACITY_HEADER, *capacity),
                (FULL_FREE_HEADER, *free),
            ];
            for (header, value) in details {
                if let Some(v) = value.and_then(|v| v.to_string().parse().ok()) {
                    status.metadata_mut().insert(header, v);
                }
            }
        }
        status
    }
}
