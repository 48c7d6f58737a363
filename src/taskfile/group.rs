//! A task's `group`: tasks that land together or not at all (a rename across files, one task
//! per file). A name, or `true` on a template: its generated tasks form one group.

use serde_json::{Map, Value};

use super::read::kind;
use super::validator::Validator;
use crate::ids::TaskId;

impl Validator {
    /// `group`: a name with a task id's shape, or `true` on a template (its expansion names
    /// it, see [`super::generate::template_group`]).
    pub(super) fn group(
        &mut self,
        obj: &Map<String, Value>,
        path: &str,
        template: bool,
    ) -> Option<String> {
        let at = format!("{path}.group");
        match obj.get("group")? {
            Value::String(name) => match TaskId::parse(name) {
                Ok(_) => Some(name.clone()),
                Err(e) => {
                    self.problem(&at, format!("invalid group name: {e}"));
                    None
                }
            },
            Value::Bool(true) if template => None,
            Value::Bool(true) => {
                self.problem(
                    &at,
                    "`true` groups the tasks a template generates; name the group of a written task",
                );
                None
            }
            Value::Bool(false) => None,
            other => {
                self.problem(
                    &at,
                    format!("expected a group name or true, found {}", kind(other)),
                );
                None
            }
        }
    }
}
