//! Overlay and worktree workspaces (`--workspace`): the same agent actions give the same task
//! tree either way; overlays leave no mount, process or folder behind.

use serde_json::{json, Value};

use crate::both_ways;
use crate::support::*;

/// Every kind of change an agent makes, as one shell script.
const ACTIONS: &str = r#"set -e
echo changed >> src/file_00.txt
echo new > added.txt
rm src/file_01.txt
mv src/file_02.txt src/renamed.txt
chmod +x src/file_03.txt
ln -s src/file_00.txt link
printf '\000\001bin' > bin.dat
echo ign > debug.log
mkdir -p build && echo x > build/out.txt
rm -r nested
rm -r tree2 && mkdir tree2 && echo again > tree2/only.txt
rm src/file_04.txt && mkdir src/file_04.txt && echo d > src/file_04.txt/inner
rm -r dir2f && echo now-a-file > dir2f
printf '!keep.log\n' >> .gitignore && echo kept > keep.log
mkdir -p deep/er/est && echo deep > deep/er/est/f.txt
"#;

fn repo_with_folders(runner: Runner) -> TestRepo {
    let repo = TestRepo::with_files(6).run_by(runner);
    for (p, c) in [
        ("nested/a/b.txt", "b\n"),
        ("nested/c.txt", "c\n"),
        ("tree2/x.txt", "x\n"),
        ("tree2/sub/y.txt", "y\n"),
        ("dir2f/z.txt", "z\n"),
    ] {
        let path = repo.path.join(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, c).expect("write");
    }
    git(&repo.path, &["add", "-A"]);
    git(&repo.path, &["commit", "--quiet", "-m", "folders"]);
    repo
}

