/*!
The integration gate (`integrate` in the task file), merge-queue style: after integration the
verify command runs on the integration result, in a sandboxed checkout of it. When it fails,
the tasks that break it are found by bisection over the merged tasks in merge order, taken out
(`integration_failed`), and the integration is rebuilt from the rest and verified again, until
the branch handed over passes (or nothing is left).

Bisection finds the first failing prefix by binary search, takes that task out and goes on
from the prefix before it (known to pass): with k culprits among n tasks that is O(k log n)
verify runs. A failure is confirmed before anyone is blamed: the failing prefix runs once more,
and when it passes then, the failure was flaky — reported as such, nobody taken out for it.
After [`MAX_FLAKY`] failures that did not reproduce the gate stops trusting its command: the
integration is reported as failed and flaky, and every task stays in.
*/

use std::path::Path;
use std::time::Duration;

use git2::{Oid, Repository};

use super::gate_progress::{self, Probe};
use super::groups;
use super::integrate::{rebuild, Integration};
use super::shared::Shared;
use crate::event::EventKind;
use crate::git::worktree;
use crate::ids::TaskId;
use crate::plan::IntegrateGate;
use crate::process::SpawnSpec;
use crate::report::{GateResult, IntegrationReport, TaskReport, TaskStatus};

/// How much of a failing run's output goes into an ejected task's error.
const ERROR_OUTPUT: usize = 2000;

/// Failures that did not reproduce before the gate gives up on a flaky verify command.
const MAX_FLAKY: usize = 2;

/// Why the gate could not do its work (not a verdict on any task).
#[derive(Debug, thiserror::Error)]
pub(crate) enum GateError {
    #[error("cannot check out the integration for its verify command: {0}")]
    Checkout(String),
    #[error("cannot build an integration of the remaining tasks: {0}")]
    Build(String),
    #[error("the run was interrupted during the integration gate")]
    Interrupted,
}

/// One verify run's verdict.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Verdict {
    Passed,
    /// Failed, with the command's summary and output.
    Failed(String),
}

/// What [`bisect`] found.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Bisection {
    /// Items left, in order.
    pub kept: Vec<usize>,
    /// Items taken out, in the order found, with the failing run's text.
    pub ejected: Vec<(usize, String)>,
    /// Items taken out with an ejected one (they depend on it).
    pub dropped_with: Vec<(usize, usize)>,
    pub passed: bool,
    /// The verify command fails on the base too: no task is to blame, nothing was taken out.
    pub base_fails: Option<String>,
    pub last_output: Option<String>,
    /// Failures that did not happen again when confirmed (the output of each).
    pub flaky: Vec<String>,
}

/// Finds the items that break `check` (the integration of a list of items, in order, verified).
/// `dependents(item, kept)`: the kept items that must go with it.
#[cfg(test)]
pub(crate) fn bisect(
    items: Vec<usize>,
    check: &mut dyn FnMut(&[usize]) -> Result<Verdict, GateError>,
    dependents: &dyn Fn(usize, &[usize]) -> Vec<usize>,
) -> Result<Bisection, GateError> {
    bisect_told(items, &mut |set, _| check(set), dependents)
}

/// A verify run of the integration of some items, told what it is (for the progress events).
pub(crate) type ToldCheck<'a> = dyn FnMut(&[usize], Probe) -> Result<Verdict, GateError> + 'a;

