/*!
The runner: executes a [`Plan`] — one pipeline per task, at most `--jobs` agents at once,
dependencies respected — then integrates the verified task commits in task-file order onto
`fanout/<run>/merged`, writes the report, and cleans up.

The runner owns the tokio runtime; git work runs in `spawn_blocking` with a repository opened
inside each job (git2 repositories are not `Sync`). Failures of single tasks are data in the
report; only a broken environment stops the run.
*/

mod advance;
mod apply;
mod budget;
mod caches;
mod candidate_outcome;
mod candidates;
mod carried;
mod egress;
mod egress_refusals;
pub mod events;
mod gate;
mod gate_checkout;
mod gate_progress;
mod gate_verdict;
mod groups;
mod identity;
mod integrate;
mod lanes;
mod launch;
mod memory;
mod merge_message;
mod merge_order;
mod outcome;
mod paths;
mod pipelines;
mod pool;
mod repair;
mod repair_rounds;
mod resolve;
mod resolve_again;
mod retry;
mod rounds;
mod schedule;
mod select;
mod setup_layers;
mod setup_run;
mod shared;
mod spending;
mod steps;
pub mod stop;
mod tail;
mod task;
mod task_workspace;
mod threads;
mod verify_gates;
mod workspace;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::ids::merged_branch;
use crate::plan::Plan;
use crate::report::{RunReport, SandboxSummary, TaskStatus, WorkspaceSummary};
use crate::state::{RunState, StateFile};

pub use events::Events;
pub use shared::RunError;
use shared::{Pending, Shared};
pub use stop::Stop;

use crate::event::{EventKind, Output, Reporter};
use pipelines::{conflict_feedback, rerun_all, run_all};
pub use workspace::collect_kept;

/// How a run reports and how it can be stopped.
pub struct RunIo {
    /// Outputs of the event stream besides the run's own files (terminal, `--json`, JUnit,
    /// HTML, an MCP client's progress).
    pub outputs: Vec<Box<dyn Output>>,
    /// Stop handle: signals pull it, and so may the caller (`Stop::request`).
    pub stop: Stop,
    /// Listen for SIGINT, SIGTERM and SIGHUP (the CLI); a server embedding runs does not.
    pub signals: bool,
    /// `run`, `resume` or `retry`, for the first event.
    pub mode: &'static str,
}

impl RunIo {
    pub fn cli(outputs: Vec<Box<dyn Output>>, mode: &'static str) -> RunIo {
        RunIo {
            outputs,
            stop: Stop::new(),
            signals: true,
            mode,
        }
    }
}

/// Runs the plan to the end. Returns the report even when tasks failed.
///
/// The run's phases: prepare (everything before the first task), schedule (the tasks'
/// pipelines within `--jobs`), integrate (merge, conflict re-runs, the integration gate), finish
/// (the report and the last event).
pub fn execute(mut plan: Plan, io: RunIo) -> Result<RunReport, RunError> {
    let started = Instant::now();
    // Before anything is created: a read-only object store or a full disk would otherwise
    // show only after every agent ran.
    crate::preflight::check(&plan.repo.common_dir, plan.options.min_free_mb)?;
    tune_libgit2();
    memory::limit_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let mut run = prepare(&mut plan, io, &runtime, started)?;
    fill_caches(&runtime, &plan, &mut run);
    let (reports, pendings) = runtime.block_on(run_all(run.shared.clone()));
    let verifier = stop_verifier(&runtime, &run.shared);
    let integrated = integrate_all(&runtime, &run, reports, pendings)?;
    Ok(finish(runtime, &plan, run, integrated, verifier, started))
}

