//! fanout's integration tests: the built binaries on real repositories in temp folders.

mod faults;
mod run;
mod support;
mod validate;
mod verify;
