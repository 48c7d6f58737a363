//! What can go wrong writing or reading a shard's hand-over.

#[derive(Debug, thiserror::Error)]
pub enum HandOverError {
    #[error("{what} failed: {detail}")]
    Git { what: String, detail: String },
    #[error("git: {0}")]
    Git2(String),
    #[error("cannot read {path}: {detail}")]
    Read { path: String, detail: String },
    #[error("cannot write {path}: {detail}")]
    Write { path: String, detail: String },
    #[error("{path} is not a fanout hand-over: {detail}")]
    Bundle { path: String, detail: String },
    #[error("{origin} belongs to another run: {detail}")]
    Mismatch { origin: String, detail: String },
    #[error("no hand-over found")]
    Nothing,
}

impl HandOverError {
    pub(crate) fn git2(e: git2::Error) -> HandOverError {
        HandOverError::Git2(e.message().to_string())
    }
}
