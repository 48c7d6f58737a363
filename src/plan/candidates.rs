//! Candidates (best-of-N): each candidate of a task resolved like a task's agent, so nothing
//! resolves a profile or probes a protocol at run time.

use std::collections::BTreeMap;

use super::error::PlanError;
use super::launch::Launch;
use super::sandbox_options::SandboxOptions;
use crate::taskfile::{AgentProfile, CandidateSpec};

/// One candidate of a task: its agent, resolved.
#[derive(Clone, Debug)]
pub struct PlannedCandidate {
    pub agent_name: String,
    pub profile: AgentProfile,
    pub launch: Launch,
}

/// What the candidates of one task are resolved with.
pub(super) struct CandidateContext<'a> {
    pub agents: &'a BTreeMap<String, AgentProfile>,
    /// `--agent`: wins over every candidate's own agent, as over the task's.
    pub forced_agent: Option<&'a str>,
    /// The task's own agent (a candidate that names none runs it).
    pub task_agent: &'a str,
    /// The task's index (its uid block and scratch names).
    pub index: usize,
    pub uses_caches: bool,
    pub sandbox: &'a SandboxOptions,
}

/// The task's candidates (`candidates`; the task's own, else `defaults`'). One candidate is no
/// candidates: the task runs as usual.
pub(super) fn resolve(
    task: &str,
    specs: Option<&[CandidateSpec]>,
    cx: &CandidateContext<'_>,
) -> Result<Vec<PlannedCandidate>, PlanError> {
    let specs = specs.unwrap_or_default();
    if specs.len() < 2 {
        return Ok(Vec::new());
    }
    specs
        .iter()
        .map(|c| {
            let agent_name = cx
                .forced_agent
                .or(c.agent.as_deref())
                .unwrap_or(cx.task_agent)
                .to_string();
            let mut profile = cx.agents.get(&agent_name).cloned().ok_or_else(|| {
                PlanError::Invalid(format!(
                    "task {task}: a candidate names unknown agent {agent_name:?}"
                ))
            })?;
            if !profile.enabled {
                return Err(PlanError::Invalid(format!(
                    "task {task}: a candidate's agent {agent_name:?} is disabled (enabled: false)"
                )));
            }
            let codex = crate::agent::codex::resolve_launch(&mut profile);
            let launch = Launch::resolve(&profile, codex, cx.index, cx.uses_caches, cx.sandbox);
            Ok(PlannedCandidate {
                agent_name,
                profile,
                launch,
            })
        })
        .collect()
}