/// libgit2's process-wide settings for a run.
fn tune_libgit2() {
    // libgit2 checks that every entry of a tree it writes exists in the object store: one
    // object read per file of the repository for every task's tree (seconds per task with
    // loose objects). fanout writes trees only from entries it hashed or read from git itself.
    git2::opts::strict_object_creation(false);
    // Every object read is otherwise hashed again (SHA-1 with collision detection): most of
    // the integration's time. Git itself checks objects when they arrive, not on every read;
    // agents cannot write the object store.
    git2::opts::strict_hash_verification(false);
    // libgit2 caches the objects it reads, by default up to 256 MB: a run of 10 000 tasks
    // would keep every commit and tree it integrated. A small cache keeps the integration's
    // trees without growing with the run.
    #[allow(unsafe_code)]
    // SAFETY: process-wide libgit2 settings, made before any git2 object of the run exists.
    unsafe {
        libgit2_sys::git_libgit2_opts(
            libgit2_sys::GIT_OPT_SET_CACHE_MAX_SIZE as std::ffi::c_int,
            (1isize << 20) as libc::ssize_t,
        );
        // Pack files are mapped in windows kept up to 8 GB by default, and every pack stays
        // open: the integration writes a pack now and then, so a long run would hold them
        // all (each read whole once, when it is indexed, and resident from then on). Bounded:
        // 4 MB of mappings, 64 open packs (least recently used are closed).
        let _ = git2::opts::set_mwindow_mapped_limit(4 << 20);
        let _ = git2::opts::set_mwindow_file_limit(64);
    }
}

/// What the run holds from its preparation to its end.
struct Prepared {
    shared: Arc<Shared>,
    stop: Stop,
    events: Events,
    dispatcher: tokio::task::JoinHandle<Vec<crate::event::OutputError>>,
    sandbox_summary: SandboxSummary,
    warnings: Vec<String>,
    // However the run ends (even by an error), no supervisor — so no agent — outlives it.
    _reap: StopAllOnDrop,
    // Objects the run writes are referenced only later: no `git gc` may prune them meanwhile.
    _gc_guard: crate::git::gc_guard::GcGuard,
}

/// Prepare: the stop listener, the verifier, the run folder, the state, the dispatcher, the
/// first events; everything the tasks share.
fn prepare(
    plan: &mut Plan,
    io: RunIo,
    runtime: &tokio::runtime::Runtime,
    started: Instant,
) -> Result<Prepared, RunError> {
    let run_dir = plan.run_dir.clone();
    let (events, events_rx) = Events::channel();
    let stop = io.stop.clone();
    // One listener for the whole run; the runtime lives until the final state is written.
    if io.signals {
        let events = events.clone();
        stop.listen(runtime, move |w| events.warn(None, w));
    }
    let reap = StopAllOnDrop(run_dir.clone());
    // Before the run folder exists: `--readback require` without a verifier creates nothing.
    // Its warning is said after the run's first event.
    let mut early_warnings: Vec<String> = Vec::new();
    let gc_guard = crate::git::gc_guard::GcGuard::acquire(&plan.repo.common_dir, |w| {
        early_warnings.push(w.to_string())
    });
    let (judges, verifier, readback_skip) = start_judges(plan, runtime, &mut early_warnings)?;
    let (workspaces, state, run_state) = open_run_folder(plan)?;
    let dispatcher = start_dispatcher(
        runtime,
        plan,
        (state, run_state),
        io.outputs,
        events_rx,
        &stop,
    );
    let (sandbox_summary, mut warnings) = run_warnings(plan);
    early_warnings.extend(warnings.iter().cloned());
    announce(
        plan,
        &events,
        io.mode,
        (&sandbox_summary, &workspaces),
        &early_warnings,
    );
    let overlap_groups = lanes::announce(&plan.tasks, plan.overlap, &events);
    if let Some(why) = readback_skip
        .as_ref()
        .filter(|_| plan.options.readback != crate::plan::ReadbackMode::Off)
    {
        warnings.push(format!("read-back skipped: {why}"));
    }
    let caches = check_caches(plan, &workspaces, &events, &mut warnings)?;
    let judged = (verifier, judges, readback_skip);
    let shared = shared_state(
        plan,
        started,
        (&events, &stop),
        judged,
        (workspaces, caches),
        overlap_groups,
    );
    plan.task_file_text = String::new();
    Ok(Prepared {
        shared,
        stop,
        events,
        dispatcher,
        sandbox_summary,
        warnings,
        _reap: reap,
        _gc_guard: gc_guard,
    })
}

