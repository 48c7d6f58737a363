//! "Nothing escapes": exec agents try device nodes, root's powers and reading other tasks'
//! work, each run both by the invoker (root in CI: each task then runs as its own dedicated uid) and by an
//! unprivileged uid. Agents write what they observed into their worktree; the tests read it
//! from the integration branch and check the user's checkout is left as it was.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::{json, Value};

use crate::both_ways;
use crate::support::*;

/// Runs the task file as the repository's runner; returns the report after checking the run
/// succeeded and left the checkout, worktrees and processes as they were.
fn run_checked(repo: &TestRepo, tasks: &Value, extra: &[&str]) -> Value {
    let before = repo.snapshot();
    let file = repo.write_tasks(tasks);
    let mut args = vec!["--no-readback", "--jobs", "2"];
    args.extend_from_slice(extra);
    let (out, report) = repo.run(&file, &args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for (id, status) in statuses(&report) {
        assert_eq!(status, "merged", "{id}: {}", task(&report, &id));
    }
    repo.assert_left_as(&before);
    report
}

/// The text of `path` on the run's integration branch.
fn merged_file(repo: &TestRepo, report: &Value, path: &str) -> String {
    let tree = repo.tree_files(report["integration_branch"].as_str().expect("branch"));
    String::from_utf8_lossy(
        tree.get(path)
            .unwrap_or_else(|| panic!("no {path} in {tree:?}")),
    )
    .into_owned()
}

fn sh_agent(script: &str) -> Value {
    json!({"protocol": "exec", "command": "sh", "args": ["-c", script]})
}

/// Lines `name: ALLOWED|denied …` from an agent's result file; every one must be a denial.
fn assert_all_denied(results: &str, expected: usize) {
    let lines: Vec<&str> = results.lines().filter(|l| l.contains(": ")).collect();
    assert_eq!(lines.len(), expected, "{results}");
    for l in &lines {
        assert!(l.contains(": denied"), "escaped: {l}\n{results}");
    }
}

// ---------------------------------------------------------------- device nodes

const DEVICES: &str = r#"
try() { name=$1; shift; if "$@" 2>/dev/null; then echo "$name: ALLOWED"; else echo "$name: denied"; fi; }
for where in worktree tmp; do
  dir=.; [ $where = tmp ] && dir=$TMPDIR
  try "$where block 8:0 (disk)" mknod "$dir/sda" b 8 0
  try "$where block 7:0 (loop)" mknod "$dir/loop0" b 7 0
  try "$where block 259:0 (nvme)" mknod "$dir/nvme" b 259 0
  try "$where char 1:1 (mem)" mknod "$dir/mem" c 1 1
  try "$where char 1:3 (null)" mknod "$dir/null" c 1 3
  try "$where char 4:0 (tty)" mknod "$dir/tty0" c 4 0
  try "$where char 10:200 (tun)" mknod "$dir/tun" c 10 200
done
try "python mknod block" python3 -c 'import os, stat; os.mknod("pyblk", stat.S_IFBLK | 0o600, os.makedev(8, 0))'
{ try "mkfifo" mkfifo fifo; } > fifo.txt
rm -f fifo
ls -l > listing.txt
"#;

fn device_nodes(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let script = format!("{{ {DEVICES} }} > devices.txt");
    let report = run_checked(
        &repo,
        &json!({"agents": {"sh": sh_agent(&script)},
                "tasks": [{"id": "dev", "prompt": "make devices", "agent": "sh"}]}),
        &[],
    );
    let results = merged_file(&repo, &report, "devices.txt");
    assert_all_denied(&results, 15);
    // FIFOs are not devices: the agent's own tools may use them.
    assert_eq!(
        merged_file(&repo, &report, "fifo.txt").trim(),
        "mkfifo: ALLOWED"
    );
    let listing = merged_file(&repo, &report, "listing.txt");
    assert!(
        !listing
            .lines()
            .any(|l| l.starts_with('b') || l.starts_with('c')),
        "{listing}"
    );
}
both_ways!(device_nodes_cannot_be_made, device_nodes);

// ---------------------------------------------------------------- root's powers

const ROOT_POWERS: &str = r#"
import ctypes, os, json, subprocess
E = os.environ
res = {}
def attempt(name, f):
    try:
        f(); res[name] = "ALLOWED"
    except OSError as e:
        res[name] = "denied %d" % e.errno
victim = E["VICTIM"]
attempt("chmod_outside", lambda: os.chmod(victim, 0o666))
attempt("chown_outside", lambda: os.chown(victim, os.getuid(), os.getgid()))
attempt("write_outside", lambda: open(victim, "a").write("x"))
attempt("create_in_etc", lambda: open("/etc/fanout-escape-%s" % E["FANOUT_TASK_ID"], "w").write("x"))
attempt("append_etc_passwd_copy", lambda: open(E["PASSWD_COPY"], "a").write("evil::0:0::/:/bin/sh\n"))
attempt("chroot", lambda: os.chroot("."))
libc = ctypes.CDLL(None, use_errno=True)
def mount():
    os.mkdir("mnt")
    if libc.mount(b"none", b"mnt", b"tmpfs", 0, None) != 0:
        raise OSError(ctypes.get_errno(), "mount")
attempt("mount_tmpfs", mount)
def raise_ambient():
    # PR_CAP_AMBIENT (47), PR_CAP_AMBIENT_RAISE (2), CAP_DAC_OVERRIDE (1)
    if libc.prctl(47, 2, 1, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl")
attempt("raise_ambient_cap", raise_ambient)
attempt("setuid_0", lambda: os.setuid(0))
attempt("setgid_0", lambda: os.setgid(0))
attempt("setgroups_0", lambda: os.setgroups([0]))
def setuid_binary():
    out = subprocess.run([E["SUID_ID"], "-u"], capture_output=True, text=True).stdout.strip()
    if out == "0":
        return
    raise OSError(1, "the setuid bit was ignored: euid %s" % out)
if os.path.exists(E["SUID_ID"]):
    attempt("setuid_root_binary", setuid_binary)
else:
    res["setuid_root_binary"] = "denied (no copy: the tests do not run as root)"
caps = {l.split(":")[0]: l.split(":")[1].strip() for l in open("/proc/self/status") if l.startswith("Cap")}
json.dump({"res": res, "caps": caps, "uid": os.getuid(), "euid": os.geteuid(), "groups": os.getgroups()},
          open("powers.json", "w"), indent=1, sort_keys=True)
"#;

fn root_powers(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    // Outside the repository's temp folder, which the unprivileged pass hands to its uid: these
    // files stay the invoker's (root's in CI).
    let others = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(others.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let shown = others.path().to_path_buf();
    let victim = shown.join("victim.txt");
    std::fs::write(&victim, "victim\n").expect("write");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let passwd = shown.join("passwd");
    std::fs::write(&passwd, "root:x:0:0::/root:/bin/sh\n").expect("write");
    // A setuid-root copy of `id`: made only when the tests run as root.
    let suid = shown.join("suid-id");
    if is_root() {
        std::fs::copy("/usr/bin/id", &suid).expect("copy id");
        std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).expect("chmod");
    }
    let file = |p: &Path| p.to_str().expect("utf-8").to_string();
    let report = run_checked(
        &repo,
        &json!({"agents": {"py": {"protocol": "exec", "command": "python3", "args": ["-c", ROOT_POWERS],
                    "env": {"VICTIM": file(&victim), "PASSWD_COPY": file(&passwd), "SUID_ID": file(&suid)}}},
                "tasks": [{"id": "powers", "prompt": "be root", "agent": "py"}]}),
        &[],
    );
    // The unprivileged pass handed the temp folder to its uid: the files outside are its own
    // then, and Landlock alone must keep them.
    let seen: Value =
        serde_json::from_str(&merged_file(&repo, &report, "powers.json")).expect("json");
    for (name, result) in seen["res"].as_object().expect("results") {
        // Landlock ABI 7 does not cover chmod/chown: only ownership keeps a file that is not
        // the agent's. When the tests are not root, the victim is the agent's own file.
        if !is_root() && name.starts_with("ch") && name != "chroot" {
            continue;
        }
        assert!(
            result.as_str().unwrap_or("").starts_with("denied"),
            "{name}: {result}\n{seen}"
        );
    }
    assert_ne!(seen["uid"], 0, "{seen}");
    assert_ne!(seen["euid"], 0, "{seen}");
    assert!(
        !seen["groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|x| x == 0)),
        "{seen}"
    );
    for set in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
        assert_eq!(seen["caps"][set], "0000000000000000", "{set}: {seen}");
    }
    if is_root() {
        // fanout as root emptied the bounding set too; setpriv did for the unprivileged pass.
        assert_eq!(seen["caps"]["CapBnd"], "0000000000000000", "{seen}");
    }
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "victim\n"
    );
    if is_root() {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&victim).expect("victim");
        assert_eq!(meta.permissions().mode() & 0o7777, 0o644);
        assert_eq!(meta.uid(), 0);
    }
    assert_eq!(
        std::fs::read_to_string(&passwd).expect("passwd"),
        "root:x:0:0::/root:/bin/sh\n"
    );
    assert!(!Path::new("/etc/fanout-escape-powers").exists());
    if runner == Runner::Invoker && is_root() {
        // The report and the first line say that fanout ran as root and whom agents ran as.
        assert_eq!(report["sandbox"]["root"], true, "{}", report["sandbox"]);
        // Its own uid from the run's block of dedicated uids, which no account has.
        let who = report["sandbox"]["agent_user"].as_str().unwrap_or("");
        assert!(who.contains("one dedicated uid per task"), "{who}");
        let uid = task(&report, "powers")["agent"]["sandbox"]["run_as"]["uid"]
            .as_u64()
            .expect("run_as");
        assert!(uid >= 1 << 30, "{uid}");
        assert_eq!(seen["uid"], uid, "{seen}");
    } else {
        assert!(
            report["sandbox"]["agent_user"].is_null(),
            "{}",
            report["sandbox"]
        );
    }
}
both_ways!(root_powers_are_gone, root_powers);

