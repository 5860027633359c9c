//! The service layer's error (`control.rs`): what a write, a token change, an audit entry or a
//! compile can fail with, in the control plane's terms. The REST layer renders it as
//! problem+json (`api/error.rs`); nothing here knows of HTTP.

use postern_policy::ValidationErrors;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Semantically invalid; nothing was stored.
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    /// The actor's role may not make changes.
    #[error("this token's role may not make changes")]
    Forbidden,
    #[error("{0}")]
    NotFound(String),
    /// A write could not be made durable: no more writes until a restart (fail-stop).
    #[error("the store could not make a write durable ({0}); restart the control plane")]
    Stopped(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bug or a broken invariant (a task panicked, a stored policy does not compile).
    #[error("{0}")]
    Internal(String),
}

impl ControlError {
    pub fn invalid(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        ValidationErrors::one(pointer, detail).into()
    }
}

impl From<tokio::task::JoinError> for ControlError {
    fn from(e: tokio::task::JoinError) -> Self {
        ControlError::Internal(e.to_string())
    }
}