/// What every task pipeline shares, the plan's tasks moved into it.
fn shared_state(
    plan: &mut Plan,
    started: Instant,
    (events, stop): (&Events, &Stop),
    (verifier, judges, readback_skip): (
        Option<crate::verify::readback::Verifier>,
        crate::verify::judges::Judges,
        Option<String>,
    ),
    (workspaces, caches): (workspace::Workspaces, Option<crate::caches::RunCaches>),
    overlap_groups: Vec<crate::plan::overlap::OverlapGroup>,
) -> Arc<Shared> {
    Arc::new(Shared {
        // Before the priors and earlier reports are moved out of the plan.
        spending: carried_spending(plan),
        caches,
        egress_refused: Default::default(),
        run_started: started,
        run_id: plan.run_id.clone(),
        repo_path: plan.repo.workdir.clone(),
        common_dir: plan.repo.common_dir.clone(),
        workdir: plan.repo.workdir.clone(),
        base: plan.base,
        run_dir: plan.run_dir.clone(),
        options: plan.options.clone(),
        // Moved, not copied: with 10 000 tasks every copy of the plan's tasks counts.
        tasks: std::mem::take(&mut plan.tasks),
        events: events.clone(),
        cancel: stop.cancel_rx(),
        stop: stop.clone(),
        verifier: verifier.map(|v| Arc::new(tokio::sync::Mutex::new(v))),
        judges: Arc::new(judges),
        readback_skip,
        priors: std::mem::take(&mut plan.priors),
        earlier_integration: plan.earlier_integration,
        earlier_reports: std::mem::take(&mut plan.earlier_reports),
        integrate: plan.integrate.clone(),
        on_conflict: plan.on_conflict,
        overlap: plan.overlap,
        overlap_groups,
        merge_rules: plan.merge_rules.clone(),
        workspaces,
    })
}

/// The run's spending, starting from what the outcomes a resumed run keeps spent before
/// (issue 23).
fn carried_spending(plan: &Plan) -> spending::Spending {
    let carried = crate::usage::Usage::sum(
        plan.earlier_reports
            .iter()
            .filter(|(id, _)| plan.priors.contains_key(*id))
            .filter_map(|(_, r)| r.usage.as_deref()),
    );
    spending::Spending::new(plan.pricing.clone(), plan.budget.clone(), carried)
}

/// The judges' folder, and the read-back verifier (or why read-back is skipped).
fn start_judges(
    plan: &Plan,
    runtime: &tokio::runtime::Runtime,
    early_warnings: &mut Vec<String>,
) -> Result<
    (
        crate::verify::judges::Judges,
        Option<crate::verify::readback::Verifier>,
        Option<String>,
    ),
    RunError,
> {
    let judges = crate::verify::judges::Judges::create(
        &plan.options.sandbox,
        &plan.options.self_exe,
        plan.run_id.as_str(),
    )
    .map_err(|e| RunError::Workspace(crate::error_chain(&e)))?;
    let (verifier, readback_skip) = runtime
        .block_on(crate::verify::readback::start_for_run(plan, &judges, |w| {
            early_warnings.push(w.to_string())
        }))
        .map_err(|e| RunError::Verifier(e.to_string()))?;
    Ok((judges, verifier, readback_skip))
}

/// The one dispatcher: every event of the run goes through it to every output (the state,
/// the run's files, and `outputs`).
fn start_dispatcher(
    runtime: &tokio::runtime::Runtime,
    plan: &Plan,
    (state, run_state): (StateFile, RunState),
    outputs: Vec<Box<dyn Output>>,
    events_rx: tokio::sync::mpsc::UnboundedReceiver<EventKind>,
    stop: &Stop,
) -> tokio::task::JoinHandle<Vec<crate::event::OutputError>> {
    let mut reporter = Reporter::new();
    reporter.add(Box::new(events::StateOutput::new(state, run_state)));
    reporter.add(Box::new(events::RunFilesOutput::new(
        &plan.run_dir,
        plan.options.report.clone(),
    )));
    for o in outputs {
        reporter.add(o);
    }
    runtime.spawn(events::dispatch(
        plan.run_id.to_string(),
        events_rx,
        reporter,
        stop.clone(),
    ))
}

/// Before any task: the caches' store checked (broken folders replaced, said), the layering
/// decided. `None` when no task names a cache.
fn check_caches(
    plan: &Plan,
    workspaces: &workspace::Workspaces,
    events: &Events,
    warnings: &mut Vec<String>,
) -> Result<Option<crate::caches::RunCaches>, RunError> {
    let prepared = caches::prepare(
        &plan.tasks,
        &plan.repo.common_dir,
        &plan.run_dir,
        &plan.options,
        workspaces.overlay(),
    )
    .map_err(RunError::Workspace)?;
    Ok(prepared.map(|(c, said)| {
        for w in said {
            events.warn(None, &w);
            warnings.push(w);
        }
        c
    }))
}