// ---------------------------------------------------------------- strict reads

/// Each task leaves a secret in its worktree and scratch, says so, waits (bounded) for the
/// test's go (given once both secrets exist: as root each task has its own uid and cannot even
/// see the other's files), then tries to read them, and the run folders of the repository.
const PEEK: &str = r#"
me=$FANOUT_TASK_ID; other=$OTHER
wt_root=$(dirname "$FANOUT_WORKTREE"); scratch_root=$(dirname "$FANOUT_SCRATCH")
echo "secret of $me" > secret-$me.txt
echo "scratch secret of $me" > "$FANOUT_SCRATCH/tmp/secret"
echo "tmp secret of $me" > "$TMPDIR/secret"
touch ready-$me.txt
i=0
while ! test -e "$GO"; do
  i=$((i+1)); [ $i -gt 1200 ] && { echo "timeout: never saw $other" > peek-$me.txt; exit 0; }
  sleep 0.05
done
try() { name=$1; shift; if "$@" >/dev/null 2>&1; then echo "$name: ALLOWED"; else echo "$name: denied"; fi; }
{
  try "other worktree file" cat "$wt_root/$other/secret-$other.txt"
  try "other worktree list" ls "$wt_root/$other"
  try "other worktree tracked file" cat "$wt_root/$other/src/file_00.txt"
  try "other scratch file" cat "$scratch_root/$other/tmp/secret"
  try "other scratch list" ls "$scratch_root/$other/tmp"
  try "list worktrees" ls "$wt_root"
  try "the run's temp folders" ls "$(dirname "$TMPDIR")"
  try "fanout folder" ls "$MAIN/.git/fanout/runs"
  try "earlier run report" cat "$MAIN/.git/fanout/runs/$EARLIER/report.json"
  try "earlier run log" cat "$MAIN/.git/fanout/runs/$EARLIER/state.json"
} > peek-$me.txt
# Neither ends (and has its workspace removed) before the other has peeked too.
touch peeked-$me.txt
j=0
while ! test -e "$GO2" && [ $j -lt 1200 ]; do j=$((j+1)); sleep 0.05; done
# Its own work stays readable.
cat secret-$me.txt "$FANOUT_SCRATCH/tmp/secret" "$TMPDIR/secret" > own-$me.txt
"#;

