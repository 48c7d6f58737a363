/*!
fanout runs many coding agents in parallel, each in its own git worktree and confined by
Linux Landlock to that worktree, then collects, verifies and merges what they did into one
integration branch without touching the user's checkout.

The crate is a library plus a thin binary (`src/main.rs`). Async code lives only in the
runner, the agent sessions, the JSON-RPC connection and the process helpers; everything else
is synchronous.
*/

pub mod sandbox;
pub mod ids;
pub mod jsonrpc;
pub mod taskfile;
pub mod agent;
pub mod eventlog;
pub mod process;
pub mod doctor;
pub mod git;
pub mod plan;
pub mod report;
pub mod runner;
pub mod state;
pub mod verify;
pub mod cli;
