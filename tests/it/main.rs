//! fanout's integration tests: the built binaries on real repositories in temp folders.

#[path = "../support/model_server.rs"]
pub mod model_server;

mod codex;
mod doctor;
mod escape;
mod faults;
mod hardening;
mod interrupt;
mod loss;
mod run;
mod sandbox;
mod sandbox_run;
mod schema;
mod support;
mod validate;
mod verify;
mod views;
mod workspaces;
