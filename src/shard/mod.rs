/*!
Shards: one run split across the machines of an engine users already run (a CI matrix, a
Kubernetes Indexed Job, a Slurm array), and combined again (docs/shards.md).

`assign` says which shard a task runs in; `engine` which shard this process is; `handover`
writes a shard's verified commits, report and events as refs, then a bundle file or a push;
`import` reads hand-overs back (their packs made one: `packs`) and chooses the newest per shard; `carry` turns them into the
carried-over outcomes of the combined run, which the runner integrates as any run's.
*/

pub mod assign;
pub mod carry;
pub mod engine;
mod error;
mod git_cli;
pub mod handover;
pub mod import;
pub mod manifest;
mod packs;
pub mod refs;

pub use assign::{shard_of_tasks, tasks_of_shard};
pub use engine::{Shard, ShardError};
pub use error::HandOverError;
