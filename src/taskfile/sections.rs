//! The task file's sections: the file, `commit`, `caches`, `defaults`, `integrate`, `review`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::model::*;
use super::read::kind;
use super::validator::Validator;
use super::{caches, schema};

impl Validator {
    pub(super) fn file(&mut self, value: &Value) -> TaskFile {
        let mut file = TaskFile {
            base: None,
            commit_author: None,
            include: Vec::new(),
            caches: Vec::new(),
            caches_fill: None,
            defaults: Defaults::default(),
            agents: BTreeMap::new(),
            verifier: None,
            integrate: None,
            merge: Vec::new(),
            tasks: Vec::new(),
            pricing: Default::default(),
            budget: Default::default(),
        };
        let tasks_value = match value {
            Value::Array(_) => value,
            Value::Object(obj) => {
                self.known_fields(obj, "$", &schema::names(schema::FILE_FIELDS));
                match obj.get("version") {
                    None => {}
                    Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
                    Some(Value::Number(n)) => self.problem(
                        "$.version",
                        format!("unsupported version {n}; this fanout reads version 1"),
                    ),
                    // Not quoted: a file given by mistake may hold anything there.
                    Some(other) => self.problem(
                        "$.version",
                        format!("expected the number 1, found {}", kind(other)),
                    ),
                }
                file.base = self.string(obj, "base", "$");
                file.include = self.strings(obj, "include", "$").unwrap_or_default();
                for (i, g) in file.include.iter().enumerate() {
                    if let Err(e) = globset::Glob::new(g) {
                        self.problem(&format!("$.include[{i}]"), format!("invalid glob: {e}"));
                    }
                }
                if let Some(c) = obj.get("commit") {
                    file.commit_author = self.commit(c);
                }
                if let Some(c) = obj.get("caches") {
                    file.caches = self.caches(c);
                }
                file.caches_fill = self.verify(obj, "caches_fill", "$");
                if file.caches_fill.is_some() && file.caches.is_empty() {
                    self.problem("$.caches_fill", "`caches_fill` needs `caches` to fill");
                }
                if let Some(d) = obj.get("defaults") {
                    file.defaults = self.defaults(d);
                }
                if let Some(a) = obj.get("agents") {
                    if let Some(agents) = self.object(a, "$.agents") {
                        for (name, profile) in agents {
                            let loc = format!("$.agents.{name}");
                            if name.is_empty()
                                || !name
                                    .chars()
                                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                            {
                                self.problem(&loc, "agent names are slugs ([A-Za-z0-9._-])");
                            }
                            if let Some(p) = self.profile(profile, &loc, "codex") {
                                file.agents.insert(name.clone(), p);
                            }
                        }
                    }
                }
                if let Some(v) = obj.get("verifier") {
                    file.verifier = self.profile(v, "$.verifier", "Read");
                }
                if let Some(v) = obj.get("integrate") {
                    file.integrate = self.integrate(v);
                }
                if let Some(v) = obj.get("merge") {
                    file.merge = self.merge_rules(v);
                }
                // Accounting and budgets (issue 23).
                if let Some(v) = obj.get("pricing") {
                    file.pricing = self.typed(v, "$.pricing").unwrap_or_default();
                }
                if let Some(v) = obj.get("budget") {
                    file.budget = self.budget(v).unwrap_or_default();
                }
                match obj.get("tasks") {
                    Some(t) => t,
                    None => {
                        self.problem("$", "missing field \"tasks\"");
                        return file;
                    }
                }
            }
            other => {
                self.problem(
                    "$",
                    format!(
                        "expected an object with \"tasks\" or an array of tasks, found {}",
                        kind(other)
                    ),
                );
                return file;
            }
        };
        self.known_agents = file.agents.keys().cloned().collect();
        self.known_agents
            .extend(BUILTIN_AGENTS.iter().map(|s| s.to_string()));
        if let Some(a) = &file.defaults.agent {
            if !self.known_agents.contains(a) {
                let known = self.agent_list();
                self.problem(
                    "$.defaults.agent",
                    format!("unknown agent {a:?}; known agents: {known}"),
                );
            }
        }
        let defaults_candidates = file.defaults.candidates.clone();
        self.candidate_agents(defaults_candidates.as_deref(), "$.defaults");
        let tasks_path = if value.is_array() { "$" } else { "$.tasks" };
        let Value::Array(items) = tasks_value else {
            self.problem(
                tasks_path,
                format!("expected an array of tasks, found {}", kind(tasks_value)),
            );
            return file;
        };
        if items.is_empty() {
            self.problem(tasks_path, "no tasks: the list is empty");
        }
        // Every id the file names, valid or not, so dependencies are checked on every task.
        let all_ids: BTreeSet<String> = items
            .iter()
            .filter_map(|t| t.get("id").and_then(Value::as_str).map(str::to_string))
            .collect();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            let loc = format!("{tasks_path}[{i}]");
            // Told even when either task has other problems: each is worth knowing at once.
            let is_template = item.get("for_each").is_some();
            let duplicate = match item
                .get("id")
                .and_then(Value::as_str)
                .filter(|_| !is_template)
            {
                Some(id) => {
                    match seen.get(id) {
                        Some(&first) => {
                            self.problem(
                            &format!("{loc}.id"),
                            format!("duplicate task id {id:?} (first used at {tasks_path}[{first}])"),
                        );
                            true
                        }
                        None => {
                            seen.insert(id.to_string(), i);
                            false
                        }
                    }
                }
                None => false,
            };
            if let Some(task) = self.task(item, &loc, &all_ids) {
                if !duplicate {
                    file.tasks.push(task);
                }
            }
        }
        self.cross_checks(&file, tasks_path);
        file
    }

    /// `commit`: `{"author": "Name <email>"}`.
    pub(super) fn commit(&mut self, value: &Value) -> Option<String> {
        let obj = self.object(value, "$.commit")?;
        self.known_fields(obj, "$.commit", &["author"]);
        let author = self.string(obj, "author", "$.commit")?;
        if parse_author(&author).is_none() {
            self.problem(
                "$.commit.author",
                format!("{author:?} is not \"Name <email>\""),
            );
            return None;
        }
        Some(author)
    }

    /// A section read as its Rust type (unknown fields refused), its problem said at `path`.
    pub(super) fn typed<T: serde::de::DeserializeOwned>(
        &mut self,
        value: &Value,
        path: &str,
    ) -> Option<T> {
        match serde_json::from_value(value.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                self.problem(path, e.to_string());
                None
            }
        }
    }

    /// `budget`: limits that are numbers above 0.
    pub(super) fn budget(&mut self, value: &Value) -> Option<crate::usage::budget::Budget> {
        let budget: crate::usage::budget::Budget = self.typed(value, "$.budget")?;
        let positive = |v: Option<f64>| v.is_none_or(|v| v.is_finite() && v > 0.0);
        let zero_tokens = |t: Option<u64>| t == Some(0);
        if let Some(t) = &budget.task {
            if !positive(t.usd) || !positive(t.seconds) || zero_tokens(t.tokens) {
                self.problem("$.budget.task", "every limit must be above 0");
            }
        }
        if let Some(r) = &budget.run {
            if !positive(r.usd) || zero_tokens(r.tokens) {
                self.problem("$.budget.run", "every limit must be above 0");
            }
        }
        Some(budget)
    }

    /// `caches`: preset names (`"pip"`) or `{"name": …, "env": ["VAR", …]}`.
    pub(super) fn caches(&mut self, value: &Value) -> Vec<Cache> {
        let path = "$.caches";
        let Value::Array(items) = value else {
            self.problem(
                path,
                format!(
                    "expected an array of cache names or objects, found {}",
                    kind(value)
                ),
            );
            return Vec::new();
        };
        let mut out: Vec<Cache> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let loc = format!("{path}[{i}]");
            let cache = match item {
                Value::String(name) => match caches::preset(name) {
                    Some(vars) => Cache {
                        name: name.clone(),
                        env: vars
                            .iter()
                            .map(|(v, s)| (v.to_string(), s.to_string()))
                            .collect(),
                        shared: caches::shared_parts(name)
                            .unwrap_or(&[""])
                            .iter()
                            .map(|p| p.to_string())
                            .collect(),
                    },
                    None => {
                        self.problem(
                            &loc,
                            format!(
                                "unknown cache preset {name:?}; presets: {} (or an object {{\"name\", \"env\"}})",
                                caches::PRESETS.join(", ")
                            ),
                        );
                        continue;
                    }
                },
                Value::Object(obj) => {
                    self.known_fields(obj, &loc, &["name", "env"]);
                    let name = self.string(obj, "name", &loc);
                    let env = self.strings(obj, "env", &loc).unwrap_or_default();
                    let Some(name) = name else {
                        if !obj.contains_key("name") {
                            self.problem(&loc, "missing field \"name\"");
                        }
                        continue;
                    };
                    if env.is_empty() {
                        self.problem(&loc, "`env` must name at least one variable");
                    }
                    for (j, v) in env.iter().enumerate() {
                        if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        {
                            self.problem(
                                &format!("{loc}.env[{j}]"),
                                format!("{v:?} is not a variable name"),
                            );
                        }
                    }
                    Cache {
                        name,
                        env: env.into_iter().map(|v| (v, String::new())).collect(),
                        shared: vec![String::new()],
                    }
                }
                other => {
                    self.problem(
                        &loc,
                        format!("expected a preset name or an object, found {}", kind(other)),
                    );
                    continue;
                }
            };
            // The name is a folder name under the caches folder.
            if crate::ids::TaskId::parse(&cache.name).is_err() {
                self.problem(
                    &loc,
                    format!(
                        "cache name {:?}: 1-64 of [A-Za-z0-9._-], no leading dot",
                        cache.name
                    ),
                );
                continue;
            }
            if out.iter().any(|c| c.name == cache.name) {
                self.problem(&loc, format!("duplicate cache {:?}", cache.name));
                continue;
            }
            out.push(cache);
        }
        out
    }

    pub(super) fn defaults(&mut self, value: &Value) -> Defaults {
        let path = "$.defaults";
        let Some(obj) = self.object(value, path) else {
            return Defaults::default();
        };
        self.known_fields(obj, path, &schema::names(schema::DEFAULTS_FIELDS));
        let (setup, setup_timeout_secs, setup_inputs, setup_once) = self.setup(obj, path);
        Defaults {
            agent: self.string(obj, "agent", path),
            timeout_secs: self.positive(obj, "timeout_secs", path),
            verify: self.verify(obj, "verify", path),
            verify_timeout_secs: self.positive(obj, "verify_timeout_secs", path),
            verify_retries: self.retries(obj, "verify_retries", path),
            max_attempts: self.count(obj, "max_attempts", path),
            max_file_bytes: self.bytes(obj, "max_file_bytes", path),
            max_change_bytes: self.bytes(obj, "max_change_bytes", path),
            review: self.review(obj, path),
            diagnose: self.boolean(obj, "diagnose", path),
            on_conflict: self.on_conflict(obj, "on_conflict", path),
            overlap: self.overlap(obj, path),
            workspace: self.workspace(obj, path),
            setup,
            setup_timeout_secs,
            setup_inputs,
            setup_once,
            network: self.network(obj, path),
            protect: self.globs(obj, "protect", path),
            candidates: self.candidates(obj, path),
            select: self.select(obj, path),
        }
    }

    /// `network`: each phase's destinations (`taskfile::network`).
    pub(super) fn network(
        &mut self,
        obj: &Map<String, Value>,
        path: &str,
    ) -> Option<super::network::NetworkSpec> {
        let value = obj.get("network")?;
        match super::network::NetworkSpec::parse(value) {
            Ok(spec) => Some(spec),
            Err(problems) => {
                for (at, why) in problems {
                    let loc = if at.is_empty() {
                        format!("{path}.network")
                    } else {
                        format!("{path}.network.{at}")
                    };
                    self.problem(&loc, why);
                }
                None
            }
        }
    }

    fn workspace(&mut self, obj: &Map<String, Value>, path: &str) -> Option<WorkspaceChoice> {
        let s = self.string(obj, "workspace", path)?;
        let w = WorkspaceChoice::parse(&s);
        if w.is_none() {
            self.problem(
                &format!("{path}.workspace"),
                format!("must be one of auto, overlay, worktree (got {s:?})"),
            );
        }
        w
    }

    /// Overlap before dispatch (issue 21): `serialize` or `parallel`.
    fn overlap(&mut self, obj: &Map<String, Value>, path: &str) -> Option<OverlapChoice> {
        let s = self.string(obj, "overlap", path)?;
        let o = OverlapChoice::parse(&s);
        if o.is_none() {
            self.problem(
                &format!("{path}.overlap"),
                format!("must be one of serialize, parallel (got {s:?})"),
            );
        }
        o
    }

    pub(super) fn on_conflict(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<OnConflict> {
        let s = self.string(obj, key, path)?;
        match OnConflict::parse(&s) {
            Ok(o) => Some(o),
            Err(e) => {
                self.problem(&format!("{path}.{key}"), e);
                None
            }
        }
    }

    pub(super) fn integrate(&mut self, value: &Value) -> Option<IntegrateSpec> {
        let path = "$.integrate";
        let obj = self.object(value, path)?;
        self.known_fields(obj, path, &schema::names(schema::INTEGRATE_FIELDS));
        let timeout_secs = self.positive(obj, "timeout_secs", path);
        let verify_retries = self.retries(obj, "verify_retries", path);
        let repair = self.retries(obj, "repair", path);
        if !obj.contains_key("verify") {
            self.problem(path, "missing field \"verify\"");
        }
        let verify = self.verify(obj, "verify", path)?;
        Some(IntegrateSpec {
            verify,
            timeout_secs,
            verify_retries,
            repair,
        })
    }

    /// `review: {prompt, timeout_secs}`.
    /// `setup`: the short forms (a command) or the long form `{run, inputs, timeout_secs,
    /// once}`; with `setup_timeout_secs` beside it (the long form's `timeout_secs` wins).
    #[allow(clippy::type_complexity)]
    pub(super) fn setup(
        &mut self,
        obj: &Map<String, Value>,
        path: &str,
    ) -> (
        Option<VerifyCommand>,
        Option<f64>,
        Option<Vec<String>>,
        Option<bool>,
    ) {
        let timeout = self.positive(obj, "setup_timeout_secs", path);
        let Some(Value::Object(long)) = obj.get("setup") else {
            return (self.verify(obj, "setup", path), timeout, None, None);
        };
        let loc = format!("{path}.setup");
        self.known_fields(long, &loc, &schema::names(schema::SETUP_FIELDS));
        if !long.contains_key("run") {
            self.problem(&format!("{loc}.run"), "the setup command is missing");
        }
        let run = self.verify(long, "run", &loc);
        let inputs = self.strings(long, "inputs", &loc);
        for (i, g) in inputs.iter().flatten().enumerate() {
            if let Err(e) = globset::Glob::new(g) {
                self.problem(&format!("{loc}.inputs[{i}]"), format!("invalid glob: {e}"));
            }
        }
        let own_timeout = self.positive(long, "timeout_secs", &loc);
        let once = self.boolean(long, "once", &loc);
        (run, own_timeout.or(timeout), inputs, once)
    }

    pub(super) fn review(&mut self, obj: &Map<String, Value>, path: &str) -> Option<ReviewSpec> {
        let value = obj.get("review")?;
        let loc = format!("{path}.review");
        let r = self.object(value, &loc)?;
        self.known_fields(r, &loc, &schema::names(schema::REVIEW_FIELDS));
        let timeout_secs = self.positive(r, "timeout_secs", &loc);
        let prompt = match self.string(r, "prompt", &loc) {
            Some(p) if !p.trim().is_empty() => p,
            Some(_) => {
                self.problem(&format!("{loc}.prompt"), "prompt must not be empty");
                return None;
            }
            None => {
                if !r.contains_key("prompt") {
                    self.problem(&loc, "missing field \"prompt\"");
                }
                return None;
            }
        };
        Some(ReviewSpec {
            prompt,
            timeout_secs,
        })
    }

    /// Candidates: `candidates`, a count or a list of `{agent}` objects (agent names are
    /// checked against the profiles by [`Validator::candidate_agents`]).
    pub(super) fn candidates(
        &mut self,
        obj: &Map<String, Value>,
        path: &str,
    ) -> Option<Vec<CandidateSpec>> {
        let value = obj.get("candidates")?;
        let loc = format!("{path}.candidates");
        let must = format!("must be a whole number from 1 to {MAX_CANDIDATES} or a list of 1 to {MAX_CANDIDATES} {{\"agent\": NAME}} objects");
        match value {
            Value::Number(n) => match n
                .as_u64()
                .filter(|x| (1..=MAX_CANDIDATES as u64).contains(x))
            {
                Some(x) => Some(vec![CandidateSpec { agent: None }; x as usize]),
                None => {
                    self.problem(&loc, must);
                    None
                }
            },
            Value::Array(items) if !items.is_empty() && items.len() <= MAX_CANDIDATES as usize => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let at = format!("{loc}[{i}]");
                    let Some(o) = self.object(item, &at) else {
                        continue;
                    };
                    self.known_fields(o, &at, &["agent"]);
                    out.push(CandidateSpec {
                        agent: self.string(o, "agent", &at),
                    });
                }
                (out.len() == items.len()).then_some(out)
            }
            _ => {
                self.problem(&loc, must);
                None
            }
        }
    }

    /// Candidates: `select`.
    pub(super) fn select(&mut self, obj: &Map<String, Value>, path: &str) -> Option<SelectMode> {
        let s = self.string(obj, "select", path)?;
        let m = SelectMode::parse(&s);
        if m.is_none() {
            self.problem(
                &format!("{path}.select"),
                format!("must be one of review, smallest, first (got {s:?})"),
            );
        }
        m
    }

    /// Candidates: every candidate's agent names a known profile.
    pub(super) fn candidate_agents(&mut self, candidates: Option<&[CandidateSpec]>, path: &str) {
        for (i, c) in candidates.unwrap_or_default().iter().enumerate() {
            if let Some(a) = &c.agent {
                if !self.known_agents.contains(a) {
                    let known = self.agent_list();
                    self.problem(
                        &format!("{path}.candidates[{i}].agent"),
                        format!("unknown agent {a:?}; known agents: {known}"),
                    );
                }
            }
        }
    }
}