/// [`bisect`], telling `check` what each run is ([`Probe`]).
pub(crate) fn bisect_told(
    items: Vec<usize>,
    check: &mut ToldCheck<'_>,
    dependents: &dyn Fn(usize, &[usize]) -> Vec<usize>,
) -> Result<Bisection, GateError> {
    let mut out = Bisection {
        kept: items,
        ..Bisection::default()
    };
    // The longest prefix of `kept` known to pass (0: the base, assumed until checked).
    let mut good = 0usize;
    let mut base_checked = false;
    loop {
        if out.kept.is_empty() {
            // Only reached after the base was checked and passed.
            out.passed = true;
            return Ok(out);
        }
        let mut failing = match check(&out.kept, Probe::full(out.kept.len()))? {
            Verdict::Passed => {
                out.passed = true;
                return Ok(out);
            }
            Verdict::Failed(text) => text,
        };
        out.last_output = Some(failing.clone());
        let (mut lo, mut hi) = (good.min(out.kept.len() - 1), out.kept.len());
        let mut step = 0;
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            step += 1;
            let probe = Probe::bisect(step, hi - lo, out.kept.len());
            match check(&out.kept[..mid], probe)? {
                Verdict::Passed => lo = mid,
                Verdict::Failed(text) => {
                    hi = mid;
                    failing = text;
                }
            }
        }
        if hi == 1 && !base_checked {
            base_checked = true;
            if let Verdict::Failed(text) = check(&[], Probe::base(out.kept.len()))? {
                out.base_fails = Some(text);
                return Ok(out);
            }
        }
        // Confirm before blaming: the failing prefix must fail again.
        match check(&out.kept[..hi], Probe::confirm(out.kept.len()))? {
            Verdict::Failed(text) => failing = text,
            Verdict::Passed => {
                out.flaky.push(failing);
                if out.flaky.len() >= MAX_FLAKY {
                    return Ok(out);
                }
                // Known to pass now: go on from there (the whole set runs again).
                good = hi;
                continue;
            }
        }
        let culprit = out.kept[hi - 1];
        let with = dependents(culprit, &out.kept);
        out.kept.retain(|&k| k != culprit && !with.contains(&k));
        out.dropped_with
            .extend(with.into_iter().map(|d| (d, culprit)));
        out.ejected.push((culprit, failing));
        good = hi - 1;
    }
}

/// Runs the gate on `integration`; updates it to what is handed over and the reports of tasks
/// taken out.
pub(crate) fn run(
    shared: &Shared,
    gate: &IntegrateGate,
    handle: &tokio::runtime::Handle,
    reports: &mut [TaskReport],
    integration: &mut Integration,
) -> IntegrationReport {
    let mut report = IntegrationReport::default();
    let started = gate_progress::started(shared, integration.merged.len());
    let result = run_inner(shared, gate, handle, reports, integration, &mut report);
    if let Err(e) = result {
        report.passed = false;
        report.output = Some(e.to_string());
        shared.events.warn(None, &format!("integration gate: {e}"));
    }
    // The output is only kept from a failing run (or why the gate could not run).
    report.reason = report
        .output
        .as_deref()
        .and_then(|o| o.lines().next())
        .map(str::to_string);
    gate_progress::ended(shared, started, &report);
    report
}

