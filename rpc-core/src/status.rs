//! The outcome of a call: a [`Code`] from gRPC's code space, a message and metadata.

use std::fmt;
use std::sync::Arc;

use crate::metadata::Metadata;

/// A status code, numbered exactly as gRPC's, so the two can be mapped one to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum Code {
    /// Not an error.
    Ok = 0,
    /// The operation was cancelled, typically by the caller.
    Cancelled = 1,
    /// An error with no better code, or from an unknown code space.
    Unknown = 2,
    /// The caller specified an invalid argument, such as a request that does not decode.
    InvalidArgument = 3,
    /// The deadline passed before the operation completed.
    DeadlineExceeded = 4,
    /// A requested entity was not found.
    NotFound = 5,
    /// An entity the caller tried to create already exists.
    AlreadyExists = 6,
    /// The caller may not execute the operation.
    PermissionDenied = 7,
    /// A resource, such as a size or rate limit, has been exhausted.
    ResourceExhausted = 8,
    /// The system is not in a state required for the operation.
    FailedPrecondition = 9,
    /// The operation was aborted, typically by a concurrency conflict.
    Aborted = 10,
    /// The operation was attempted past the valid range.
    OutOfRange = 11,
    /// The operation, method or service is not implemented.
    Unimplemented = 12,
    /// An internal invariant was broken: a bug, in this peer or the other.
    Internal = 13,
    /// The service is currently unavailable; a retry may succeed.
    Unavailable = 14,
    /// Unrecoverable data loss or corruption.
    DataLoss = 15,
    /// The request lacks valid authentication credentials.
    Unauthenticated = 16,
}

impl Code {
    /// The code for a number from the wire; numbers outside gRPC's space map to `Unknown`.
    pub const fn from_u32(value: u32) -> Code {
        match value {
            0 => Code::Ok,
            1 => Code::Cancelled,
            3 => Code::InvalidArgument,
            4 => Code::DeadlineExceeded,
            5 => Code::NotFound,
            6 => Code::AlreadyExists,
            7 => Code::PermissionDenied,
            8 => Code::ResourceExhausted,
            9 => Code::FailedPrecondition,
            10 => Code::Aborted,
            11 => Code::OutOfRange,
            12 => Code::Unimplemented,
            13 => Code::Internal,
            14 => Code::Unavailable,
            15 => Code::DataLoss,
            16 => Code::Unauthenticated,
            _ => Code::Unknown,
        }
    }

    /// The number sent on the wire.
    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    /// The code's name in gRPC's spelling, e.g. `DEADLINE_EXCEEDED`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error side of every call: a code, a human-readable message and metadata.
///
/// Handlers return it to fail a call; clients receive it when a call fails, whether the
/// server said so or the call never completed (`Unavailable`, `DeadlineExceeded`, ...).
///
/// ```
/// use rpc_core::{Code, Status};
///
/// let status = Status::not_found("no user 42");
/// assert_eq!(status.code(), Code::NotFound);
/// assert_eq!(status.to_string(), "NOT_FOUND: no user 42");
/// ```
#[derive(Clone)]
pub struct Status(Box<Inner>);

/// What a [`Status`] says, behind one pointer: a `Result<T, Status>` is then barely larger
/// than `T`, and every successful result passed up through the layers of a call moves that
/// much less.
#[derive(Clone)]
struct Inner {
    code: Code,
    message: String,
    metadata: Metadata,
    refused: bool,
    /// The error that caused it, for [`std::error::Error::source`] (never sent).
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

/// Statuses are equal when what they say is: code, message, metadata and refusal mark (the
/// local cause is not compared).
impl PartialEq for Status {
    fn eq(&self, other: &Status) -> bool {
        self.0.code == other.0.code
            && self.0.message == other.0.message
            && self.0.metadata == other.0.metadata
            && self.0.refused == other.0.refused
    }
}

impl Eq for Status {}

macro_rules! constructors {
    ($($(#[$doc:meta])* $name:ident => $code:ident,)*) => {
        $(
            $(#[$doc])*
            pub fn $name(message: impl Into<String>) -> Status {
                Status::new(Code::$code, message)
            }
        )*
    };
}

impl Status {
    /// A status with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status(Box::new(Inner {
            code,
            message: message.into(),
            metadata: Metadata::new(),
            refused: false,
            source: None,
        }))
    }

