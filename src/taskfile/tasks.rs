//! Tasks, and the checks across them (unknown agents, dependency cycles).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::model::*;
use super::read::kind;
use super::validator::Validator;
use super::{generate, schema};
use crate::ids::TaskId;

impl Validator {
    pub(super) fn task(
        &mut self,
        value: &Value,
        path: &str,
        all_ids: &BTreeSet<String>,
    ) -> Option<TaskSpec> {
        let obj = self.object(value, path)?;
        self.known_fields(obj, path, &schema::names(schema::TASK_FIELDS));
        let template = match obj.get("for_each") {
            Some(fe) => {
                let mut problems = Vec::new();
                let source =
                    generate::parse_for_each(fe, &format!("{path}.for_each"), &mut problems);
                if let Some(source) = source {
                    super::placeholders::check(obj, &source, path, &mut problems);
                }
                self.problems.extend(problems);
                true
            }
            None => false,
        };
        let id = match obj.get("id") {
            None => {
                self.problem(path, "missing field \"id\"");
                None
            }
            // A template's id is checked with sample values in its placeholders.
            Some(Value::String(s)) if template => match TaskId::parse(&generate::sample_id(s)) {
                Ok(id) => Some(id),
                Err(e) => {
                    self.problem(&format!("{path}.id"), e);
                    None
                }
            },
            Some(Value::String(s)) => match TaskId::parse(s) {
                Ok(id) => Some(id),
                Err(e) => {
                    self.problem(&format!("{path}.id"), e);
                    None
                }
            },
            Some(other) => {
                self.problem(
                    &format!("{path}.id"),
                    format!("expected a string, found {}", kind(other)),
                );
                None
            }
        };
        let prompt = match self.string(obj, "prompt", path) {
            Some(p) if !p.trim().is_empty() => Some(p),
            Some(_) => {
                self.problem(&format!("{path}.prompt"), "prompt must not be empty");
                None
            }
            None => {
                if !obj.contains_key("prompt") {
                    self.problem(path, "missing field \"prompt\"");
                }
                None
            }
        };
        let agent = self.string(obj, "agent", path);
        if let Some(a) = &agent {
            if !self.known_agents.contains(a) {
                let known = self.agent_list();
                self.problem(
                    &format!("{path}.agent"),
                    format!("unknown agent {a:?}; known agents: {known}"),
                );
            }
        }
        let paths = self.strings(obj, "paths", path).unwrap_or_default();
        for (i, p) in paths.iter().enumerate() {
            if let Err(e) = globset::Glob::new(p) {
                self.problem(&format!("{path}.paths[{i}]"), format!("invalid glob: {e}"));
            }
        }
        let timeout_secs = self.positive(obj, "timeout_secs", path);
        let verify = self.verify(obj, "verify", path);
        let verify_timeout_secs = self.positive(obj, "verify_timeout_secs", path);
        let verify_retries = self.retries(obj, "verify_retries", path);
        let max_attempts = self.count(obj, "max_attempts", path);
        let max_file_bytes = self.bytes(obj, "max_file_bytes", path);
        let max_change_bytes = self.bytes(obj, "max_change_bytes", path);
        let review = self.review(obj, path);
        let (setup, setup_timeout_secs, setup_inputs, setup_once) = self.setup(obj, path);
        let group = self.group(obj, path, template);
        let network = self.network(obj, path);
        let protect = self.globs(obj, "protect", path);
        let candidates = self.candidates(obj, path);
        self.candidate_agents(candidates.as_deref(), path);
        let select = self.select(obj, path);
        let mut depends_on = Vec::new();
        for (i, d) in self
            .strings(obj, "depends_on", path)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            match TaskId::parse(d) {
                Ok(_) if obj.get("id").and_then(Value::as_str) == Some(d.as_str()) => self.problem(
                    &format!("{path}.depends_on[{i}]"),
                    "a task cannot depend on itself",
                ),
                Ok(_) if !all_ids.contains(d) => self.problem(
                    &format!("{path}.depends_on[{i}]"),
                    format!("unknown task id {d:?}"),
                ),
                Ok(id) => depends_on.push(id),
                Err(e) => self.problem(&format!("{path}.depends_on[{i}]"), e),
            }
        }
        Some(TaskSpec {
            id: id?,
            prompt: prompt?,
            agent,
            paths,
            timeout_secs,
            verify,
            verify_timeout_secs,
            verify_retries,
            depends_on,
            max_attempts,
            max_file_bytes,
            max_change_bytes,
            setup,
            setup_timeout_secs,
            setup_inputs,
            setup_once,
            template,
            group,
            review,
            network,
            protect,
            candidates,
            select,
        })
    }

    pub(super) fn agent_list(&self) -> String {
        self.known_agents
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Checks that need every task: dependency cycles.
    pub(super) fn cross_checks(&mut self, file: &TaskFile, tasks_path: &str) {
        if let Some(cycle) = find_cycle(&file.tasks) {
            self.problem(
                tasks_path,
                format!("dependency cycle: {}", cycle.join(" -> ")),
            );
        }
    }
}

pub fn find_cycle(tasks: &[TaskSpec]) -> Option<Vec<String>> {
    let index: BTreeMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    // 0 = unvisited, 1 = on the stack, 2 = done
    let mut state = vec![0u8; tasks.len()];
    let mut stack: Vec<usize> = Vec::new();
    fn visit(
        n: usize,
        tasks: &[TaskSpec],
        index: &BTreeMap<&str, usize>,
        state: &mut [u8],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<String>> {
        state[n] = 1;
        stack.push(n);
        for d in &tasks[n].depends_on {
            let Some(&m) = index.get(d.as_str()) else {
                continue;
            };
            if m == n {
                continue;
            }
            if state[m] == 1 {
                let start = stack.iter().position(|&x| x == m).unwrap_or(0);
                let mut cycle: Vec<String> = stack[start..]
                    .iter()
                    .map(|&x| tasks[x].id.to_string())
                    .collect();
                cycle.push(tasks[m].id.to_string());
                return Some(cycle);
            }
            if state[m] == 0 {
                if let Some(c) = visit(m, tasks, index, state, stack) {
                    return Some(c);
                }
            }
        }
        stack.pop();
        state[n] = 2;
        None
    }
    for n in 0..tasks.len() {
        if state[n] == 0 {
            if let Some(c) = visit(n, tasks, &index, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}