fn run_inner(
    shared: &Shared,
    gate: &IntegrateGate,
    handle: &tokio::runtime::Handle,
    reports: &mut [TaskReport],
    integration: &mut Integration,
    report: &mut IntegrationReport,
) -> Result<(), GateError> {
    let repo = Repository::open(&shared.repo_path)
        .map_err(|e| GateError::Build(format!("cannot open the repository: {e}")))?;
    let commits: std::collections::BTreeMap<usize, Oid> =
        integration.merged.iter().copied().collect();
    let all: Vec<usize> = integration.merged.iter().map(|&(i, _)| i).collect();
    // A group is one item: bisection never splits it, and takes it out whole.
    let items = groups::units(shared, &all);
    let mut checker = Checker {
        shared,
        gate,
        handle,
        repo: &repo,
        runs: 0,
        flaky: Vec::new(),
    };
    let mut check = |set: &[usize], probe: Probe| -> Result<Verdict, GateError> {
        let run = checker.runs + 1;
        let set = groups::expand(shared, set, &all);
        let build_and_verify = || {
            let list: Vec<(usize, Oid)> = set.iter().map(|&i| (i, commits[&i])).collect();
            let (head, _) = rebuild(shared, &repo, &list)
                .map_err(|e| GateError::Build(crate::error_chain(&e)))?;
            // The full integration is already built: verify its head itself.
            let head = if set.len() == integration.merged.len() {
                integration.head
            } else {
                head
            };
            checker.verify(head)
        };
        let passed = |v: &Verdict| *v == Verdict::Passed;
        gate_progress::step(shared, run, probe, set.len(), build_and_verify, passed)
    };
    let dependents = |culprit: usize, kept: &[usize]| unit_dependents(shared, culprit, kept, &all);
    let found = bisect_told(items, &mut check, &dependents);
    report.verify_runs = checker.runs;
    let retried_flaky = std::mem::take(&mut checker.flaky);
    let found = whole_groups(shared, found?, &all);
    report.output = found.last_output.clone();
    if let Some(text) = &found.base_fails {
        report.passed = false;
        report.output = Some(text.clone());
        shared.events.warn(
            None,
            "integration gate: the verify command fails on the base commit too, so no task is to blame; nothing was taken out",
        );
        return Ok(());
    }
    blame(shared, reports, &found, report);
    if !found.ejected.is_empty() {
        let list: Vec<(usize, Oid)> = found.kept.iter().map(|&i| (i, commits[&i])).collect();
        hand_over_the_rest(shared, &repo, list, reports, integration)?;
    }
    report_flaky(shared, &found, report);
    super::gate_verdict::report_retried(shared, &retried_flaky, report);
    report.passed = found.passed;
    if found.passed {
        for &(i, _) in &integration.merged {
            reports[i].verify.push(GateResult {
                gate: "integration".into(),
                passed: true,
                detail: None,
                paths: Vec::new(),
                output: None,
                stderr: None,
                flaky: false,
            });
        }
    }
    Ok(())
}

/// Hands over exactly what passed: the integration rebuilt from the tasks kept (`list`); a task
/// that conflicts without the ones taken out says so.
fn hand_over_the_rest(
    shared: &Shared,
    repo: &Repository,
    list: Vec<(usize, Oid)>,
    reports: &mut [TaskReport],
    integration: &mut Integration,
) -> Result<(), GateError> {
    let (head, conflicts) =
        rebuild(shared, repo, &list).map_err(|e| GateError::Build(crate::error_chain(&e)))?;
    for (i, paths) in &conflicts {
        let r = &mut reports[*i];
        r.status = TaskStatus::Conflict;
        r.error = Some(format!(
            "conflicts, once tasks were taken out by the integration gate, in: {}",
            paths.join(", ")
        ));
        r.conflict_paths = paths.clone();
    }
    integration.head = head;
    integration.merged = list
        .into_iter()
        .filter(|(i, _)| !conflicts.iter().any(|(c, _)| c == i))
        .collect();
    Ok(())
}

/// [`dependents_of`] for units (a task, or a group at its first member): the kept units with a
/// task that depends on one of `culprit`'s tasks.
fn unit_dependents(shared: &Shared, culprit: usize, kept: &[usize], all: &[usize]) -> Vec<usize> {
    let kept_tasks = groups::expand(shared, kept, all);
    let mut out = Vec::new();
    for c in groups::expand(shared, &[culprit], all) {
        for d in dependents_of(shared, c, &kept_tasks) {
            let unit = groups::unit_of(shared, d, kept);
            if unit != culprit && !out.contains(&unit) {
                out.push(unit);
            }
        }
    }
    out
}

/// What bisection found over units, said per task: a group's every task.
fn whole_groups(shared: &Shared, found: Bisection, all: &[usize]) -> Bisection {
    let tasks = |u: usize| groups::expand(shared, &[u], all);
    Bisection {
        kept: groups::expand(shared, &found.kept, all),
        ejected: found
            .ejected
            .into_iter()
            .flat_map(|(u, text)| tasks(u).into_iter().map(move |t| (t, text.clone())))
            .collect(),
        dropped_with: found
            .dropped_with
            .into_iter()
            .flat_map(|(d, c)| tasks(d).into_iter().map(move |t| (t, c)))
            .collect(),
        ..found
    }
}

