//! `fanout schema <tasks|events>`: the JSON Schema of a file fanout reads or writes.

use clap::ValueEnum;

use super::EXIT_OK;

#[derive(clap::Args, Debug)]
pub struct SchemaArgs {
    /// Which format: `tasks` (tasks.json version 1) or `events` (one line of `--json` and of
    /// the run's `run-events.jsonl`).
    #[arg(value_enum)]
    pub which: SchemaKind,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum SchemaKind {
    Tasks,
    Events,
}

pub fn run(a: SchemaArgs) -> anyhow::Result<i32> {
    let schema = match a.which {
        SchemaKind::Tasks => crate::taskfile::schema::tasks_schema(),
        SchemaKind::Events => crate::event::schema(),
    };
    let mut text = serde_json::to_string_pretty(&schema)?;
    text.push('\n');
    super::out::print(text)?;
    Ok(EXIT_OK)
}
