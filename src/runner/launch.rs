//! How a task's processes are launched: the sandbox policy (writable folders, network,
//! strict reads), the environment, the program.

use std::path::{Path, PathBuf};

use super::paths::Paths;
use super::shared::Shared;
use crate::agent::{self};
use crate::plan::{agent_cwd, PlannedTask};
use crate::process::SpawnSpec;
use crate::sandbox::{Policy, ReadAccess};

/// The sandboxed process settings every process of this task uses: the launch the plan
/// decided, with the task's folders (worktree, scratch, overlay, cache mounts) and what they
/// give to the environment.
pub(super) fn spawn_spec(
    shared: &Shared,
    task: &PlannedTask,
    paths: &Paths,
    task_env: &crate::taskenv::TaskEnv,
    egress: Option<crate::sandbox::EgressLink>,
) -> SpawnSpec {
    let launch = &task.launch;
    let read = if launch.read_strict {
        let mut readable = repository_readable(shared, &paths.wt_name);
        readable.extend(launch.program_dirs.iter().cloned());
        ReadAccess::Strict { readable }
    } else {
        ReadAccess::All
    };
    let policy = Policy {
        enforce: launch.enforce,
        writable: [paths.worktree.clone(), paths.scratch.clone()]
            .into_iter()
            .chain(task_env.writable.iter().cloned())
            .collect(),
        read,
        net: launch.net.clone(),
        min_abi: launch.min_abi,
        run_as: launch.run_as,
        overlay: paths.overlay.as_ref().map(|l| l.spec.clone()),
        caches: task_env.caches.clone(),
        isolate_net: launch.isolate_net,
        egress: egress.clone(),
        hide: Vec::new(),
    };
    let mut env = agent::base_env(task.id(), &paths.worktree, &paths.scratch);
    env.insert("FANOUT_RUN_ID".into(), shared.run_id.to_string());
    if let Some(k) = paths.candidate {
        // Candidates: which candidate of its task the agent is.
        env.insert("FANOUT_CANDIDATE".into(), k.to_string());
    }
    env.extend(task_env.env.clone());
    if launch.run_as.is_some() {
        dropped_root_env(&mut env, &paths.scratch);
    }
    if egress.is_some() {
        super::egress::proxy_env(&mut env);
    }
    env.extend(launch.env.clone());
    // Nothing else of fanout's environment: its tokens are not the agent's.
    let mut env_remove = crate::plan::passed_env::removed(&launch.env_pass);
    env_remove.retain(|k| !env.contains_key(k));
    SpawnSpec {
        self_exe: shared.options.self_exe.clone(),
        policy,
        program: launch.program.clone(),
        args: launch.args.clone(),
        cwd: agent_cwd(&task.profile, &paths.worktree),
        env,
        env_remove,
        stderr_log: paths.stderr_log.clone(),
        status_file: paths.status_file.clone(),
    }
}

/// Under `--read strict`, what a sandboxed process in a checkout registered as `wt_name` may
/// read of the repository: all of it but fanout's folder (other tasks' and runs' workspaces,
/// logs) and git's folders of other worktrees; its own worktree's git folder.
pub(super) fn repository_readable(shared: &Shared, wt_name: &str) -> Vec<PathBuf> {
    let common = &shared.common_dir;
    let hidden = [common.join("fanout"), common.join("worktrees")];
    let mut readable = crate::sandbox::readable_except(&shared.workdir, &hidden);
    if !common.starts_with(&shared.workdir) {
        readable.extend(crate::sandbox::readable_except(common, &hidden));
    }
    let own = crate::git::worktree::admin_dir(common, wt_name);
    if own.is_dir() {
        readable.push(own);
    }
    readable
}

/// Agents that fanout (root) starts as another uid: `HOME` in scratch (root's is not theirs),
/// and git may use the worktree although its git folder belongs to root.
pub(crate) fn dropped_root_env(
    env: &mut std::collections::BTreeMap<String, String>,
    scratch: &Path,
) {
    env.insert("HOME".into(), scratch.join("home").display().to_string());
    if std::env::var_os("GIT_CONFIG_COUNT").is_none() {
        env.insert("GIT_CONFIG_COUNT".into(), "1".into());
        env.insert("GIT_CONFIG_KEY_0".into(), "safe.directory".into());
        env.insert("GIT_CONFIG_VALUE_0".into(), "*".into());
    }
}

pub(crate) use crate::which::program_dirs;

/// What a sandboxed command of the run in a checkout of its own (registered as `wt_name`)
/// may read: everything, or under `--read strict` the repository as [`repository_readable`]
/// says and the install folders of `program`.
pub(super) fn checkout_read(shared: &Shared, wt_name: &str, program: Option<&str>) -> ReadAccess {
    if !shared.options.sandbox.read_strict {
        return ReadAccess::All;
    }
    let mut readable = repository_readable(shared, wt_name);
    if let Some(program) = program {
        readable.extend(program_dirs(program));
    }
    ReadAccess::Strict { readable }
}

/// The policy of such a command: the run's sandbox settings, TCP 443 (or what `--net` says),
/// its own network namespace under `--net isolated` when `isolate`, `writable`, `read`, as
/// `run_as`; no overlay, cache mounts or proxy link (the caller adds what it has).
pub(super) fn checkout_policy(
    shared: &Shared,
    writable: Vec<PathBuf>,
    read: ReadAccess,
    run_as: Option<crate::sandbox::RunAs>,
    isolate: bool,
) -> Policy {
    let sb = &shared.options.sandbox;
    Policy {
        enforce: sb.enabled,
        writable,
        read,
        net: sb.net.landlock(vec![443]),
        min_abi: sb.min_abi,
        run_as,
        overlay: None,
        caches: None,
        isolate_net: isolate && sb.net.isolates(sb.enabled),
        egress: None,
        hide: Vec::new(),
    }
}

/// A sandboxed command of the run in a checkout of its own (the integration gate, a shared
/// setup, the caches fill): `policy` and `env` as given, the program set by the caller, its
/// stderr and status under `label` in the run folder. `pass`: it gets fanout's environment
/// only as agents do (the allow-list and these names, `plan::passed_env`) — the gate and a
/// setup run code the agents wrote; `None`: all of it (the caches fill, the user's own
/// command on the base, before any agent).
pub(super) fn checkout_spec(
    shared: &Shared,
    checkout: &Path,
    policy: Policy,
    env: std::collections::BTreeMap<String, String>,
    label: &str,
    pass: Option<&[String]>,
) -> SpawnSpec {
    let layout = crate::run_dir::RunDir::new(&shared.run_dir);
    let mut env_remove = match pass {
        Some(names) => {
            let drops_root = policy.run_as.is_some();
            let extra = crate::plan::passed_env::extra_names(
                crate::taskfile::Protocol::Exec,
                names,
                drops_root,
            );
            crate::plan::passed_env::removed(&extra)
        }
        None => Vec::new(),
    };
    env_remove.retain(|k| !env.contains_key(k));
    SpawnSpec {
        self_exe: shared.options.self_exe.clone(),
        policy,
        program: String::new(),
        args: Vec::new(),
        cwd: checkout.to_path_buf(),
        env,
        env_remove,
        stderr_log: layout.logs().join(format!("{label}.stderr.log")),
        status_file: layout.status().join(format!("{label}.json")),
    }
}
