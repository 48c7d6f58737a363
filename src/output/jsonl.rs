//! `--json`: one event per line on stdout, secrets masked (schema: `fanout schema events`).

use std::io::Write;

use crate::event::{Event, Output, OutputError};

pub struct JsonLinesOutput<W: Write + Send> {
    out: W,
}

impl<W: Write + Send> JsonLinesOutput<W> {
    pub fn new(out: W) -> Self {
        JsonLinesOutput { out }
    }
}

impl<W: Write + Send> Output for JsonLinesOutput<W> {
    fn name(&self) -> String {
        "--json".into()
    }

    fn event(&mut self, event: &Event) -> Result<(), OutputError> {
        let line = serde_json::to_string(event).map_err(|e| OutputError::new("--json", e))?;
        let line = crate::redact::redact(&line);
        self.out
            .write_all(line.as_bytes())
            .and_then(|_| self.out.write_all(b"\n"))
            .and_then(|_| self.out.flush())
            .map_err(|e| OutputError::new("--json", e))
    }
}
