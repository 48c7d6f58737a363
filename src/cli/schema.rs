//! `fanout schema <tasks|events>`: the JSON Schema of a file fanout reads or writes.

use super::args::{SchemaArgs, SchemaKind};

use super::common::EXIT_OK;

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