/// The run folder: workspace folders, the kind of workspace, the record folders, the inputs a
/// resume reads, and the state.
fn open_run_folder(plan: &Plan) -> Result<(workspace::Workspaces, StateFile, RunState), RunError> {
    let run_dir = &plan.run_dir;
    crate::sandbox::user::prepare_run_workspace(
        run_dir,
        plan.run_id.as_str(),
        plan.options.sandbox.run_as,
    )
    .map_err(|e| match e {
        crate::sandbox::user::UserError::Workspace { path, source } => RunError::RunDir {
            path: path.display().to_string(),
            source,
        },
        other => RunError::RunDir {
            path: run_dir.display().to_string(),
            source: std::io::Error::other(other.to_string()),
        },
    })?;
    let workspaces = workspace::Workspaces::decide(
        &plan.options,
        workspace::RunPlace {
            run_id: plan.run_id.to_string(),
            run_dir: run_dir.clone(),
            common_dir: plan.repo.common_dir.clone(),
        },
    )
    .map_err(RunError::Workspace)?;
    let layout = crate::run_dir::RunDir::new(run_dir);
    for p in layout.record_dirs() {
        std::fs::create_dir_all(&p).map_err(|source| RunError::RunDir {
            path: p.display().to_string(),
            source,
        })?;
    }
    if plan.priors.is_empty() {
        crate::resume::save_inputs(plan, &plan.task_file_text).map_err(|source| {
            RunError::RunDir {
                path: layout.inputs().display().to_string(),
                source,
            }
        })?;
    }
    let mut state = StateFile::new(layout.state());
    let ids: Vec<String> = plan.tasks.iter().map(|t| t.id().to_string()).collect();
    let run_state = RunState::start(&plan.run_id, plan.base, &ids, &plan.priors);
    state.write(&run_state);
    Ok((workspaces, state, run_state))
}

/// What the run asks to confine its tasks' network with.
fn run_network(sb: &crate::plan::SandboxOptions) -> crate::sandbox::NetworkConfinement {
    use crate::plan::NetChoice;
    use crate::sandbox::NetworkConfinement;
    match sb.net {
        _ if !sb.enabled => NetworkConfinement::Any,
        NetChoice::Isolated => NetworkConfinement::Namespace,
        NetChoice::Any => NetworkConfinement::Any,
        NetChoice::Default | NetChoice::None => NetworkConfinement::LandlockPorts,
    }
}

/// The sandbox as the report describes it, and the run-wide warnings known before any task.
fn run_warnings(plan: &Plan) -> (SandboxSummary, Vec<String>) {
    let mut warnings = Vec::new();
    let unconfined = (!plan.options.sandbox.enabled).then(|| {
        "agents run UNCONFINED (--sandbox off): they can write anywhere this user can".to_string()
    });
    warnings.extend(unconfined.clone());
    if plan.options.sandbox.enabled && plan.options.sandbox.net == crate::plan::NetChoice::Any {
        warnings.push(
            "agents' network is not limited (--net any): every process of a task may connect anywhere"
                .to_string(),
        );
    }
    let sandbox_summary = SandboxSummary {
        mode: if unconfined.is_some() {
            "off"
        } else {
            "landlock"
        }
        .into(),
        kernel_abi: crate::sandbox::kernel_abi(),
        warning: unconfined,
        root: crate::sandbox::user::is_root(),
        agent_user: plan
            .options
            .sandbox
            .run_as
            .map(crate::sandbox::user::describe),
        network: Some(run_network(&plan.options.sandbox).as_str().to_string()),
    };
    if let Ok(repo) = git2::Repository::open(&plan.repo.workdir) {
        let drivers = crate::git::repo::filter_drivers(&repo, plan.base);
        if !drivers.is_empty() {
            warnings.push(format!(
                "the repository's attributes name filter drivers fanout does not run: {}; a task that changes such a path fails unless --allow-unfiltered{}",
                drivers.join("; "),
                if plan.options.allow_unfiltered { " (given: raw content is committed)" } else { "" }
            ));
        }
    }
    warnings.extend(plan.warnings.iter().cloned());
    (sandbox_summary, warnings)
}

