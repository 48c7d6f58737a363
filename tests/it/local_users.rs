//! Nothing of a run is reachable by other local users. A second local account (a throwaway uid
//! with no passwd entry, through `setpriv`) tries, while a run is alive and after it kept its
//! workspaces, to list and read the workspaces, overlay layers and lowers, scratch folders,
//! TMPDIRs and caches, to find workspace paths in the command lines of the run's processes,
//! and to run setuid files an agent planted. As root, tasks of one run run as different uids
//! (they cannot read each other's folders), and a fork bomb in one task does not make an honest
//! task fail. Each case runs in both workspace kinds, by the invoker (root in CI) and by an
//! unprivileged uid where it applies.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

/// The other local account: no passwd entry, no group, nothing of the run.
const SPY_UID: u32 = 54321;

/// `$body(runner, workspace)` by both runners in both workspace kinds.
macro_rules! all_ways {
    ($name:ident, $body:ident) => {
        mod $name {
            use $crate::support::Runner;
            #[test]
            fn overlay_as_invoker() {
                super::$body(Runner::Invoker, "overlay")
            }
            #[test]
            fn overlay_as_unprivileged() {
                super::$body(Runner::Unprivileged, "overlay")
            }
            #[test]
            fn worktree_as_invoker() {
                super::$body(Runner::Invoker, "worktree")
            }
            #[test]
            fn worktree_as_unprivileged() {
                super::$body(Runner::Unprivileged, "worktree")
            }
        }
    };
}