fn strict_reads(runner: Runner) {
    // Worktrees: the agents meet at each other's worktree paths. (In an overlay another
    // task's view exists only in that task's mount namespace: its path is an empty folder.)
    in_workspace("worktree", || strict_reads_in_worktrees(runner));
}

fn strict_reads_in_worktrees(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    // An earlier run whose folder must stay unreadable.
    let earlier = run_checked(
        &repo,
        &json!({"agents": {"sh": sh_agent("echo earlier > earlier.txt")},
                "tasks": [{"id": "e", "prompt": "x", "agent": "sh"}]}),
        &[],
    );
    let earlier_id = earlier["run_id"].as_str().expect("run id").to_string();
    let signals = crate::local_users::open_dir();
    let (go, go2) = (signals.path().join("go"), signals.path().join("go2"));
    let agent = |other: &str| {
        json!({"protocol": "exec", "command": "sh", "args": ["-c", PEEK],
               "env": {"OTHER": other, "MAIN": repo.path.to_str().expect("utf-8"),
                       "EARLIER": earlier_id, "GO": go.to_str().expect("utf-8"),
                       "GO2": go2.to_str().expect("utf-8")}})
    };
    let before = repo.snapshot();
    let tasks = json!({"agents": {"a": agent("b"), "b": agent("a")},
                       "tasks": [{"id": "a", "prompt": "peek", "agent": "a"},
                                 {"id": "b", "prompt": "peek", "agent": "b"}]});
    let mut child =
        crate::local_users::spawn_run(&repo, &tasks, "worktree", &["--read", "strict"], &[]);
    // The test, not the agents, sees both tasks' files: it says when both are there, and
    // when both have peeked.
    let both = |run: &Path, file: &str| {
        ["a", "b"]
            .iter()
            .all(|t| workspace_has(run, t, &format!("{file}-{t}.txt")))
    };
    crate::local_users::wait_for(&repo, &mut child, |run| both(run, "ready"));
    std::fs::write(&go, "").expect("go");
    crate::local_users::wait_for(&repo, &mut child, |run| both(run, "peeked"));
    std::fs::write(&go2, "").expect("go2");
    let report = crate::local_users::finish(&mut child, &repo);
    for (id, status) in statuses(&report) {
        assert_eq!(status, "merged", "{id}: {}", task(&report, &id));
    }
    repo.assert_left_as(&before);
    for (me, other) in [("a", "b"), ("b", "a")] {
        let peek = merged_file(&repo, &report, &format!("peek-{me}.txt"));
        assert!(!peek.starts_with("timeout"), "{me}: {peek}");
        assert_all_denied(&peek, 10);
        assert!(!peek.contains(&format!("secret of {other}")));
        assert_eq!(
            merged_file(&repo, &report, &format!("own-{me}.txt")),
            format!("secret of {me}\nscratch secret of {me}\ntmp secret of {me}\n")
        );
    }
}
both_ways!(strict_reads_isolate_tasks_and_runs, strict_reads);