/// The run's first events: how it runs, the warnings so far, every task queued.
fn announce(
    plan: &Plan,
    events: &Events,
    mode: &str,
    (sandbox, workspaces): (&SandboxSummary, &workspace::Workspaces),
    warnings: &[String],
) {
    events.emit(EventKind::RunStarted {
        mode: mode.into(),
        repo: plan.repo.workdir.display().to_string(),
        base: plan.base.to_string(),
        base_rev: plan.base_rev.clone(),
        jobs: plan.options.jobs,
        tasks: plan.tasks.iter().map(|t| t.id().to_string()).collect(),
        agents: {
            let mut a: Vec<String> = plan.tasks.iter().map(|t| t.agent_name.clone()).collect();
            a.sort();
            a.dedup();
            a
        },
        sandbox: Box::new(sandbox.clone()),
        workspace: Box::new(workspaces.summary.clone()),
    });
    for w in warnings {
        events.warn(None, w);
    }
    for t in &plan.tasks {
        events.emit(EventKind::TaskQueued {
            task: t.id().to_string(),
            agent: t.agent_name.clone(),
        });
    }
}

/// `caches_fill`: the shared caches filled once, before any agent, from the base commit.
fn fill_caches(runtime: &tokio::runtime::Runtime, plan: &Plan, run: &mut Prepared) {
    let Some(fill) = plan.caches_fill.as_ref().filter(|_| !run.stop.requested()) else {
        return;
    };
    if let Some(w) = caches::fill(&run.shared, fill, runtime.handle()) {
        run.events.warn(None, &w);
        run.warnings.push(w);
    }
}

/// Stops the verifier before integration (its process must not outlive the run), and waits
/// for the supervisors cancelled pipelines left stopping their trees, so no agent runs during
/// integration.
fn stop_verifier(
    runtime: &tokio::runtime::Runtime,
    shared: &Shared,
) -> Option<crate::report::VerifierSummary> {
    let summary = shared.verifier.clone().map(|v| {
        runtime.block_on(async move {
            let mut v = v.lock().await;
            v.shutdown().await;
            v.summary()
        })
    });
    crate::process::stop_under(&shared.run_dir, crate::agent::STOP_GRACE);
    summary
}

/// What integration handed over.
struct Integrated {
    reports: Vec<crate::report::TaskReport>,
    head: git2::Oid,
    gate: Option<crate::report::IntegrationReport>,
}

/// Integrate: the verified commits onto the integration branch, conflicting tasks run again
/// (`--on-conflict retry`), the integration gate, the hand-over, the workspaces' cleanup.
fn integrate_all(
    runtime: &tokio::runtime::Runtime,
    run: &Prepared,
    mut reports: Vec<crate::report::TaskReport>,
    mut pendings: Vec<Pending>,
) -> Result<Integrated, RunError> {
    let (shared, stop) = (&run.shared, &run.stop);
    let ready = pendings
        .iter()
        .filter(|p| matches!(p, Pending::Ready(_)))
        .count();
    run.events.emit(EventKind::IntegrationStarted { ready });
    // What the tasks' pipelines freed goes back before the integration's peak.
    memory::trim();
    let mut integration = integrate::integrate(shared, &mut reports, &pendings, stop.requested())?;
    let retries = shared.on_conflict.retries();
    let mut resolving = resolve_again::Resolving::default();
    for round in 1..=retries {
        if stop.requested()
            || !rerun_conflicts(
                runtime,
                run,
                round,
                (&mut reports, &mut pendings),
                &mut integration,
                &mut resolving,
            )?
        {
            break;
        }
    }
    let gate = match &shared.integrate {
        Some(g) if !stop.requested() => Some(repair_rounds::run(
            runtime,
            shared,
            g,
            &mut reports,
            &mut pendings,
            &mut integration,
        )?),
        _ => None,
    };
    rounds::close(&mut reports);
    if !stop.requested() {
        // Resolve rounds that all failed: the task ends as with `--on-conflict fail`.
        for i in resolving.end_as_conflicts(&mut reports) {
            run.events.emit(EventKind::Conflict {
                task: reports[i].id.clone(),
                paths: reports[i].conflict_paths.clone(),
            });
        }
    }
    let head = integrate::hand_over(shared, &integration)?;
    if !stop.now() {
        integrate::cleanup(shared, &mut reports);
    }
    Ok(Integrated {
        reports,
        head,
        gate,
    })
}

