//! `fanout schema <tasks|events>`: the JSON Schema of a file fanout reads or writes.

use clap::ValueEnum;

use super::{EXIT_OK, EXIT_USAGE};

#[derive(clap::Args, Debug)]
pub struct SchemaArgs {
    /// Which format: `tasks` (tasks.json version 1) or `events` (events/<task>.jsonl).
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
        SchemaKind::Events => {
            eprintln!("fanout: the schema of events is not available yet");
            return Ok(EXIT_USAGE);
        }
    };
    let mut text = serde_json::to_string_pretty(&schema)?;
    text.push('\n');
    super::out::print(text)?;
    Ok(EXIT_OK)
}
