//! fanout's integration tests: the built binaries on real repositories in temp folders.

#[path = "../support/model_server.rs"]
pub mod model_server;

#[path = "../support/anthropic_server.rs"]
pub mod anthropic_server;

mod budget;
mod caches;
mod candidates;
mod claude_code;
mod codex;
mod credentials;
mod doctor;
mod egress;
mod egress_hostile;
mod engines;
mod escape;
mod examples;
mod exhaustion;
mod faults;
mod flaky;
mod gc;
mod hardening;
mod housekeeping;
mod integration_gate;
mod interrupt;
mod judges;
mod local_users;
mod loss;
mod mcp_http;
mod mcp_protocol;
mod mcp_sdk;
mod mcp_server;
mod merge_rules;
mod nightly;
mod outputs;
mod overlap;
mod progress;
mod repair;
mod retry;
mod run;
mod sandbox;
mod sandbox_run;
mod schema;
mod setup_once;
mod shards;
mod support;
mod validate;
mod verify;
mod views;
mod workspaces;