    constructors! {
        /// A `Cancelled` status.
        cancelled => Cancelled,
        /// An `Unknown` status.
        unknown => Unknown,
        /// An `InvalidArgument` status.
        invalid_argument => InvalidArgument,
        /// A `DeadlineExceeded` status.
        deadline_exceeded => DeadlineExceeded,
        /// A `NotFound` status.
        not_found => NotFound,
        /// An `AlreadyExists` status.
        already_exists => AlreadyExists,
        /// A `PermissionDenied` status.
        permission_denied => PermissionDenied,
        /// A `ResourceExhausted` status.
        resource_exhausted => ResourceExhausted,
        /// A `FailedPrecondition` status.
        failed_precondition => FailedPrecondition,
        /// An `Aborted` status.
        aborted => Aborted,
        /// An `OutOfRange` status.
        out_of_range => OutOfRange,
        /// An `Unimplemented` status.
        unimplemented => Unimplemented,
        /// An `Internal` status.
        internal => Internal,
        /// An `Unavailable` status.
        unavailable => Unavailable,
        /// A `DataLoss` status.
        data_loss => DataLoss,
        /// An `Unauthenticated` status.
        unauthenticated => Unauthenticated,
    }

    /// Adds metadata, sent with the status as the response's metadata.
    pub fn with_metadata(mut self, metadata: Metadata) -> Status {
        self.0.metadata = metadata;
        self
    }

    /// The same status with another message: its code, metadata, refusal mark and source
    /// kept.
    pub(crate) fn with_message(mut self, message: impl Into<String>) -> Status {
        self.0.message = message.into();
        self
    }

    /// Keeps `source` as the error that caused this status: what
    /// [`Error::source`](std::error::Error::source) returns (it stays local, never sent).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Status {
        self.0.source = Some(Arc::new(source));
        self
    }

    /// Whether the server refused the call without processing it (it was shutting down, or
    /// at its concurrency limit): such a call may be sent again, elsewhere or later, even if
    /// it is not idempotent.
    pub fn is_refused(&self) -> bool {
        self.0.refused
    }

    /// Marks the status as a refusal: the call was not processed at all (for example shed
    /// under load, or over a rate limit), so a client may safely send it again. A server
    /// sends the mark with the status (the `REFUSED` flag).
    ///
    /// On a server, the mark is sent for refusals by interceptors (which answer before the
    /// handler runs) and by the framework itself. A status that a *handler* returns is never
    /// sent as refused: the handler ran. That also keeps a refusal the handler received from a
    /// call of its own, and returned with `?`, from passing for this call's.
    pub fn refused(mut self) -> Status {
        self.0.refused = true;
        self
    }

    /// The status without the refusal mark: for what a handler returns, since it ran.
    pub(crate) fn processed(mut self) -> Status {
        self.0.refused = false;
        self
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.0.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The metadata that came with the status.
    pub fn metadata(&self) -> &Metadata {
        &self.0.metadata
    }

    /// The metadata, to change.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.0.metadata
    }

    pub(crate) fn into_parts(self) -> (Code, String, Metadata) {
        let Inner { code, message, metadata, .. } = *self.0;
        (code, message, metadata)
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Status");
        s.field("code", &self.0.code).field("message", &self.0.message);
        if self.0.refused {
            s.field("refused", &true);
        }
        if !self.0.metadata.is_empty() {
            s.field("metadata", &self.0.metadata);
        }
        s.finish()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.message.is_empty() {
            write!(f, "{}", self.0.code)
        } else {
            write!(f, "{}: {}", self.0.code, self.0.message)
        }
    }
}

impl std::error::Error for Status {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source.as_deref().map(|source| source as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_their_numbers() {
        for n in 0..=16 {
            assert_eq!(Code::from_u32(n).as_u32(), n);
        }
        assert_eq!(Code::from_u32(17), Code::Unknown);
        assert_eq!(Code::from_u32(u32::MAX), Code::Unknown);
    }

    #[test]
    fn a_status_is_one_pointer_so_results_stay_small() {
        assert_eq!(std::mem::size_of::<Status>(), std::mem::size_of::<usize>());
        assert_eq!(std::mem::size_of::<Result<(), Status>>(), std::mem::size_of::<usize>());
    }
}
