//! What can go wrong: one error type with a message that says what to do about it.

use rpc_core::{Code, Status};

use crate::json::JsonError;

/// Why a schema could not be had, a message not be converted, or a target not be reached.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `.proto` file could not be found, parsed or resolved: `path:line:column: message`.
    #[error("{0}")]
    Proto(String),
    /// The schema does not have what was asked for, or does not hold together.
    #[error("{0}")]
    Schema(String),
    /// A message could not be converted from or to JSON.
    #[error(transparent)]
    Json(#[from] JsonError),
    /// A target is not an address or a registry this build knows.
    #[error("{0}")]
    Target(String),
    /// A call (to the reflection service, or to resolve a target) failed with this status.
    #[error("{0}")]
    Status(#[from] Status),
}

impl Error {
    /// The status of a failed call, if that is what this is.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Error::Status(status) => Some(status),
            _ => None,
        }
    }

    /// The status a server answering with this error would send: `INVALID_ARGUMENT` for a
    /// message that does not convert, `NOT_FOUND` for what the schema lacks, the status
    /// itself for a failed call, `INTERNAL` otherwise.
    pub fn to_status(&self) -> Status {
        match self {
            Error::Status(status) => status.clone(),
            Error::Json(err) => Status::invalid_argument(err.to_string()),
            Error::Schema(message) => Status::new(Code::NotFound, message.clone()),
            Error::Proto(message) | Error::Target(message) => Status::internal(message.clone()),
        }
    }
}
