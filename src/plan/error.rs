//! Why a plan cannot be made.

use crate::git::GitError;
use crate::taskfile::TaskFileError;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    TaskFile(#[from] TaskFileError),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("{0}")]
    Invalid(String),
}