/// The kept tasks that go with `culprit`: those that depend on it, directly or not.
fn dependents_of(shared: &Shared, culprit: usize, kept: &[usize]) -> Vec<usize> {
    let mut gone: Vec<&TaskId> = vec![shared.tasks[culprit].id()];
    let mut out = Vec::new();
    for &k in kept {
        if shared.tasks[k]
            .spec
            .depends_on
            .iter()
            .any(|d| gone.contains(&d))
        {
            gone.push(shared.tasks[k].id());
            out.push(k);
        }
    }
    out
}

/// The tasks bisection took out, and those that went with them, in their reports and events.
fn blame(
    shared: &Shared,
    reports: &mut [TaskReport],
    found: &Bisection,
    report: &mut IntegrationReport,
) {
    for (i, text) in &found.ejected {
        let r = &mut reports[*i];
        // The failing run's first line: its exit and the reason read from its output.
        let detail = format!(
            "the integration verify command fails once this task is merged (found by bisection): {}",
            text.lines().next().unwrap_or("")
        );
        r.status = TaskStatus::IntegrationFailed;
        r.error = Some(format!(
            "{detail}\n{}",
            super::tail::tail(text, ERROR_OUTPUT)
        ));
        r.verify.push(GateResult {
            gate: "integration".into(),
            passed: false,
            detail: Some(detail.clone()),
            paths: Vec::new(),
            output: Some(text.clone()),
            stderr: None,
            flaky: false,
        });
        report.ejected.push(r.id.clone());
        shared.events.emit(EventKind::Ejected {
            task: r.id.clone(),
            reason: detail,
        });
    }
    for (i, culprit) in &found.dropped_with {
        let r = &mut reports[*i];
        r.status = TaskStatus::Skipped;
        r.error = Some(format!(
            "dependency {} was taken out by the integration gate",
            shared.tasks[*culprit].id()
        ));
        shared.events.emit(EventKind::Ejected {
            task: r.id.clone(),
            reason: r.error.clone().unwrap_or_default(),
        });
    }
}

/// Failures that did not reproduce: counted, and said.
fn report_flaky(shared: &Shared, found: &Bisection, report: &mut IntegrationReport) {
    report.flaky = found.flaky.len() as u32;
    if !found.flaky.is_empty() {
        let what = if found.passed {
            "it passed when run again"
        } else {
            "failures kept not reproducing, so the gate gave up without taking any task out"
        };
        shared.events.warn(
            None,
            &format!(
                "integration gate: the verify command is flaky: {} failure(s) did not reproduce ({what})",
                found.flaky.len()
            ),
        );
        if !found.passed {
            report.output = found.flaky.last().cloned();
        }
    }
}

/// Runs the verify command on integration commits, each in a fresh sandboxed checkout.
struct Checker<'a> {
    shared: &'a Shared,
    gate: &'a IntegrateGate,
    handle: &'a tokio::runtime::Handle,
    repo: &'a Repository,
    runs: u32,
    /// Runs that passed only when run again (`verify_retries`): how each failed first.
    flaky: Vec<String>,
}

/// Where the gate's checkout and scratch folder live: names no task id can take (`+`).
const GATE_DIR: &str = "+integration";

