/*!
fanout runs many coding agents in parallel, each in its own git worktree and confined by
Linux Landlock to that worktree, then collects, verifies and merges what they did into one
integration branch without touching the user's checkout.

The crate is a library plus a thin binary (`src/main.rs`). Async code lives only in the
runner, the agent sessions, the JSON-RPC connection and the process helpers; everything else
is synchronous.

Unsafe code is denied crate-wide; the few system calls that need it (fork, prctl, capset,
pidfd, Landlock's ABI probe) allow it one by one, each with a `// SAFETY:` comment.
*/

#![deny(unsafe_code)]

pub mod agent;
pub mod caches;
pub mod cli;
pub mod doctor;
pub mod egress;
pub mod event;
pub mod eventlog;
pub mod exit;
pub mod fs_util;
pub mod git;
pub mod ids;
pub mod include;
pub mod jsonrpc;
pub mod lookup;
pub mod mcp;
pub mod mcp_server;
pub mod output;
pub mod patch_view;
pub mod phase;
pub mod plan;
pub mod preflight;
pub mod process;
pub mod redact;
pub mod report;
pub mod resume;
pub mod run_dir;
pub mod runner;
pub mod sandbox;
pub mod setup;
pub mod shard;
pub mod state;
pub mod taskenv;
pub mod taskfile;
pub mod usage;
pub mod verify;
pub mod which;

/// An error and its sources on one line (`outer: inner: root cause`), repeats dropped.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}
