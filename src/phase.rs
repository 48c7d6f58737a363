/*!
Where a task is in its life. One vocabulary for the runner (each phase is one step of
`runner::task`), the event stream (`phase` events), the state journal (`state.json`'s `phase` of
each task) and `fanout status` / `fanout resume`.

```text
waiting_for_dependencies ─▶ queued ─▶ workspace ─▶ setup ─▶ agent_turn n ─▶ collect ─▶ gates
                                                                 ▲                        │
                                                                 └──────── feedback ◀─────┤ failed
                                                                                          ▼ passed
                         ended ◀── integrated / conflicted / ejected ◀───────────────── ready
```

A task can end from any phase (a failure, a timeout, an interrupt): `ended` is its last phase,
and its report's status says how it ended.
*/

use serde::{Deserialize, Serialize};

/// A task's phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum TaskPhase {
    /// Its `depends_on` tasks have not all ended.
    WaitingForDependencies,
    /// Waiting for a job slot (`--jobs`).
    Queued,
    /// Its workspace is being made (or a parked one reset).
    Workspace,
    /// Its environment is prepared and its `setup` command runs.
    Setup,
    /// The agent works on turn `turn` (1: the prompt; then feedback turns).
    AgentTurn { turn: u32 },
    /// What the agent left is being committed.
    Collect { turn: u32 },
    /// The gates judge the commit (scope, verify command, read-back, review).
    Gates { turn: u32 },
    /// The gates failed: the feedback (and a diagnosis) for the next turn is prepared.
    Feedback { turn: u32 },
    /// Verified; its commit waits for integration.
    Ready,
    /// On the integration branch.
    Integrated,
    /// Its commit conflicts with what was integrated before it.
    Conflicted,
    /// Taken out again by the integration gate.
    Ejected,
    /// Over (its report's status says how).
    Ended,
}

impl TaskPhase {
    /// A short name for people (`agent turn 2`).
    pub fn describe(self) -> String {
        match self {
            TaskPhase::WaitingForDependencies => "waiting for dependencies".into(),
            TaskPhase::Queued => "queued".into(),
            TaskPhase::Workspace => "workspace".into(),
            TaskPhase::Setup => "setup".into(),
            TaskPhase::AgentTurn { turn } => format!("agent turn {turn}"),
            TaskPhase::Collect { turn } => format!("collect (turn {turn})"),
            TaskPhase::Gates { turn } => format!("gates (turn {turn})"),
            TaskPhase::Feedback { turn } => format!("feedback (turn {turn})"),
            TaskPhase::Ready => "ready".into(),
            TaskPhase::Integrated => "integrated".into(),
            TaskPhase::Conflicted => "conflicted".into(),
            TaskPhase::Ejected => "ejected".into(),
            TaskPhase::Ended => "ended".into(),
        }
    }

    /// Whether the task's own pipeline is still at work (not waiting, not done).
    pub fn is_running(self) -> bool {
        !matches!(
            self,
            TaskPhase::WaitingForDependencies
                | TaskPhase::Queued
                | TaskPhase::Ready
                | TaskPhase::Integrated
                | TaskPhase::Conflicted
                | TaskPhase::Ejected
                | TaskPhase::Ended
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_serialise_as_tagged_names() {
        let p = TaskPhase::AgentTurn { turn: 2 };
        let v = serde_json::to_value(p).expect("json");
        assert_eq!(v, serde_json::json!({"phase": "agent_turn", "turn": 2}));
        assert_eq!(serde_json::from_value::<TaskPhase>(v).expect("back"), p);
        assert_eq!(
            serde_json::to_value(TaskPhase::Ready).expect("json"),
            serde_json::json!({"phase": "ready"})
        );
        assert_eq!(p.describe(), "agent turn 2");
        assert!(p.is_running());
        assert!(!TaskPhase::Queued.is_running());
    }
}
