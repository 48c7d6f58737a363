//! fanout's integration tests: the built binaries on real repositories in temp folders.

mod faults;
mod interrupt;
mod run;
mod sandbox;
mod sandbox_run;
mod support;
mod validate;
mod verify;
