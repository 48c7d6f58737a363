//! Collects every problem of a task file, with where it is.

use std::collections::BTreeSet;

use super::problem::Problem;

#[derive(Default)]
pub(super) struct Validator {
    pub(super) problems: Vec<Problem>,
    /// Agent names a task may use: the file's profiles plus the built-in ones.
    pub(super) known_agents: BTreeSet<String>,
}