impl Checker<'_> {
    fn verify(&mut self, commit: Oid) -> Result<Verdict, GateError> {
        if self.shared.stop.requested() {
            return Err(GateError::Interrupted);
        }
        let shared = self.shared;
        let name = format!("fanout-{}{GATE_DIR}", shared.run_id);
        let files = crate::run_dir::RunDir::new(&shared.run_dir).task(GATE_DIR);
        let (checkout, scratch) = (files.worktree, files.scratch);
        let branch = format!("fanout/{}/integration-check", shared.run_id);
        self.remove(&name, &checkout, &scratch, &branch);
        let made = worktree::create(self.repo, &name, &branch, commit, &checkout)
            .map_err(|e| crate::error_chain(&e))
            .and_then(|()| {
                for sub in ["tmp", "home"] {
                    std::fs::create_dir_all(scratch.join(sub))
                        .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
                }
                Ok(())
            });
        let extras = made
            .map_err(super::gate_checkout::Incomplete::Other)
            .and_then(|()| {
                let at = (checkout.as_path(), scratch.as_path());
                super::gate_checkout::complete(shared, self.gate, self.handle, commit, at)
            });
        let extras = match extras {
            Ok(extras) => extras,
            Err(e) => {
                self.remove(&name, &checkout, &scratch, &branch);
                return match e {
                    // The commit breaks the setup: it fails like a failing verify.
                    super::gate_checkout::Incomplete::SetupFailed(why) => {
                        self.runs += 1;
                        Ok(Verdict::Failed(why))
                    }
                    super::gate_checkout::Incomplete::Other(why) => Err(GateError::Checkout(why)),
                };
            }
        };
        self.runs += 1;
        let spec = self.spawn_spec(&name, &checkout, &scratch, extras);
        let log = crate::run_dir::RunDir::new(&shared.run_dir)
            .logs()
            .join("integration.verify.log");
        let argv = self.gate.verify.argv();
        let timeout = Duration::from_secs_f64(self.gate.timeout_secs);
        let mut cancel = shared.cancel.clone();
        let retries = self.gate.verify_retries;
        let out = self.handle.block_on(async {
            tokio::select! {
                o = crate::verify::rerun::run(&spec, &argv, timeout, Some(&log), retries) => Some(o),
                _ = cancel.wait_for(|c| *c) => None,
            }
        });
        self.remove(&name, &checkout, &scratch, &branch);
        let runs = out.ok_or(GateError::Interrupted)?;
        self.flaky.extend(runs.flaky_detail());
        Ok(match super::gate_verdict::failure_text(&runs.outcome) {
            None => Verdict::Passed,
            Some(text) => Verdict::Failed(text),
        })
    }

    /// The sandbox of a verify command: writable only the checkout and its scratch folder
    /// (TMPDIR, HOME), as the agent uid when fanout is root.
    fn spawn_spec(
        &self,
        name: &str,
        checkout: &Path,
        scratch: &Path,
        extras: super::gate_checkout::Extras,
    ) -> SpawnSpec {
        let shared = self.shared;
        let sb = &shared.options.sandbox;
        let program = self.gate.verify.argv().first().cloned();
        let read = super::launch::checkout_read(shared, name, program.as_deref());
        let mut env = std::collections::BTreeMap::new();
        env.insert("FANOUT_RUN_ID".into(), shared.run_id.to_string());
        env.insert("FANOUT_SCRATCH".into(), scratch.display().to_string());
        env.insert("TMPDIR".into(), scratch.join("tmp").display().to_string());
        env.insert("HOME".into(), scratch.join("home").display().to_string());
        env.extend(extras.env);
        if sb.run_as.is_some() {
            super::launch::dropped_root_env(&mut env, scratch);
        }
        // With the setup layer mounted, the command works in the overlay view of the checkout.
        let view = extras.overlay.as_ref().map(|o| o.merged.clone());
        let checkout = view.as_deref().unwrap_or(checkout);
        env.insert("FANOUT_WORKTREE".into(), checkout.display().to_string());
        let mut writable = vec![checkout.to_path_buf(), scratch.to_path_buf()];
        writable.extend(extras.writable);
        // A uid of its own: it runs every task's merged code.
        let run_as = crate::sandbox::user::gate_user(sb.run_as);
        let mut policy = super::launch::checkout_policy(shared, writable, read, run_as, true);
        // A plain worktree, under an overlay view only to add the setup layer.
        policy.overlay = extras.overlay;
        policy.caches = extras.caches;
        super::launch::checkout_spec(shared, checkout, policy, env, "integration", Some(&[]))
    }

    /// Removes the checkout, its registration, its branch and its scratch folder.
    fn remove(&self, name: &str, checkout: &Path, scratch: &Path, branch: &str) {
        if let Err(e) = worktree::remove(&self.shared.common_dir, name, checkout) {
            self.shared.events.warn(
                None,
                &format!("integration gate: {}", crate::error_chain(&e)),
            );
        }
        let _ = worktree::remove_tree(scratch);
        crate::caches::remove_task_layers(&super::gate_checkout::caches_layers(scratch));
        super::gate_checkout::remove_view(self.shared, checkout);
        if let Ok(mut b) = self.repo.find_branch(branch, git2::BranchType::Local) {
            let _ = b.delete();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake verify: the integration of `set` fails when it holds every item of any culprit
    /// group (a group of two: only the two together break it).
    fn run_bisect(n: usize, groups: &[&[usize]]) -> (Bisection, u32) {
        let mut runs = 0u32;
        let mut check = |set: &[usize]| -> Result<Verdict, GateError> {
            runs += 1;
            let broken = groups.iter().any(|g| g.iter().all(|x| set.contains(x)));
            Ok(if broken {
                Verdict::Failed("boom".into())
            } else {
                Verdict::Passed
            })
        };
        let found = bisect((0..n).collect(), &mut check, &|_, _| Vec::new()).expect("bisect");
        (found, runs)
    }

    #[test]
    fn a_passing_integration_takes_one_run() {
        let (found, runs) = run_bisect(6, &[]);
        assert!(found.passed);
        assert!(found.ejected.is_empty());
        assert_eq!(runs, 1);
    }

    #[test]
    fn two_tasks_that_break_it_together_lose_the_later_one() {
        let (found, runs) = run_bisect(6, &[&[1, 4]]);
        assert!(found.passed);
        let ejected: Vec<usize> = found.ejected.iter().map(|e| e.0).collect();
        assert_eq!(ejected, vec![4]);
        assert_eq!(found.kept, vec![0, 1, 2, 3, 5]);
        // 1 full + log2(6) ≈ 3 bisection steps + 1 confirmation + 1 recheck.
        assert!(runs <= 6, "{runs}");
    }

    #[test]
    fn k_culprits_among_n_take_about_k_log_n_runs() {
        let n = 1000;
        let culprits = [17usize, 400, 401, 999];
        let groups: Vec<Vec<usize>> = culprits.iter().map(|&c| vec![c]).collect();
        let refs: Vec<&[usize]> = groups.iter().map(|g| g.as_slice()).collect();
        let (found, runs) = run_bisect(n, &refs);
        assert!(found.passed);
        let ejected: Vec<usize> = found.ejected.iter().map(|e| e.0).collect();
        assert_eq!(ejected, culprits.to_vec());
        // k (log2 n + 2) + 1 = 4 * 12 + 1
        assert!(runs <= 49, "{runs}");
    }

    #[test]
    fn a_failure_that_does_not_reproduce_blames_no_task() {
        // Fails on the first run only: the confirmation passes, and so does the next full run.
        let mut runs = 0;
        let mut check = |_: &[usize]| -> Result<Verdict, GateError> {
            runs += 1;
            Ok(if runs == 1 {
                Verdict::Failed("timing".into())
            } else {
                Verdict::Passed
            })
        };
        let found = bisect(vec![0, 1, 2], &mut check, &|_, _| Vec::new()).expect("bisect");
        assert!(found.passed);
        assert!(found.ejected.is_empty());
        assert_eq!(found.kept, vec![0, 1, 2]);
        assert_eq!(found.flaky, vec!["timing".to_string()]);
    }

    #[test]
    fn a_gate_that_keeps_flaking_gives_up_without_blame() {
        // The whole set fails every other time it runs; its prefixes pass: no failure repeats.
        let mut full_runs = 0;
        let mut check = |set: &[usize]| -> Result<Verdict, GateError> {
            if set.len() == 4 {
                full_runs += 1;
                if full_runs % 2 == 1 {
                    return Ok(Verdict::Failed("flaky".into()));
                }
            }
            Ok(Verdict::Passed)
        };
        let found = bisect(vec![0, 1, 2, 3], &mut check, &|_, _| Vec::new()).expect("bisect");
        assert!(!found.passed);
        assert!(found.ejected.is_empty());
        assert_eq!(found.kept, vec![0, 1, 2, 3]);
        assert_eq!(found.flaky.len(), MAX_FLAKY);
    }

    #[test]
    fn a_culprit_is_ejected_only_after_its_failure_repeats() {
        let mut seen: Vec<Vec<usize>> = Vec::new();
        let mut check = |set: &[usize]| -> Result<Verdict, GateError> {
            seen.push(set.to_vec());
            Ok(if set.contains(&2) {
                Verdict::Failed("broken".into())
            } else {
                Verdict::Passed
            })
        };
        let found = bisect(vec![0, 1, 2, 3], &mut check, &|_, _| Vec::new()).expect("bisect");
        assert!(found.passed);
        assert_eq!(found.kept, vec![0, 1, 3]);
        assert!(found.flaky.is_empty());
        // The first failing prefix [0, 1, 2] ran twice before task 2 was taken out.
        assert_eq!(
            seen.iter().filter(|s| *s == &vec![0, 1, 2]).count(),
            2,
            "{seen:?}"
        );
    }

    #[test]
    fn a_base_that_fails_blames_no_task() {
        let mut check =
            |_: &[usize]| -> Result<Verdict, GateError> { Ok(Verdict::Failed("x".into())) };
        let found = bisect(vec![0, 1, 2], &mut check, &|_, _| Vec::new()).expect("bisect");
        assert!(!found.passed);
        assert!(found.ejected.is_empty());
        assert!(found.base_fails.is_some());
    }

    #[test]
    fn dependents_go_with_their_dependency() {
        let mut check = |set: &[usize]| -> Result<Verdict, GateError> {
            Ok(if set.contains(&1) {
                Verdict::Failed("x".into())
            } else {
                Verdict::Passed
            })
        };
        let deps = |c: usize, kept: &[usize]| -> Vec<usize> {
            if c == 1 && kept.contains(&2) {
                vec![2]
            } else {
                Vec::new()
            }
        };
        let found = bisect(vec![0, 1, 2, 3], &mut check, &deps).expect("bisect");
        assert!(found.passed);
        assert_eq!(found.kept, vec![0, 3]);
        assert_eq!(found.dropped_with, vec![(2, 1)]);
    }

    #[test]
    fn bisection_steps_say_k_of_n_and_never_exceed_n() {
        use crate::event::GateStepKind;
        for n in [2usize, 3, 5, 7, 12, 100] {
            for culprit in 0..n {
                let mut seen: Vec<Probe> = Vec::new();
                let mut check = |set: &[usize], probe: Probe| -> Result<Verdict, GateError> {
                    seen.push(probe);
                    Ok(if set.contains(&culprit) {
                        Verdict::Failed("x".into())
                    } else {
                        Verdict::Passed
                    })
                };
                let found =
                    bisect_told((0..n).collect(), &mut check, &|_, _| Vec::new()).expect("bisect");
                assert!(found.passed);
                assert_eq!(seen[0], Probe::full(n));
                let steps: Vec<&Probe> = seen
                    .iter()
                    .filter(|p| p.kind == GateStepKind::Bisect)
                    .collect();
                let most = usize::BITS - (n - 1).leading_zeros();
                for (k, p) in steps.iter().enumerate() {
                    let (step, of) = (p.step.unwrap_or(0), p.steps.unwrap_or(0));
                    assert_eq!(step as usize, k + 1, "n {n}, culprit {culprit}: {seen:?}");
                    assert!(
                        step <= of && of <= most,
                        "n {n}, culprit {culprit}: {seen:?}"
                    );
                    assert_eq!(p.tasks, n);
                }
                assert!(seen.iter().any(|p| p.kind == GateStepKind::Confirm));
            }
        }
    }
}