/// One round of `--on-conflict retry` / `resolve`: conflicting tasks (and, with `resolve`, the
/// ones whose last resolve round failed) run again from the integration head and are integrated
/// at the end of the queue. `false` when nothing conflicted.
fn rerun_conflicts(
    runtime: &tokio::runtime::Runtime,
    run: &Prepared,
    round: u32,
    (reports, pendings): (&mut [crate::report::TaskReport], &mut [Pending]),
    integration: &mut integrate::Integration,
    resolving: &mut resolve_again::Resolving,
) -> Result<bool, RunError> {
    let shared = &run.shared;
    let conflicted: Vec<usize> = (0..reports.len())
        .filter(|&i| reports[i].status == TaskStatus::Conflict)
        .collect();
    // Only resolve rounds go again after a failure; a `retry` round that fails ends the task.
    let failed = match shared.on_conflict.resolves() {
        true => {
            resolving.note(reports, pendings, &conflicted);
            resolving.failed(reports, pendings)
        }
        false => Vec::new(),
    };
    let again: Vec<usize> = conflicted.iter().chain(&failed).copied().collect();
    if again.is_empty() {
        return Ok(false);
    }
    let mut reruns = Vec::new();
    for &i in &again {
        let paths = match failed.contains(&i) {
            true => resolving.paths(i),
            false => reports[i].conflict_paths.clone(),
        };
        run.events.emit(EventKind::ConflictRetry {
            task: reports[i].id.clone(),
            round,
            paths: paths.clone(),
        });
        let retried = failed.contains(&i).then(|| &reports[i]);
        let rerun = conflict_rerun(
            shared,
            integration,
            (&reports[i], &pendings[i], i),
            &paths,
            round,
            retried,
        );
        reruns.push((i, rerun, rounds::before_rerun(&reports[i])));
    }
    let results = runtime.block_on(rerun_all(shared.clone(), round + 1, reruns));
    crate::process::stop_under(&shared.run_dir, crate::agent::STOP_GRACE);
    for (i, report, pending) in results {
        // Its `usage` counts its earlier rounds too (the task's ledger, issue 23).
        reports[i] = report;
        pendings[i] = pending;
    }
    integrate::apply_ready(
        shared,
        reports,
        pendings,
        run.stop.requested(),
        &again,
        integration,
    )?;
    Ok(true)
}

/// The round of one conflicting task: from the integration head, told the conflict (with
/// `resolve`, its change merged with the conflicts marked, on its own thread); `failed`: the
/// report of its last resolve round when that failed.
fn conflict_rerun(
    shared: &Shared,
    integration: &integrate::Integration,
    (report, pending, i): (&crate::report::TaskReport, &Pending, usize),
    paths: &[String],
    round: u32,
    failed: Option<&crate::report::TaskReport>,
) -> outcome::Rerun {
    let retries = shared.on_conflict.retries();
    let mut rerun = outcome::Rerun {
        start: integration.head,
        feedback: conflict_feedback(paths, round, retries),
        resolve: None,
        repair: None,
        cause: match failed {
            Some(r) => format!(
                "its resolve round failed: {}",
                r.error
                    .as_deref()
                    .unwrap_or("")
                    .lines()
                    .next()
                    .unwrap_or("")
            ),
            None => rounds::conflict_cause(report),
        },
        thread: None,
        earlier: String::new(),
        rounds: Vec::new(),
    };
    if !shared.on_conflict.resolves() {
        return rerun;
    }
    match resolution(shared, integration, pending, i) {
        Ok(r) => {
            let before = failed
                .map(|f| resolve_again::failure_feedback(f, round - 1))
                .unwrap_or_default();
            rerun.feedback = format!("{before}{}\n(resolve round {round} of {retries})", r.text);
            rerun.resolve = Some(Arc::new(r));
            rerun.thread = threads::thread_of(report);
            rerun.earlier = threads::earlier_round(report);
        }
        // Cannot be prepared: the task runs again afresh, as with `retry`.
        Err(e) => shared.events.warn(
            Some(&report.id),
            &format!("cannot prepare the conflict for its agent, it runs again instead: {e}"),
        ),
    }
    rerun
}