fn run_actions(runner: Runner, mode: &'static str) -> (TestRepo, Value) {
    let repo = repo_with_folders(runner);
    let before = repo.snapshot();
    let file = repo.write_tasks(&json!({
        "agents": {"sh": {"protocol": "exec", "command": "sh", "args": ["-c", ACTIONS]}},
        // The new executable is a risky change: the task names it to keep it.
        "tasks": [{"id": "all", "prompt": "x", "agent": "sh", "paths": ["**", "src/file_03.txt"]}]
    }));
    let (out, report) = in_workspace(mode, || repo.run(&file, &["--no-readback"]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{mode}: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(report["workspace"]["mode"], mode, "{}", report["workspace"]);
    repo.assert_left_as(&before);
    let run_id = report["run_id"].as_str().expect("run id");
    let mounts = overlay_mounts_under(std::path::Path::new("/"));
    assert!(
        !mounts.iter().any(|m| m.contains(run_id)),
        "mounts left: {mounts:?}"
    );
    assert_eq!(memory_lowers_of(run_id), Vec::<String>::new());
    (repo, report)
}

fn same_tree_both_ways(runner: Runner) {
    let (a, ra) = run_actions(runner, "overlay");
    let (b, rb) = run_actions(runner, "worktree");
    // The lower checkout in memory (where there is room, as here) or on disk: the same tree.
    let (c, rc) = lowers_on_disk(|| run_actions(runner, "overlay"));
    let tree = |repo: &TestRepo, report: &Value| {
        let branch = task(report, "all")["branch"]
            .as_str()
            .expect("branch")
            .to_string();
        git_text(&repo.path, &["rev-parse", &format!("{branch}^{{tree}}")])
    };
    let ls = |repo: &TestRepo, report: &Value| {
        let branch = task(report, "all")["branch"]
            .as_str()
            .expect("branch")
            .to_string();
        git_text(&repo.path, &["ls-tree", "-r", &branch])
    };
    assert_eq!(
        tree(&a, &ra),
        tree(&b, &rb),
        "overlay:\n{}\nworktree:\n{}",
        ls(&a, &ra),
        ls(&b, &rb)
    );
    assert_eq!(tree(&c, &rc), tree(&b, &rb), "overlay, lower on disk");
    let files = a.tree_files(task(&ra, "all")["branch"].as_str().expect("branch"));
    assert_eq!(files["keep.log"], b"kept\n");
    assert!(!files.contains_key("debug.log") && !files.contains_key("build/out.txt"));
    assert!(!files.keys().any(|f| f.starts_with("nested/")));
    assert_eq!(
        files
            .keys()
            .filter(|f| f.starts_with("tree2/"))
            .collect::<Vec<_>>(),
        vec!["tree2/only.txt"]
    );
    assert_eq!(files["dir2f"], b"now-a-file\n");
    assert_eq!(files["src/file_04.txt/inner"], b"d\n");
}
both_ways!(the_same_actions_give_the_same_tree, same_tree_both_ways);

/// git inside the overlay view sees the task's branch and its change (the agent uid must be
/// able to read the repository's `.git`: the unprivileged pass owns it).
#[test]
fn git_works_inside_an_overlay() {
    let repo = TestRepo::with_files(3).run_by(Runner::Unprivileged);
    let script = "echo more >> src/file_00.txt; rm src/file_01.txt; \
                  { git status --porcelain; git rev-parse --abbrev-ref HEAD; git diff --stat; } > git.txt 2>&1";
    let file = repo.write_tasks(&json!({
        "agents": {"sh": {"protocol": "exec", "command": "sh", "args": ["-c", script]}},
        "tasks": [{"id": "g", "prompt": "x", "agent": "sh"}]
    }));
    let (out, report) = in_workspace("overlay", || repo.run(&file, &["--no-readback"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let files = repo.tree_files(report["integration_branch"].as_str().expect("branch"));
    let seen = String::from_utf8_lossy(&files["git.txt"]).into_owned();
    assert!(seen.contains(" M src/file_00.txt"), "{seen}");
    assert!(seen.contains(" D src/file_01.txt"), "{seen}");
    assert!(seen.contains("?? git.txt"), "{seen}");
    assert!(
        seen.contains(task(&report, "g")["branch"].as_str().expect("b")),
        "{seen}"
    );
    assert!(seen.contains("2 files changed"), "{seen}");
}

#[test]
fn overlay_needs_the_sandbox() {
    let repo = TestRepo::with_files(1);
    let file = repo.write_tasks(&json!({
        "agents": {"sh": {"protocol": "exec", "command": "true"}},
        "tasks": [{"id": "t", "prompt": "x", "agent": "sh"}]
    }));
    let (out, _) = repo.run(&file, &["--workspace", "overlay", "--sandbox", "off"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("sandbox is off"), "{}", stderr(&out));
    let (out, report) = repo.run(&file, &["--sandbox", "off", "--no-readback"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report["workspace"]["mode"], "worktree");
}

/// `defaults.workspace` in the task file picks the kind; `--workspace` overrides it; a bad
/// value is a validation error naming the field.
#[test]
fn the_task_file_picks_the_workspace_and_the_flag_overrides_it() {
    let repo = TestRepo::with_files(2);
    let tasks = |workspace: &str| {
        repo.write_tasks(&json!({
            "defaults": {"workspace": workspace},
            "agents": {"sh": {"protocol": "exec", "command": "sh", "args": ["-c", "echo x >> src/file_00.txt"]}},
            "tasks": [{"id": "t", "prompt": "x", "agent": "sh"}]
        }))
    };
    // Without the suite's own FANOUT_WORKSPACE (scripts/test.sh's worktree pass), which
    // would override the task file as the flag does.
    let run = |file: &std::path::Path, extra: &[&str]| {
        let report_path = repo.report_path();
        let _ = std::fs::remove_file(&report_path);
        let out = repo
            .fanout_command()
            .env_remove("FANOUT_WORKSPACE")
            .args(["run", "--tasks", file.to_str().expect("utf-8"), "--report"])
            .arg(&report_path)
            .args(extra)
            .arg("--repo")
            .arg(&repo.path)
            .output()
            .expect("fanout runs");
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report_path).unwrap_or_default())
                .unwrap_or_default();
        (out, report)
    };
    let file = tasks("worktree");
    let (out, report) = run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report["workspace"]["mode"], "worktree");
    assert!(
        report["workspace"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("defaults.workspace")),
        "{}",
        report["workspace"]
    );
    let (out, report) = run(&file, &["--no-readback", "--workspace", "overlay"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report["workspace"]["mode"], "overlay");
    let file = tasks("overlay");
    let (out, report) = run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report["workspace"]["mode"], "overlay");
    let file = tasks("sparse");
    let out = repo.fanout(&["validate", "--tasks", file.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(said.contains("$.defaults.workspace"), "{said}");
}

/// What a hostile task leaves in its worktree before the pool hands it to the next task:
/// every kind of entry git knows, and some it does not. The agent's part is what fanout can
/// commit; the rest comes from its verify command, after the commit (a failed task whose
/// work cannot be committed keeps its workspace: it is never pooled). `$1` is a folder
/// outside the repository.
const PLANT_AGENT: &str = r#"set -e
echo modified >> src/file_00.txt
echo added > added.txt
mkdir -p newdir/deeper && echo x > newdir/deeper/f.txt
echo ignored > debug.log
mkdir -p build && echo x > build/out.txt
rm src/file_01.txt
chmod +x src/file_02.txt
chmod -x run.sh
rm lnk && echo not-a-link > lnk
rm -r dir2f && echo now-a-file > dir2f
"#;
const PLANT_VERIFY: &str = r#"set -e
out="$1"
rm src/file_03.txt && ln -s "$out/secret.txt" src/file_03.txt
ln -s "$out" outlink
rm -r nested && ln -s "$out/dir" nested
echo hidden > src/file_04.txt && chmod 000 src/file_04.txt
mkdir locked && echo s > locked/s && chmod 000 locked
chmod 000 tree2/sub tree2
mkfifo pipe
rm src/file_05.txt && mkfifo src/file_05.txt
mkdir -p inner/.git && echo 'ref: refs/heads/x' > inner/.git/HEAD && echo x > inner/x
mkdir -p gitfile && echo "gitdir: $out" > gitfile/.git && echo y > gitfile/y
mkdir -p empty/deeper src/empty
touch "$(printf 'new\nline')" ' lead' ./-dash
rm -f .git && mkdir -p .git/hooks && printf '[core]\n\tworktree = /\n' > .git/config
printf '#!/bin/sh\ntouch "%s/pwned"\n' "$out" > .git/hooks/post-checkout
chmod +x .git/hooks/post-checkout
"#;

/// A task whose agent fails after changing things (fanout commits them for a look).
const CRASH: &str = r#"echo crash >> src/file_03.txt
rm -r tree2 && echo now-a-file > tree2
ln -s /etc/passwd evil
chmod +x src/file_01.txt
mkdir -p build/deep && echo z > build/deep/z
mkdir -p src/file_05.txt.d && echo w > src/file_05.txt.d/w
exit 1
"#;

/// What a task sees of its worktree, written to `probe-$1.txt`: every entry with its kind and
/// link target, the executable and unreadable ones, every file's content hash, and git's view.
const PROBE: &str = r#"f="$TMPDIR/probe"
{
find . -path ./.git -prune -o -printf '%y %p %l\n' | LC_ALL=C sort
echo '--- executable'
find . -path ./.git -prune -o -type f -perm -u=x -print | LC_ALL=C sort
echo '--- unreadable'
find . -path ./.git -prune -o ! -readable -print | LC_ALL=C sort
echo '--- content'
find . -path ./.git -prune -o -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum
echo '--- git'
[ -f .git ] && [ ! -L .git ] && echo '.git is a file'
git status --porcelain --ignored --untracked-files=all
git rev-parse "HEAD^{tree}"
} > "$f" 2>&1
mv "$f" "probe-$1.txt"
"#;

/// A worktree run with `--jobs 1`: a hostile task, a task from the same start, a task that
/// fails, a task that edits, one from that edit. Returns the report and each probe's output.
fn run_after_a_hostile_task(
    repo: &TestRepo,
    outside: &std::path::Path,
) -> (Value, std::collections::BTreeMap<String, String>, String) {
    let out = outside.display().to_string();
    let file = repo.write_tasks(&json!({
        "agents": {
            "plant": {"protocol": "exec", "command": "sh", "args": ["-c", PLANT_AGENT]},
            "first": {"protocol": "exec", "command": "sh", "args": ["-c", PROBE, "probe", "first"]},
            "crash": {"protocol": "exec", "command": "sh", "args": ["-c", CRASH]},
            "edit": {"protocol": "exec", "command": "sh",
                     "args": ["-c", "echo edited >> src/file_03.txt; echo junk > junk.log; mkdir -p build; echo y > build/y"]},
            "second": {"protocol": "exec", "command": "sh", "args": ["-c", PROBE, "probe", "second"]}
        },
        "tasks": [
            {"id": "plant", "prompt": "x", "agent": "plant", "paths": ["**", "src/file_02.txt"],
             "verify": ["sh", "-c", PLANT_VERIFY, "plant", out]},
            {"id": "first", "prompt": "x", "agent": "first"},
            {"id": "crash", "prompt": "x", "agent": "crash"},
            {"id": "edit", "prompt": "x", "agent": "edit"},
            {"id": "second", "prompt": "x", "agent": "second", "depends_on": ["edit"]}
        ]
    }));
    let (o, report) = in_workspace("worktree", || {
        repo.run(&file, &["--no-readback", "--jobs", "1"])
    });
    for (id, status) in [("plant", "merged"), ("crash", "failed")] {
        let t = task(&report, id);
        assert_eq!(t["status"], status, "{t}\n{}", stderr(&o));
    }
    let mut probes = std::collections::BTreeMap::new();
    for id in ["first", "second"] {
        let t = task(&report, id);
        assert_eq!(t["status"], "merged", "{id}: {t}\n{}", stderr(&o));
        let files = repo.tree_files(t["branch"].as_str().expect("branch"));
        let probe = files
            .get(&format!("probe-{id}.txt"))
            .unwrap_or_else(|| panic!("{id} wrote no probe: {:?}", files.keys()));
        probes.insert(id.to_string(), String::from_utf8_lossy(probe).into_owned());
    }
    (report, probes, stderr(&o))
}

/// The worktree pool: what one task left behind (modified, added, untracked, ignored, deleted,
/// mode-changed, symlinked, unreadable entries, FIFOs, a nested repository, a forged `.git`
/// with a hook) never reaches the next task, nor is anything outside the worktree touched:
/// each task sees exactly what a fresh checkout shows.
fn nothing_leaks_through_a_reused_worktree(runner: Runner) {
    let repo = repo_with_folders(runner);
    std::fs::write(repo.path.join("run.sh"), "#!/bin/sh\necho run\n").expect("write");
    std::fs::set_permissions(
        repo.path.join("run.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    std::os::unix::fs::symlink("src/file_00.txt", repo.path.join("lnk")).expect("link");
    git(&repo.path, &["add", "-A"]);
    git(&repo.path, &["commit", "--quiet", "-m", "exec and link"]);
    let outside = repo.tmp.path().join("outside");
    std::fs::create_dir_all(outside.join("dir")).expect("mkdir");
    std::fs::write(outside.join("secret.txt"), "secret\n").expect("write");
    std::fs::write(outside.join("dir/c.txt"), "outside c\n").expect("write");
    let outside_before = snapshot_dir(&outside);
    let before = repo.snapshot();

    let (pooled, seen, said) = run_after_a_hostile_task(&repo, &outside);
    assert_eq!(
        pooled["workspace"]["reused"], 4,
        "every task after the first ran in a reused worktree: {}\nwarnings: {}",
        pooled["workspace"], pooled["warnings"]
    );
    assert!(!said.contains("afresh"), "{said}");
    let (fresh, expected, _) = with_env("FANOUT_WORKTREE_POOL", "0", || {
        run_after_a_hostile_task(&repo, &outside)
    });
    assert!(
        fresh["workspace"].get("reused").is_none(),
        "{}",
        fresh["workspace"]
    );
    for id in ["first", "second"] {
        assert_eq!(
            seen[id], expected[id],
            "{id}: reused worktree vs a fresh one"
        );
    }
    assert!(expected["second"].contains("./src/file_00.txt"));
    assert!(!expected["first"].contains("added.txt") && !expected["first"].contains("pipe"));
    assert_eq!(
        snapshot_dir(&outside),
        outside_before,
        "outside the worktree"
    );
    repo.assert_left_as_except_worktrees(&before);
    let runs = std::fs::read_dir(repo.path.join(".git/fanout/runs")).expect("runs");
    for run in runs.flatten() {
        let pool = run.path().join("worktrees/.pool");
        assert!(!pool.exists(), "{} stays", pool.display());
    }
}
both_ways!(
    nothing_leaks_through_a_reused_worktree,
    nothing_leaks_through_a_reused_worktree
);

/// Every entry beneath `dir` with its kind, mode and content (links not followed).
fn snapshot_dir(dir: &std::path::Path) -> Vec<(String, u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let meta = std::fs::symlink_metadata(e.path()).expect("stat");
            let content = if meta.is_file() {
                std::fs::read(e.path()).unwrap_or_default()
            } else {
                Vec::new()
            };
            if meta.is_dir() {
                stack.push(e.path());
            }
            out.push((
                e.path().display().to_string(),
                meta.permissions().mode(),
                content,
            ));
        }
    }
    out.sort();
    out
}

/// Tasks that each add one file, run one at a time in worktrees: their reports.
fn one_file_tasks(repo: &TestRepo, n: usize) -> (std::process::Output, Value) {
    let tasks: Vec<Value> = (0..n)
        .map(|i| json!({"id": format!("t{i}"), "prompt": "x", "agent": "sh"}))
        .collect();
    let file = repo.write_tasks(&json!({
        "agents": {"sh": {"protocol": "exec", "command": "sh",
                          "args": ["-c", "echo x > \"$FANOUT_TASK_ID.txt\"; git status --porcelain > \"$TMPDIR/st\"; mv \"$TMPDIR/st\" \"status-$FANOUT_TASK_ID.txt\""]}},
        "tasks": tasks
    }));
    in_workspace("worktree", || {
        repo.run(&file, &["--no-readback", "--jobs", "1"])
    })
}

/// Each task's commit holds just its own two files, and git inside saw only its own new file.
fn assert_each_task_alone(repo: &TestRepo, report: &Value, n: usize) {
    for i in 0..n {
        let t = task(report, &format!("t{i}"));
        assert_eq!(t["status"], "merged", "{t}");
        let files: Vec<&str> = t["files"]
            .as_array()
            .expect("files")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            files,
            [format!("status-t{i}.txt"), format!("t{i}.txt")],
            "{t}"
        );
        let tree = repo.tree_files(t["branch"].as_str().expect("branch"));
        assert_eq!(
            String::from_utf8_lossy(&tree[&format!("status-t{i}.txt")]),
            format!("?? t{i}.txt\n")
        );
    }
}

/// A reset that fails: the task gets a fresh checkout (one warning), the pool is off for the
/// rest of the run, and no task sees another's work.
fn a_failed_reset_falls_back_to_a_fresh_checkout(runner: Runner) {
    let repo = TestRepo::with_files(3).run_by(runner);
    let before = repo.snapshot();
    let (out, report) = with_env("FANOUT_TEST_FAIL_RESET", "1", || one_file_tasks(&repo, 4));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_each_task_alone(&repo, &report, 4);
    // Warnings of a running task are events: on the terminal (and in `--json`).
    let said = stderr(&out);
    assert_eq!(said.matches("checked out afresh").count(), 1, "{said}");
    assert!(said.contains("no longer reused"), "{said}");
    assert!(
        report["workspace"].get("reused").is_none(),
        "{}",
        report["workspace"]
    );
    repo.assert_left_as(&before);
}
both_ways!(
    a_failed_reset_falls_back_to_a_fresh_checkout,
    a_failed_reset_falls_back_to_a_fresh_checkout
);

/// A repository with a submodule is not pooled (git does not reset inside a submodule's
/// folder): every task gets a fresh checkout, without a warning.
#[test]
fn a_repository_with_submodules_is_not_pooled() {
    let repo = TestRepo::with_files(3);
    add_submodule(&repo);
    let (out, report) = one_file_tasks(&repo, 3);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_each_task_alone(&repo, &report, 3);
    assert!(!stderr(&out).contains("afresh"), "{}", stderr(&out));
    assert!(
        report["workspace"].get("reused").is_none(),
        "{}",
        report["workspace"]
    );
}

/// A start commit whose checkout converts content (a `.gitattributes`, here one that changes
/// nothing) is not pooled: the reset's check compares the worktree with the blobs, which such a
/// checkout does not write. Every task gets a fresh checkout, without a warning.
#[test]
fn a_repository_with_attributes_is_not_pooled() {
    let repo = TestRepo::with_files(3);
    std::fs::write(repo.path.join(".gitattributes"), "*.png binary\n").expect("write");
    git(&repo.path, &["add", "-A"]);
    git(&repo.path, &["commit", "--quiet", "-m", "attributes"]);
    let (out, report) = one_file_tasks(&repo, 3);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_each_task_alone(&repo, &report, 3);
    assert!(!stderr(&out).contains("afresh"), "{}", stderr(&out));
    assert!(
        report["workspace"].get("reused").is_none(),
        "{}",
        report["workspace"]
    );
}

/// Worktrees are reused when the pool is on: a run of four tasks one at a time reuses three.
#[test]
fn four_tasks_one_at_a_time_reuse_three_worktrees() {
    let repo = TestRepo::with_files(3);
    let (out, report) = one_file_tasks(&repo, 4);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_each_task_alone(&repo, &report, 4);
    assert_eq!(report["workspace"]["reused"], 3, "{}", report["workspace"]);
    assert!(
        report["workspace"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("reused")),
        "{}",
        report["workspace"]
    );
}

/// What a task sees of its worktree beyond `PROBE`: every entry's kind, permission bits
/// (setuid, setgid and sticky included), link count and link target, and its extended
/// attributes (listed by python's `os.listxattr`: no `attr` package needed), then `PROBE`'s
/// content hashes and git's view. Written to `probe-$1.txt`.
const PROBE_DEEP: &str = r#"f="$TMPDIR/deep"
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3
{
find . -path ./.git -prune -o -printf '%y %#m %n %p %l\n' | LC_ALL=C sort
echo '--- xattrs'
"$PY" -c 'import os
for d, ds, fs in os.walk("."):
    if d == ".": ds[:] = [x for x in ds if x != ".git"]; fs = [x for x in fs if x != ".git"]
    for n in [d] + [os.path.join(d, x) for x in ds + fs]:
        a = sorted(x for x in os.listxattr(n, follow_symlinks=False) if not x.startswith("security."))
        if a: print(n, a)'
} > "$f" 2>&1
mv "$f" "deep-$1.txt"
"#;

/// Sets the extended attribute `user.fanout-test` on each argument (python's `os.setxattr`).
const SET_XATTR: &str = r#"PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3
"$PY" -c 'import os, sys
for p in sys.argv[1:]: os.setxattr(p, "user.fanout-test", b"planted", follow_symlinks=False)' "$@"
"#;

/// One hostile task (`plant` as its agent, `after` as its verify command, which runs after its
/// commit), then a task that runs `edit` and probes its worktree, `--jobs 1` in worktrees:
/// the probe's commit (tree) and what it saw.
fn plant_then_probe(
    repo: &TestRepo,
    plant: &str,
    after: &str,
    edit: &str,
) -> (Value, String, String, String) {
    let probe = format!("{edit}\n{PROBE}\n{PROBE_DEEP}");
    let file = repo.write_tasks(&json!({
        "caches": [{"name": "shared", "env": ["SHARED_CACHE"]}],
        "agents": {
            "plant": {"protocol": "exec", "command": "sh", "args": ["-c", plant]},
            "probe": {"protocol": "exec", "command": "sh", "args": ["-c", probe, "probe", "b"]}
        },
        "tasks": [
            {"id": "a", "prompt": "x", "agent": "plant", "paths": ["**"],
             "verify": ["sh", "-c", format!("set -e\n{after}\ntrue")]},
            {"id": "b", "prompt": "x", "agent": "probe"}
        ]
    }));
    let (o, report) = in_workspace("worktree", || {
        repo.run(&file, &["--no-readback", "--jobs", "1"])
    });
    let a = task(&report, "a");
    assert!(
        a["status"] == "merged" || a["commit"].is_null(),
        "the hostile task: {a}\n{}",
        stderr(&o)
    );
    let b = task(&report, "b");
    assert_eq!(b["status"], "merged", "{b}\n{}", stderr(&o));
    let branch = b["branch"].as_str().expect("branch");
    let files = repo.tree_files(branch);
    let seen = |name: &str| {
        String::from_utf8_lossy(
            files
                .get(name)
                .unwrap_or_else(|| panic!("no {name}: {:?}\n{}", files.keys(), stderr(&o))),
        )
        .into_owned()
    };
    let seen = format!("{}\n{}", seen("probe-b.txt"), seen("deep-b.txt"));
    let tree = git_text(&repo.path, &["ls-tree", "-r", branch]);
    (report, seen, tree, stderr(&o))
}

/// How the pool must handle what the hostile task left.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    /// The reset repairs it: the worktree is reused.
    Reused,
    /// The check finds it: a fresh checkout, with the warning of a failed reset.
    Afresh,
}

/// The probe task's commit and view with the pool equal those of the same run without it.
/// Returns the probe task's tree files.
fn same_as_a_fresh_checkout(
    runner: Runner,
    setup: impl Fn(&TestRepo),
    (plant, after, edit): (&str, &str, &str),
    expect: Expect,
) -> (TestRepo, std::collections::BTreeMap<String, Vec<u8>>) {
    let repo = repo_with_folders(runner);
    setup(&repo);
    let before = repo.snapshot();
    let (pooled, seen, tree, said) = plant_then_probe(&repo, plant, after, edit);
    let reused = pooled["workspace"]["reused"].as_u64().unwrap_or(0);
    let afresh = said.contains("checked out afresh");
    assert_eq!(
        (reused, afresh),
        match expect {
            Expect::Reused => (1, false),
            Expect::Afresh => (0, true),
        },
        "{expect:?}: {said}"
    );
    let (fresh, expected, expected_tree, _) = with_env("FANOUT_WORKTREE_POOL", "0", || {
        plant_then_probe(&repo, plant, after, edit)
    });
    assert!(fresh["workspace"].get("reused").is_none());
    let diff: Vec<String> = similar::TextDiff::from_lines(&expected, &seen)
        .iter_all_changes()
        .filter(|c| c.tag() != similar::ChangeTag::Equal)
        .map(|c| format!("{}{}", c.tag(), c))
        .collect();
    assert!(
        diff.is_empty(),
        "what the probe saw, fresh (-) vs reused (+):\n{}",
        diff.concat()
    );
    assert_eq!(tree, expected_tree, "the probe's commit, reused vs fresh");
    repo.assert_left_as_except_worktrees(&before);
    let files = repo.tree_files(task(&fresh, "b")["branch"].as_str().expect("branch"));
    (repo, files)
}

/// Two identical tracked files, for hard links between them.
fn add_twins(repo: &TestRepo) {
    let body: String = (1..=20).map(|l| format!("twin line {l}\n")).collect();
    for p in ["twin_a.txt", "twin_b.txt"] {
        std::fs::write(repo.path.join(p), &body).expect("write");
    }
    std::fs::create_dir_all(repo.path.join("sub")).expect("mkdir");
    let text: String = (1..=20).map(|l| format!("text line {l}\n")).collect();
    std::fs::write(repo.path.join("sub/text.txt"), &text).expect("write");
    std::fs::write(repo.path.join("top.txt"), &text).expect("write");
    git(&repo.path, &["add", "-A"]);
    git(&repo.path, &["commit", "--quiet", "-m", "twins and text"]);
}

/// (a) A tracked file hard-linked into a shared cache (a folder that outlives the task), then
/// written through the cache by the next task: the next task's own file stays as committed.
/// Each task sees the caches through its own copy-on-write layer (another mount), so the link
/// itself fails with EXDEV today; the attempt is kept so that the reuse stays clean should a
/// writable folder that outlives a task ever be shared again.
fn a_hard_link_into_a_cache_reaches_no_later_task(runner: Runner) {
    for (plant, after) in [
        // By the agent (its collection records the file's new stat data) …
        ("ln -f src/file_00.txt \"$SHARED_CACHE/linked\" || true", ""),
        // … or by its verify command, after the commit.
        (
            "echo x > new.txt",
            "ln -f src/file_01.txt \"$SHARED_CACHE/linked\" || true",
        ),
    ] {
        let edit = "echo 'written through the cache' >> \"$SHARED_CACHE/linked\"";
        let (_, files) =
            same_as_a_fresh_checkout(runner, add_twins, (plant, after, edit), Expect::Reused);
        let body = String::from_utf8_lossy(&files["src/file_00.txt"]).into_owned();
        assert!(!body.contains("through the cache"), "{body}");
        let body = String::from_utf8_lossy(&files["src/file_01.txt"]).into_owned();
        assert!(!body.contains("through the cache"), "{body}");
    }
}
both_ways!(
    a_hard_link_into_a_cache_reaches_no_later_task,
    a_hard_link_into_a_cache_reaches_no_later_task
);

/// (c) Two tracked files hard-linked together: the next task's edit of one leaves the other.
fn hard_linked_twins_are_two_files_again(runner: Runner) {
    for (plant, after) in [
        ("ln -f twin_a.txt twin_b.txt", ""),
        ("echo x > new.txt", "ln -f twin_a.txt twin_b.txt"),
    ] {
        // Written in place (as many editors do), not replaced as `sed -i` would.
        let edit = "sed 's/^twin line 3$/edited/' twin_a.txt > \"$TMPDIR/t\" && cat \"$TMPDIR/t\" > twin_a.txt";
        let (_, files) =
            same_as_a_fresh_checkout(runner, add_twins, (plant, after, edit), Expect::Reused);
        assert!(String::from_utf8_lossy(&files["twin_a.txt"]).contains("edited"));
        assert!(!String::from_utf8_lossy(&files["twin_b.txt"]).contains("edited"));
    }
}
both_ways!(
    hard_linked_twins_are_two_files_again,
    hard_linked_twins_are_two_files_again
);

/// (b) A planted `.gitattributes` (ignored in a folder, or untracked at the root) that would
/// make the reset rewrite files as CRLF or UTF-16: the next task's one-line edit changes one
/// line, as after a fresh checkout.
fn planted_attributes_do_not_convert_the_next_task(runner: Runner) {
    let ignored_in_sub = |attr: &str| {
        format!(
            "echo 'sub/.gitattributes' >> .gitignore && printf '{attr}\\n' > sub/.gitattributes \
             && echo more >> sub/text.txt && echo more >> top.txt"
        )
    };
    let cases = [
        (ignored_in_sub("* text eol=crlf"), String::new()),
        (
            ignored_in_sub("* text working-tree-encoding=UTF-16LE"),
            String::new(),
        ),
        (
            "echo x > new.txt".to_string(),
            "printf '* text eol=crlf\\n' > .gitattributes && echo more >> top.txt \
             && echo more >> sub/text.txt"
                .to_string(),
        ),
        (
            "printf '.gitattributes\\n' >> .gitignore".to_string(),
            "printf '* text working-tree-encoding=UTF-16LE\\n' > .gitattributes \
             && echo more >> top.txt && echo more >> sub/text.txt"
                .to_string(),
        ),
    ];
    for (plant, after) in &cases {
        let edit = "sed -i 's/^text line 3$/edited/' sub/text.txt top.txt";
        let (_, files) =
            same_as_a_fresh_checkout(runner, add_twins, (plant, after, edit), Expect::Reused);
        for p in ["sub/text.txt", "top.txt"] {
            let body = &files[p];
            assert!(
                !body.contains(&b'\r') && !body.contains(&0),
                "{p}: {body:?}"
            );
            assert!(String::from_utf8_lossy(body).contains("edited\ntext line 4\n"));
        }
    }
}
both_ways!(
    planted_attributes_do_not_convert_the_next_task,
    planted_attributes_do_not_convert_the_next_task
);

/// A sticky world-writable folder, setgid/setuid and world-writable files, by the agent and
/// after the commit: the next task sees a fresh checkout's modes.
fn planted_modes_do_not_reach_the_next_task(runner: Runner) {
    for (plant, after) in [
        (
            "chmod 1777 src && chmod 2666 src/file_02.txt",
            "chmod 4755 src/file_03.txt",
        ),
        (
            "echo x > new.txt",
            "chmod 1777 sub . && chmod 2666 top.txt && chmod 4755 twin_a.txt",
        ),
    ] {
        same_as_a_fresh_checkout(runner, add_twins, (plant, after, "true"), Expect::Reused);
    }
}
both_ways!(
    planted_modes_do_not_reach_the_next_task,
    planted_modes_do_not_reach_the_next_task
);

/// What the fast reset (O(change), from the stat data recorded when the worktree was last a
/// fresh checkout) must see through, by the agent and by its verify command after the commit:
/// content changed in place with its size and modification time kept (only the change time
/// tells), a rename within a folder, a file swapped for a link, ignored and untracked files, a
/// changed mode, a hard link to a file outside, a deleted folder. The next task sees a fresh
/// checkout, and the reset that gave it was the fast one.
fn the_fast_reset_undoes_what_stat_data_alone_would_hide(runner: Runner) {
    let hostile = r#"set -e
m=$(stat -c %y src/file_00.txt)
printf 'X' | dd of=src/file_00.txt bs=1 count=1 conv=notrunc 2>/dev/null
touch -d "$m" src/file_00.txt
mv tree2/x.txt tree2/x2.txt
rm nested/c.txt && ln -s ../top.txt nested/c.txt
echo junk > build.log && echo junk > nested/a/untracked.txt && mkdir -p empty/deeper
chmod 700 tree2/sub && chmod 600 src/file_01.txt
echo outside > "$TMPDIR/outside" && ln -f "$TMPDIR/outside" top.txt
rm -rf dir2f"#;
    let setup = |repo: &TestRepo| {
        add_twins(repo);
        std::fs::write(repo.path.join(".gitignore"), "*.log\n").expect("write");
        git(&repo.path, &["add", "-A"]);
        git(&repo.path, &["commit", "--quiet", "-m", "ignore logs"]);
    };
    for (plant, after) in [(hostile, ""), ("echo x > new.txt", hostile)] {
        let notes = tempfile::tempdir().expect("tempdir");
        // fanout may run as another uid (`as_unprivileged`): it writes the notes.
        std::fs::set_permissions(
            notes.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .expect("chmod");
        let file: &'static str = Box::leak(
            notes
                .path()
                .join("notes")
                .display()
                .to_string()
                .into_boxed_str(),
        );
        with_env("FANOUT_TEST_RESET_NOTES", file, || {
            same_as_a_fresh_checkout(runner, setup, (plant, after, "true"), Expect::Reused)
        });
        let said = std::fs::read_to_string(file).unwrap_or_default();
        assert!(said.lines().any(|l| l.starts_with("b fast:")), "{said}");
    }
}
both_ways!(
    the_fast_reset_undoes_what_stat_data_alone_would_hide,
    the_fast_reset_undoes_what_stat_data_alone_would_hide
);

/// `user.*` extended attributes on tracked files and folders (the worktree's root included),
/// set by the agent or after the commit, never reach the next task.
fn planted_xattrs_do_not_reach_the_next_task(runner: Runner) {
    let set = |paths: &str| format!("sh -c '{}' xattr {paths}", SET_XATTR.replace('\'', "'\\''"));
    for (plant, after) in [
        (set("src/file_00.txt src"), String::new()),
        ("echo x > new.txt".to_string(), set("top.txt sub .")),
    ] {
        same_as_a_fresh_checkout(runner, add_twins, (&plant, &after, "true"), Expect::Afresh);
    }
}
both_ways!(
    planted_xattrs_do_not_reach_the_next_task,
    planted_xattrs_do_not_reach_the_next_task
);

/// A workspace sits where a checkout of the user's would: no dot-folder on its path (a path
/// through `.git` makes `send`/`serve-static` answer 404 and ESLint skip every file), for the
/// agent, its verify command and a shared setup alike; `fanout clean` removes it.
fn no_dot_folder_on_the_path(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let no_dot = r#"case "$PWD" in */.*) echo "dot-folder in $PWD" >&2; exit 1;; esac"#;
    let file = repo.write_tasks(&json!({
        "agents": {"sh": {"protocol": "exec", "command": "sh",
                          "args": ["-c", format!("{no_dot}; echo x > x.txt")]}},
        "defaults": {"agent": "sh", "max_attempts": 1, "setup": no_dot},
        "tasks": [{"id": "plain-path", "prompt": "x", "verify": no_dot}]
    }));
    let (out, report) = repo.run(&file, &["--no-readback", "--keep-worktrees"]);
    let t = &report["tasks"][0];
    assert_eq!(t["status"], "merged", "{t:#}\n{}", stderr(&out));
    let run_dir = std::path::Path::new(report["run_dir"].as_str().expect("run_dir"));
    let outside = std::fs::read_link(run_dir.join("worktrees")).expect("a link to the workspaces");
    assert!(!outside.starts_with(&repo.path), "{}", outside.display());
    assert!(outside.join("plain-path").is_dir(), "the kept workspace");
    let out = repo.fanout(&["clean"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !outside.exists(),
        "{} is left after fanout clean",
        outside.display()
    );
}
both_ways!(
    workspaces_have_no_dot_folder_on_their_path,
    no_dot_folder_on_the_path
);