/// Runs `script` with `sh` as [`SPY_UID`] (only when the tests run as root: otherwise there is
/// no second account to be); returns its stdout.
fn as_spy(script: &str) -> Option<String> {
    if !is_root() {
        return None;
    }
    let out = std::process::Command::new("setpriv")
        .arg(format!("--reuid={SPY_UID}"))
        .arg(format!("--regid={SPY_UID}"))
        .args(["--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
        .args(["sh", "-c", script])
        .current_dir("/")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("setpriv runs");
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What the spy tried, one line each: `label: ALLOWED` or `label: denied`.
fn spy_attempts(targets: &[(String, PathBuf)]) -> Option<String> {
    let mut script = String::from(
        "try() { name=$1; shift; if \"$@\" >/dev/null 2>&1; then echo \"$name: ALLOWED\"; else echo \"$name: denied\"; fi; }\n",
    );
    for (label, path) in targets {
        let p = path.display();
        let cmd = if path.is_dir() {
            format!("ls '{p}'")
        } else {
            format!("cat '{p}'")
        };
        script.push_str(&format!("try '{label} ({p})' {cmd}\n"));
        if label.contains("setuid") {
            script.push_str(&format!("try 'run {label}' '{p}'\n"));
        }
    }
    as_spy(&script)
}

fn assert_all_denied(results: &str, targets: usize) {
    let lines: Vec<&str> = results.lines().filter(|l| l.contains(": ")).collect();
    assert!(lines.len() >= targets, "{results}");
    for l in &lines {
        assert!(
            l.ends_with(": denied"),
            "another user reached it: {l}\n{results}"
        );
    }
}

/// A folder every uid can read, for files the test hands to agents (e.g. its go signal).
pub(crate) fn open_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

/// Starts `fanout run` in the background as the repository's runner.
pub(crate) fn spawn_run(
    repo: &TestRepo,
    tasks: &Value,
    ws: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Child {
    let file = repo.write_tasks(tasks);
    let mut cmd = repo.fanout_command();
    cmd.args([
        "run",
        "--no-readback",
        "--jobs",
        "3",
        "--workspace",
        ws,
        "--tasks",
    ])
    .arg(&file)
    .arg("--report")
    .arg(repo.report_path())
    .args(extra)
    .arg("--repo")
    .arg(&repo.path)
    .envs(env.iter().copied())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let _ = std::fs::remove_file(repo.report_path());
    cmd.spawn().expect("fanout starts")
}

/// Waits (bounded) until a run's folder exists for which `ready` holds.
#[allow(clippy::zombie_processes)]
pub(crate) fn wait_for(
    repo: &TestRepo,
    child: &mut Child,
    ready: impl Fn(&Path) -> bool,
) -> PathBuf {
    let runs = repo.path.join(".git/fanout/runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // The run for which `ready` holds (an earlier run of the repository may be there).
        let run = std::fs::read_dir(&runs)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|r| ready(r));
        if let Some(run) = run {
            return run;
        }
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            panic!("the run did not get going: {}", wait_stderr(child));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for `child` and returns what it wrote on stderr.
fn wait_stderr(child: &mut Child) -> String {
    use std::io::Read;
    let mut s = String::new();
    if let Some(e) = child.stderr.as_mut() {
        let _ = e.read_to_string(&mut s);
    }
    let _ = child.wait();
    s
}

pub(crate) fn finish(child: &mut Child, repo: &TestRepo) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "the run did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = wait_stderr(child);
    let report: Value = std::fs::read(repo.report_path())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| panic!("no report: {err}"));
    report
}

/// The real folder a run folder's entry names (as root: a link to the temp folder).
fn real(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Everything of task `id` (index `index`) and of its run that another user must not reach.
fn run_targets(run: &Path, id: &str, index: usize, ws: &str) -> Vec<(String, PathBuf)> {
    let wt = real(&run.join("worktrees"));
    let scratch = real(&run.join("scratch"));
    let tmp = real(&run.join("tmp"));
    let mut t = vec![
        (
            "workspace root".to_string(),
            wt.parent().unwrap_or(&wt).to_path_buf(),
        ),
        ("worktrees".into(), wt.clone()),
        ("scratch folders".into(), scratch.clone()),
        ("run temp folders".into(), tmp.clone()),
        ("scratch".into(), scratch.join(id)),
        ("scratch secret".into(), scratch.join(id).join("secret")),
        (
            "scratch setuid copy".into(),
            scratch.join(id).join("suid-id"),
        ),
        ("home".into(), scratch.join(id).join("home")),
        ("TMPDIR".into(), tmp.join(index.to_string())),
        (
            "TMPDIR secret".into(),
            tmp.join(index.to_string()).join("secret"),
        ),
        (
            "TMPDIR setuid copy".into(),
            tmp.join(index.to_string()).join("suid-id"),
        ),
        ("caches".into(), real(&run.join("../../caches"))),
        ("cache".into(), real(&run.join("../../caches/pip"))),
        ("run folder".into(), run.to_path_buf()),
    ];
    if ws == "overlay" {
        let layers = wt.join(".layers");
        t.push(("layers".into(), layers.clone()));
        t.push(("upper".into(), layers.join(id).join("upper")));
        t.push((
            "upper secret".into(),
            layers.join(id).join(format!("upper/secret-{id}.txt")),
        ));
        let lowers = wt.join(".lower");
        t.push(("lowers".into(), lowers.clone()));
        for e in std::fs::read_dir(&lowers).into_iter().flatten().flatten() {
            let lower = real(&e.path());
            t.push(("lower file".into(), lower.join("src/file_00.txt")));
            t.push(("lower".into(), lower.clone()));
            if let Some(parent) = lower.parent() {
                t.push(("lower parent".into(), parent.to_path_buf()));
            }
        }
    } else {
        t.push(("worktree".into(), wt.join(id)));
        t.push((
            "worktree secret".into(),
            wt.join(id).join(format!("secret-{id}.txt")),
        ));
        t.push((
            "worktree source".into(),
            wt.join(id).join("src/file_00.txt"),
        ));
    }
    t
}

/// The agent: leaves secrets and setuid/setgid copies of `id` in its worktree, scratch and
/// TMPDIR, a world-writable folder, says it is ready, and waits (bounded) for the test's go.
const PLANT: &str = r#"
echo "secret of $FANOUT_TASK_ID" > "secret-$FANOUT_TASK_ID.txt"
for d in "$FANOUT_SCRATCH" "$TMPDIR"; do
  echo "secret of $FANOUT_TASK_ID" > "$d/secret"
  cp "$(command -v id)" "$d/suid-id"; chmod 4755 "$d/suid-id"
  cp "$(command -v id)" "$d/sgid-id"; chmod 2755 "$d/sgid-id"
  mkdir -p "$d/open"; chmod 1777 "$d/open"; echo x > "$d/open/w"; chmod 666 "$d/open/w"
done
id -u > "uid-$FANOUT_TASK_ID.txt"
touch ready
i=0; while [ ! -e "$GO" ] && [ $i -lt 1200 ]; do i=$((i+1)); sleep 0.05; done
rm ready
"#;

/// Run by the task's verify command, i.e. after the workspace was handed over again: no
/// setuid, setgid or world-writable mode is left.
const STRIPPED: &str = r#"for d in "$FANOUT_SCRATCH" "$TMPDIR"; do [ "$(stat -c %a "$d/suid-id")" = 755 ] && [ "$(stat -c %a "$d/sgid-id")" = 755 ] && [ "$(stat -c %a "$d/open")" = 1775 ] && [ "$(stat -c %a "$d/open/w")" = 664 ] || exit 1; done"#;

fn planting_tasks(go: &Path, verify: bool) -> Value {
    let agent = json!({"protocol": "exec", "command": "sh", "args": ["-c", PLANT],
                       "env": {"GO": go.to_str().expect("utf-8")}});
    let task = |id: &str| {
        let mut t = json!({"id": id, "prompt": "plant", "agent": "sh"});
        if verify {
            t["verify"] = json!(STRIPPED);
        }
        t
    };
    // A shared cache: the caches folder must be closed to others too.
    json!({"agents": {"sh": agent}, "caches": ["pip"], "tasks": [task("a"), task("b")]})
}

/// Every command line of the machine, as the spy reads them.
fn command_lines() -> Option<String> {
    as_spy("for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < \"$f\" 2>/dev/null; echo; done")
}

fn nothing_reachable_while_running(runner: Runner, ws: &str) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let before = repo.snapshot();
    let go_dir = open_dir();
    let go = go_dir.path().join("go");
    // The verify command checks the bits were stripped at the hand-over before it (as root).
    let tasks = planting_tasks(&go, runner == Runner::Invoker && is_root());
    let mut child = spawn_run(&repo, &tasks, ws, &[], &[]);
    let run = wait_for(&repo, &mut child, |run| {
        ["a", "b"].iter().all(|t| workspace_has(run, t, "ready"))
    });
    let mut targets = run_targets(&run, "a", 0, ws);
    targets.extend(run_targets(&run, "b", 1, ws));
    if is_root() {
        for (label, p) in &targets {
            assert!(p.exists(), "{label}: {} does not exist", p.display());
        }
    }
    let seen = spy_attempts(&targets);
    // Workspace paths in any command line (the policy, the status file, the folders).
    let lines = command_lines();
    let supervisors_env = as_spy(
        "for p in /proc/[0-9]*; do [ \"$(stat -c %u $p 2>/dev/null)\" = 54321 ] && continue; if tr '\\0' ' ' < $p/cmdline 2>/dev/null | grep -q sandbox-exec; then if cat $p/environ >/dev/null 2>&1; then echo \"environ of $p: ALLOWED\"; else echo \"environ of $p: denied\"; fi; fi; done",
    );
    std::fs::write(&go, "").expect("go");
    let report = finish(&mut child, &repo);
    for (id, status) in statuses(&report) {
        assert_eq!(status, "merged", "{id}: {}", task(&report, &id));
    }
    repo.assert_left_as(&before);
    let Some(seen) = seen else {
        return; // not root: there is no other account to try with
    };
    assert_all_denied(&seen, targets.len());
    let lines = lines.expect("as root");
    let wt = real(&run.join("worktrees"));
    let tmp = real(&run.join("tmp"));
    for needle in [
        wt.parent().unwrap_or(&wt).display().to_string(),
        tmp.display().to_string(),
        run.display().to_string(),
    ] {
        assert!(
            !lines.lines().any(|l| l.contains(&needle)),
            "{needle} in a command line:\n{}",
            lines
                .lines()
                .filter(|l| l.contains(&needle))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let env = supervisors_env.expect("as root");
    assert!(env.contains("environ of"), "no supervisor seen: {lines}");
    assert_all_denied(&env, 2);
}
all_ways!(
    nothing_of_a_live_run_is_reachable,
    nothing_reachable_while_running
);

/// With `--keep-worktrees` every workspace stays; without it, a workspace stays when its work
/// cannot be committed (here: a FIFO).
fn kept_workspaces_are_closed(runner: Runner, ws: &str, keep_flag: bool) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let go_dir = open_dir();
    let go = go_dir.path().join("go");
    std::fs::write(&go, "").expect("go");
    // A setuid copy and a world-writable folder in the worktree too.
    let mut tasks = planting_tasks(&go, false);
    let mut script = format!(
        "{PLANT}\ncp \"$(command -v id)\" suid-wt; chmod 4755 suid-wt; mkdir -p pub; chmod 777 pub"
    );
    if !keep_flag {
        script.push_str("; mkfifo pipe");
    }
    tasks["agents"]["sh"]["args"][1] = json!(script);
    let mut args = vec!["--no-readback", "--jobs", "2", "--workspace", ws];
    if keep_flag {
        args.push("--keep-worktrees");
    }
    let (out, report) = repo.run(&repo.write_tasks(&tasks), &args);
    assert_ne!(report, Value::Null, "{}", stderr(&out));
    let run = repo
        .path
        .join(".git/fanout/runs")
        .join(report["run_id"].as_str().expect("run id"));
    let mut targets = Vec::new();
    for (index, id) in ["a", "b"].iter().enumerate() {
        targets.extend(run_targets(&run, id, index, ws));
        let kept = if ws == "overlay" {
            real(&run.join("worktrees"))
                .join(".layers")
                .join(id)
                .join("upper")
        } else {
            real(&run.join("worktrees")).join(id)
        };
        if !keep_flag {
            let t = task(&report, id);
            assert_eq!(t["status"], "failed", "{t:#}");
            assert_eq!(
                t["workspace"].as_str().map(|w| real(Path::new(w))),
                Some(real(&kept)),
                "{t:#}"
            );
        }
        assert!(kept.join("suid-wt").is_file(), "{}", kept.display());
        targets.push(("kept setuid copy".into(), kept.join("suid-wt")));
        let scratch = real(&run.join("scratch")).join(id);
        let tmp = real(&run.join("tmp")).join(index.to_string());
        for dir in [kept, scratch, tmp] {
            if dir.exists() {
                assert_modes_safe(&dir, runner == Runner::Invoker && is_root());
            }
        }
    }
    // Lowers go with the run (or stay on disk); what is left must be closed.
    targets.retain(|(_, p)| p.exists());
    if let Some(seen) = spy_attempts(&targets) {
        assert_all_denied(&seen, targets.len());
    }
    let out = repo.fanout(&["clean", report["run_id"].as_str().expect("id"), "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn kept_with_the_flag(runner: Runner, ws: &str) {
    kept_workspaces_are_closed(runner, ws, true)
}
all_ways!(workspaces_kept_by_the_flag_are_closed, kept_with_the_flag);

fn kept_after_a_failure(runner: Runner, ws: &str) {
    kept_workspaces_are_closed(runner, ws, false)
}
all_ways!(
    workspaces_kept_after_a_failure_are_closed,
    kept_after_a_failure
);

/// No setuid, setgid or write-for-others bit under `dir`, which only its owner reaches; as
/// root, everything is root's again.
fn assert_modes_safe(dir: &Path, root_owned: bool) {
    let top = std::fs::symlink_metadata(dir).expect("kept folder");
    assert_eq!(top.mode() & 0o077, 0, "{} is open to others", dir.display());
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read kept folder").flatten() {
            let m = std::fs::symlink_metadata(e.path()).expect("meta");
            if m.file_type().is_symlink() {
                continue;
            }
            assert_eq!(
                m.mode() & 0o6002,
                0,
                "{}: {:o}",
                e.path().display(),
                m.mode()
            );
            if root_owned {
                assert_eq!(
                    m.uid(),
                    0,
                    "{} still belongs to uid {}",
                    e.path().display(),
                    m.uid()
                );
            }
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
}

// ---------------------------------------------------------------- tasks apart (as root)

/// Each task leaves secrets, says it is ready, waits for the test's go (given once both are
/// ready), then tries to read the other's.
const PEEK: &str = r#"
me=$FANOUT_TASK_ID; other=$OTHER
wt_root=$(dirname "$FANOUT_WORKTREE"); scratch_root=$(dirname "$FANOUT_SCRATCH"); tmp_root=$(dirname "$TMPDIR")
echo "secret of $me" > secret-$me.txt
echo "scratch secret of $me" > "$FANOUT_SCRATCH/secret"
echo "tmp secret of $me" > "$TMPDIR/secret"
touch ready
i=0; while [ ! -e "$GO" ] && [ $i -lt 1200 ]; do i=$((i+1)); sleep 0.05; done
rm ready
try() { name=$1; shift; if "$@" >/dev/null 2>&1; then echo "$name: ALLOWED"; else echo "$name: denied"; fi; }
{
  try "other worktree file" cat "$wt_root/$other/secret-$other.txt"
  try "other worktree list" ls "$wt_root/$other"
  try "other scratch file" cat "$scratch_root/$other/secret"
  try "other scratch list" ls "$scratch_root/$other"
  try "other TMPDIR file" cat "$tmp_root/$OTHER_INDEX/secret"
  try "other TMPDIR list" ls "$tmp_root/$OTHER_INDEX"
  try "other home" ls "$scratch_root/$other/home"
} > peek-$me.txt
id -u > uid-$me.txt
"#;

fn tasks_apart(ws: &str) {
    if !is_root() {
        return; // one uid for every task: --read strict keeps them apart (escape.rs)
    }
    let repo = TestRepo::with_files(1);
    let go_dir = open_dir();
    let go = go_dir.path().join("go");
    let agent = |other: &str, index: &str| {
        json!({"protocol": "exec", "command": "sh", "args": ["-c", PEEK],
               "env": {"OTHER": other, "OTHER_INDEX": index, "GO": go.to_str().expect("utf-8")}})
    };
    // The integration gate runs the merged code: a uid of its own too.
    let tasks = json!({"agents": {"a": agent("b", "1"), "b": agent("a", "0")},
                       "integrate": {"verify": "true"},
                       "tasks": [{"id": "a", "prompt": "peek", "agent": "a"},
                                 {"id": "b", "prompt": "peek", "agent": "b"}]});
    let mut child = spawn_run(&repo, &tasks, ws, &[], &[]);
    let run = wait_for(&repo, &mut child, |run| {
        ["a", "b"].iter().all(|t| workspace_has(run, t, "ready"))
    });
    std::fs::write(&go, "").expect("go");
    let report = finish(&mut child, &repo);
    for (id, status) in statuses(&report) {
        assert_eq!(status, "merged", "{id}: {}", task(&report, &id));
    }
    let gate: Value = serde_json::from_slice(
        &std::fs::read(run.join("status/integration.json")).expect("the gate's status"),
    )
    .expect("json");
    let gate_uid = gate["run_as"]["uid"].as_u64().expect("gate uid");
    let tree = repo.tree_files(report["integration_branch"].as_str().expect("branch"));
    let text = |p: &str| String::from_utf8_lossy(&tree[p]).into_owned();
    let (ua, ub) = (text("uid-a.txt"), text("uid-b.txt"));
    assert_ne!(ua, ub, "both tasks ran as one uid");
    for u in [&ua, &ub] {
        let uid: u32 = u.trim().parse().expect("uid");
        assert_ne!(u64::from(uid), gate_uid, "a task ran as the gate's uid");
        assert!(uid >= 1 << 30, "not a dedicated uid: {uid}");
        assert!(nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .expect("lookup")
            .is_none());
    }
    for me in ["a", "b"] {
        let peek = text(&format!("peek-{me}.txt"));
        assert_eq!(peek.lines().count(), 7, "{peek}");
        assert!(!peek.contains("ALLOWED"), "{me}: {peek}");
    }
    assert_eq!(report["sandbox"]["root"], true);
    assert!(
        report["sandbox"]["agent_user"]
            .as_str()
            .is_some_and(|s| s.contains("one dedicated uid per task")),
        "{}",
        report["sandbox"]
    );
}

#[test]
fn tasks_of_a_run_cannot_read_each_other_overlay() {
    tasks_apart("overlay")
}

#[test]
fn tasks_of_a_run_cannot_read_each_other_worktree() {
    tasks_apart("worktree")
}

// ---------------------------------------------------------------- fork bomb (as root)

/// Forks until the kernel says no (bounded: 2000 processes, 20 s), holds its children while the
/// honest task works, then ends.
const BOMB: &str = r#"
import errno, os, time
n, result, deadline = 0, None, time.time() + 20
while result is None:
    if time.time() > deadline:
        result = "timeout after %d" % n
        break
    try:
        pid = os.fork()
    except OSError as e:
        result = ("EAGAIN after %d" if e.errno == errno.EAGAIN else "error after %d") % n
        break
    if pid == 0:
        time.sleep(6)
        os._exit(0)
    n += 1
    if n >= 2000:
        result = "no limit after 2000"
open("bomb.txt", "w").write(result + "\n")
time.sleep(5)
"#;

/// Waits for the go (the bomb holds its processes), then starts 30 processes.
const HONEST: &str = r#"
i=0; while [ ! -e "$GO" ] && [ $i -lt 1200 ]; do i=$((i+1)); sleep 0.05; done
n=0; while [ $n -lt 30 ]; do sh -c 'true' || exit 1; n=$((n+1)); done
echo "$n processes" > honest.txt
"#;

fn fork_bomb(ws: &str) {
    if !is_root() {
        return; // the limit is per dedicated uid, which only root can give
    }
    let repo = TestRepo::with_files(1);
    let go_dir = open_dir();
    let go = go_dir.path().join("go");
    let tasks = json!({
        "agents": {
            "bomb": {"protocol": "exec", "command": "python3", "args": ["-c", BOMB]},
            "honest": {"protocol": "exec", "command": "sh", "args": ["-c", HONEST],
                       "env": {"GO": go.to_str().expect("utf-8")}}
        },
        "tasks": [{"id": "bomb", "prompt": "fork", "agent": "bomb"},
                  {"id": "honest", "prompt": "work", "agent": "honest"}]
    });
    let mut child = spawn_run(&repo, &tasks, ws, &[], &[("FANOUT_MAX_PROCS", "64")]);
    wait_for(&repo, &mut child, |run| {
        workspace_has(run, "bomb", "bomb.txt")
    });
    std::fs::write(&go, "").expect("go");
    let report = finish(&mut child, &repo);
    for (id, status) in statuses(&report) {
        assert_eq!(status, "merged", "{id}: {}", task(&report, &id));
    }
    let tree = repo.tree_files(report["integration_branch"].as_str().expect("branch"));
    let bomb = String::from_utf8_lossy(&tree["bomb.txt"]).into_owned();
    let n: u32 = bomb
        .strip_prefix("EAGAIN after ")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("the bomb was not stopped by the limit: {bomb}"));
    assert!(n < 64, "{bomb}");
    assert_eq!(
        String::from_utf8_lossy(&tree["honest.txt"]).trim(),
        "30 processes"
    );
}

#[test]
fn a_fork_bomb_does_not_starve_other_tasks_overlay() {
    fork_bomb("overlay")
}

#[test]
fn a_fork_bomb_does_not_starve_other_tasks_worktree() {
    fork_bomb("worktree")
}