/// `--on-conflict resolve`: the task's change merged onto the integration head, conflicts
/// marked, and what the agent is told.
fn resolution(
    shared: &Shared,
    integration: &integrate::Integration,
    pending: &Pending,
    i: usize,
) -> Result<resolve::Resolution, String> {
    let Pending::Ready(commit) = pending else {
        return Err("the task has no verified commit".into());
    };
    let repo = git2::Repository::open(&shared.repo_path).map_err(|e| e.to_string())?;
    let merged: Vec<(String, git2::Oid)> = integration
        .merged
        .iter()
        .map(|&(k, c)| (shared.tasks[k].id().to_string(), c))
        .collect();
    let id = shared.tasks[i].id().as_str();
    resolve::prepare(
        &repo,
        integration.head,
        *commit,
        id,
        &merged,
        &shared.merge_rules,
    )
    .map_err(|e| e.to_string())
}

/// Finish: the report, and the last event, from which report.json, state.json and every
/// output's final word come.
fn finish(
    runtime: tokio::runtime::Runtime,
    plan: &Plan,
    run: Prepared,
    integrated: Integrated,
    verifier: Option<crate::report::VerifierSummary>,
    started: Instant,
) -> RunReport {
    // A stop asked for at any point up to here leaves a resumable, interrupted run.
    let interrupted = run.stop.requested();
    let mut integrated = integrated;
    if interrupted {
        // What the stop cut off says so, in the words `fanout status` and resume use.
        for t in &mut integrated.reports {
            if crate::state::state_status(t.status, false, true) == "interrupted" {
                t.status = TaskStatus::Interrupted;
            }
        }
    }
    run.shared
        .egress_refused
        .fill_reports(&mut integrated.reports);
    let mut counts = BTreeMap::new();
    for t in &integrated.reports {
        *counts.entry(t.status.as_str().to_string()).or_insert(0) += 1;
    }
    // Accounting (issue 23): the run spent what its tasks spent.
    let usage =
        crate::usage::Usage::sum(integrated.reports.iter().filter_map(|t| t.usage.as_deref()));
    let report = RunReport {
        schema_version: 1,
        run_id: plan.run_id.to_string(),
        repo: plan.repo.workdir.display().to_string(),
        base: plan.base.to_string(),
        base_rev: plan.base_rev.clone(),
        integration_branch: merged_branch(&plan.run_id),
        integration_commit: integrated.head.to_string(),
        run_dir: plan.run_dir.display().to_string(),
        interrupted,
        interrupted_by: run.stop.reason(),
        sandbox: run.sandbox_summary,
        workspace: Some(WorkspaceSummary {
            reused: run.shared.workspaces.pool.reused(),
            ..run.shared.workspaces.summary.clone()
        }),
        verifier,
        duration_ms: started.elapsed().as_millis() as u64,
        counts,
        tasks: integrated.reports,
        warnings: run.warnings,
        output_failures: Vec::new(),
        integration: integrated.gate,
        usage: (!usage.is_empty()).then_some(usage),
    };
    // Shared with the outputs, not copied: a copy of 10 000 task reports is tens of megabytes.
    let report = std::sync::Arc::new(report);
    run.events.emit(EventKind::RunEnded {
        report: report.clone(),
    });
    drop(run.events);
    drop(run.shared);
    let failures = runtime.block_on(run.dispatcher).unwrap_or_default();
    // Every output has ended with the dispatcher, so this is the only holder left.
    let mut report = std::sync::Arc::try_unwrap(report).unwrap_or_else(|r| (*r).clone());
    report.output_failures = failures.iter().map(|f| f.to_string()).collect();
    // Blocking work abandoned by a second signal (a checkout) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    // Then the guards: no process of the run is left, the gc lock is given back.
    report
}

/// Stops the run's processes ([`crate::process::stop_under`] its folder) when dropped; other
/// runs of the same process (`fanout mcp`) keep theirs.
struct StopAllOnDrop(PathBuf);

impl Drop for StopAllOnDrop {
    fn drop(&mut self) {
        crate::process::stop_under(&self.0, crate::agent::STOP_GRACE);
        // Lowers in memory (an interrupted run ends here with its lowers in place) must not
        // hold the machine's memory until `fanout clean`; no kept workspace needs them.
        crate::git::memory_lower::remove_run_lowers(&self.0);
    }
}
