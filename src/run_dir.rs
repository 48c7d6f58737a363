/*!
The layout of a run folder, `<git-dir>/fanout/runs/<run>/`, in one place: nothing else joins
the names of its files and folders.

```text
<run>/state.json, state.jsonl      the run's state and its journal (state.rs)
<run>/report.json                  the final report
<run>/report.<n>.json              the report of attempt n before a `fanout retry`
<run>/inputs/                      the task file and options a resume reads again
<run>/events/<task>.jsonl          what a task's agent did
<run>/logs/<task>.stderr.log       a task's stderr; .verify.log, .setup.log beside it
<run>/status/<task>.json           the sandbox supervisor's report for a task's process
<run>/patches/<task>.patch         a task's change
<run>/worktrees/<task>/            a task's workspace  ┐ as root: links to a folder
<run>/scratch/<task>/              its scratch folder  ┘ outside the repository
```
*/

use std::path::{Path, PathBuf};

/// A run folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl AsRef<Path>) -> RunDir {
        RunDir {
            root: root.as_ref().to_path_buf(),
        }
    }

    /// The folder itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }

    pub fn report(&self) -> PathBuf {
        self.root.join("report.json")
    }

    /// The report of an earlier attempt (1, 2, …), kept when `fanout retry` runs tasks again.
    pub fn earlier_report(&self, attempt: usize) -> PathBuf {
        self.root.join(format!("report.{attempt}.json"))
    }

    pub fn inputs(&self) -> PathBuf {
        self.root.join("inputs")
    }

    /// The task file as the run read it (`fanout resume` reads it again).
    pub fn input_tasks(&self) -> PathBuf {
        self.inputs().join("tasks.json")
    }

    /// The resolved base and options of the run.
    pub fn input_options(&self) -> PathBuf {
        self.inputs().join("run.json")
    }

    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn events(&self) -> PathBuf {
        self.root.join("events")
    }

    /// The egress proxy's Unix sockets (one per task and phase it has), owner-only.
    pub fn egress(&self) -> PathBuf {
        self.root.join("egress")
    }

    pub fn status(&self) -> PathBuf {
        self.root.join("status")
    }

    pub fn patches(&self) -> PathBuf {
        self.root.join("patches")
    }

    /// The folders a run writes its records into, created when it starts.
    pub fn record_dirs(&self) -> [PathBuf; 4] {
        [self.events(), self.logs(), self.patches(), self.status()]
    }

    /// Where workspaces are, as fanout reaches them (inside the run folder).
    pub fn worktrees_link(&self) -> PathBuf {
        self.root.join(WORKTREES)
    }

    /// Where scratch folders are, as fanout reaches them (inside the run folder).
    pub fn scratch_link(&self) -> PathBuf {
        self.root.join(SCRATCH)
    }

    /// The real folder of the workspaces (as root, outside the run folder: agents get these).
    pub fn worktrees(&self) -> PathBuf {
        crate::sandbox::user::workspace_dir(&self.root, WORKTREES)
    }

    /// The real folder of the scratch folders.
    pub fn scratch(&self) -> PathBuf {
        crate::sandbox::user::workspace_dir(&self.root, SCRATCH)
    }

    /// The files of one task (or of the integration gate, `+integration`).
    pub fn task(&self, id: &str) -> TaskFiles {
        TaskFiles {
            worktree: self.worktrees().join(id),
            scratch: self.scratch().join(id),
            events: self.events().join(format!("{id}.jsonl")),
            stderr_log: self.logs().join(format!("{id}.stderr.log")),
            status_file: self.status().join(format!("{id}.json")),
            patch: self.patches().join(format!("{id}.patch")),
            verify_log: self.logs().join(format!("{id}.verify.log")),
            setup_log: self.logs().join(format!("{id}.setup.log")),
            reset_log: self.logs().join(format!("{id}.reset.log")),
        }
    }
}

/// The subfolders of a run that hold workspaces.
pub const WORKTREES: &str = "worktrees";
pub const SCRATCH: &str = "scratch";

/// Where one task's files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskFiles {
    /// The workspace (a real path: as root it lies outside the run folder).
    pub worktree: PathBuf,
    pub scratch: PathBuf,
    pub events: PathBuf,
    pub stderr_log: PathBuf,
    pub status_file: PathBuf,
    pub patch: PathBuf,
    pub verify_log: PathBuf,
    pub setup_log: PathBuf,
    /// The reset of a reused worktree (worktree pool).
    pub reset_log: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_file_of_a_task() {
        let run = RunDir::new("/r");
        let t = run.task("a-1");
        assert_eq!(t.worktree, Path::new("/r/worktrees/a-1"));
        assert_eq!(t.scratch, Path::new("/r/scratch/a-1"));
        assert_eq!(t.events, Path::new("/r/events/a-1.jsonl"));
        assert_eq!(t.stderr_log, Path::new("/r/logs/a-1.stderr.log"));
        assert_eq!(t.status_file, Path::new("/r/status/a-1.json"));
        assert_eq!(t.patch, Path::new("/r/patches/a-1.patch"));
        assert_eq!(t.verify_log, Path::new("/r/logs/a-1.verify.log"));
        assert_eq!(run.state(), Path::new("/r/state.json"));
        assert_eq!(run.report(), Path::new("/r/report.json"));
    }
}
