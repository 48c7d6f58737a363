//! Shared caches carry nothing executable between tasks or runs: tasks see them through their
//! own copy-on-write layer, only `caches_fill` writes them, and a cache folder fanout did not
//! make is replaced. Fake tools (shell) write where cargo, pip, npm and go would.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::support::*;

/// Writes what the tools would put in their caches, shared parts and private ones alike
/// (config.toml, npx programs and go's build cache must not reach any task).
const FILL: &str = r#"
set -e
mkdir -p "$CARGO_HOME/registry/src/idx/foo-1.0.0/src" "$CARGO_HOME/registry/cache/idx"
echo 'pub fn foo() {}' > "$CARGO_HOME/registry/src/idx/foo-1.0.0/src/lib.rs"
echo crate > "$CARGO_HOME/registry/cache/idx/foo-1.0.0.crate"
printf '[build]\nrustc-wrapper = "/fill/wrapper"\n' > "$CARGO_HOME/config.toml"
mkdir -p "$PIP_CACHE_DIR/wheels" "$npm_config_cache/_cacache/index-v5" "$npm_config_cache/_npx"
echo wheel > "$PIP_CACHE_DIR/wheels/fill.whl"
echo index > "$npm_config_cache/_cacache/index-v5/fill"
echo program > "$npm_config_cache/_npx/fill-bin"
mkdir -p "$GOMODCACHE/example.com/m@v1.0.0"
echo 'package m' > "$GOMODCACHE/example.com/m@v1.0.0/m.go"
echo built > "$GOCACHE/fill-build"
"#;

/// Lists and hashes every cache as the task sees it (`seen-<task>.txt`), then writes into each
/// one what an attacker would; with `STORE` set, also tries the shared store itself
/// (`store-<task>.txt` lists what succeeded).
const AGENT: &str = r#"
out="seen-$FANOUT_TASK_ID.txt"
for v in CARGO_HOME PIP_CACHE_DIR npm_config_cache GOMODCACHE GOCACHE; do
  eval d=\$$v
  echo "[$v]" >> "$out"
  (cd "$d" && find . \( -type f -o -type l \) | LC_ALL=C sort | while read -r f; do
     echo "$f $(sha256sum < "$f" | cut -c1-16)"; done) >> "$out"
done
mkdir -p "$CARGO_HOME/bin"
printf '#!/bin/sh\n' > "$CARGO_HOME/bin/cargo-x" && chmod +x "$CARGO_HOME/bin/cargo-x"
printf '[build]\nrustc-wrapper = "/tmp/evil"\n' > "$CARGO_HOME/config.toml"
lib="$CARGO_HOME/registry/src/idx/foo-1.0.0/src/lib.rs"
mkdir -p "$(dirname "$lib")"
echo 'pub fn backdoor() {}' >> "$lib"
grep -c backdoor "$lib" > "edited-$FANOUT_TASK_ID.txt"
mkdir -p "$PIP_CACHE_DIR/wheels" "$npm_config_cache/_cacache/index-v5" "$GOMODCACHE/example.com/m@v1.0.0"
echo evil > "$PIP_CACHE_DIR/wheels/evil.whl"
echo evil > "$npm_config_cache/_cacache/index-v5/evil"
echo 'func Backdoor() {}' >> "$GOMODCACHE/example.com/m@v1.0.0/m.go"
echo evil > "$GOCACHE/evil"
{ ln "$PIP_CACHE_DIR/wheels/fill.whl" "hl-view-$FANOUT_TASK_ID" && echo linked-view; } 2>/dev/null > "links-$FANOUT_TASK_ID.txt"
if [ -n "$STORE" ]; then
  s="store-$FANOUT_TASK_ID.txt"
  { ln "$STORE/pip/wheels/fill.whl" "hl-store-$FANOUT_TASK_ID" && echo linked; } 2>/dev/null >> "$s"
  { ln "seen-$FANOUT_TASK_ID.txt" "$STORE/pip/hl-in" && echo linked-in; } 2>/dev/null >> "$s"
  { chmod 0777 "$STORE/pip" && echo chmodded; } 2>/dev/null >> "$s"
  { echo x >> "$STORE/pip/wheels/fill.whl" && echo appended; } 2>/dev/null >> "$s"
  { touch "$STORE/cargo/registry/new" && echo created; } 2>/dev/null >> "$s"
  { mv "$STORE/go/mod" "$STORE/go/mod2" && echo renamed; } 2>/dev/null >> "$s"
  # The view's mount point and the layer beneath it are out of reach.
  view="$(dirname "$CARGO_HOME")"
  { mv "$view" "$view.x" && echo moved-view; } 2>/dev/null >> "$s"
  { touch "$view/../upper/planted" && echo wrote-upper; } 2>/dev/null >> "$s"
  { ln -s / "$view/../swapped" && echo linked-beside; } 2>/dev/null >> "$s"
  echo done >> "$s"
fi
exit 0
"#;

fn tasks(fill: bool, store: Option<&Path>) -> Value {
    let mut agent = json!({"protocol": "exec", "command": "sh", "args": ["-c", AGENT]});
    if let Some(s) = store {
        agent["env"] = json!({"STORE": s.display().to_string()});
    }
    let mut file = json!({
        "caches": ["cargo", "pip", "npm", "go"],
        "defaults": {"agent": "attacker"},
        "agents": {"attacker": agent},
        "tasks": [
            {"id": "first", "prompt": "x"},
            {"id": "second", "prompt": "x", "depends_on": ["first"]}
        ]
    });
    if fill {
        file["caches_fill"] = json!(FILL);
    }
    file
}

/// The real folder of the repository's caches (a link's target when fanout ran as root).
fn store(repo: &TestRepo) -> PathBuf {
    std::fs::canonicalize(repo.path.join(".git/fanout/caches")).expect("the caches exist")
}

fn merged_text(repo: &TestRepo, report: &Value, file: &str) -> String {
    let files = repo.tree_files(report["integration_branch"].as_str().expect("branch"));
    String::from_utf8_lossy(files.get(file).map(Vec::as_slice).unwrap_or_default()).into_owned()
}

/// Every file under `dir` with its content, sorted.
fn contents(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap_or(&p).display().to_string();
                out.push((rel, std::fs::read_to_string(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

fn warnings(report: &Value) -> Vec<String> {
    report["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Run 1 fills the caches; both of its tasks (the second starts after the first ended) and the
/// tasks of run 2 see exactly what the fill put in the shared parts, whatever the earlier
/// tasks wrote (config.toml with a rustc-wrapper, bin/cargo-x, an edited crate source, a wheel,
/// an npm index entry, an edited go module); the store itself cannot be written, linked or
/// chmodded from a task.
fn task_writes_reach_no_other_task_or_run(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let file = repo.write_tasks(&tasks(true, None));
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let first = merged_text(&repo, &report, "seen-first.txt");
    // The fill's shared files, and nothing of its private ones.
    for want in [
        "./registry/src/idx/foo-1.0.0/src/lib.rs",
        "./registry/cache/idx/foo-1.0.0.crate",
        "./wheels/fill.whl",
        "./_cacache/index-v5/fill",
        "./example.com/m@v1.0.0/m.go",
    ] {
        assert!(first.contains(want), "{want} missing: {first}");
    }
    for never in ["config.toml", "fill-bin", "fill-build", "evil", "cargo-x"] {
        assert!(!first.contains(never), "{never} seen: {first}");
    }
    // The task could change its own copy...
    assert_eq!(merged_text(&repo, &report, "edited-first.txt"), "1\n");
    // ...and the next task saw none of it.
    assert_eq!(merged_text(&repo, &report, "seen-second.txt"), first);
    // No hard link from the task's view of a cache into its workspace.
    assert_eq!(merged_text(&repo, &report, "links-first.txt"), "");
    let store = store(&repo);
    let before = contents(&store);
    assert!(
        !before.iter().any(|(p, c)| c.contains("backdoor")
            || c.contains("Backdoor")
            || p.contains("evil")
            || p.contains("config.toml")),
        "{before:?}"
    );

    // Run 2 (no fill): the same view, and the store resists writes by every path.
    let file = repo.write_tasks(&tasks(false, Some(&store)));
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(merged_text(&repo, &report, "seen-first.txt"), first);
    assert_eq!(merged_text(&repo, &report, "seen-second.txt"), first);
    assert_eq!(merged_text(&repo, &report, "store-first.txt"), "done\n");
    assert_eq!(contents(&store), before);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(store.join("pip"))
        .expect("pip")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
    // The layers went with the tasks; no mount outlived them.
    assert!(overlay_mounts_under(&repo.path).is_empty());
}
crate::every_way!(
    task_writes_reach_no_other_task_or_run,
    task_writes_reach_no_other_task_or_run
);

/// Without a copy-on-write layer (simulated), tasks get private, empty caches, never the
/// shared one, and the report says so.
fn without_layers_tasks_get_private_empty_caches(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let file = repo.write_tasks(&tasks(true, None));
    let (out, report) = with_env("FANOUT_TEST_NO_CACHE_LAYERS", "1", || {
        repo.run(&file, &["--no-readback", "--jobs", "1"])
    });
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let w = warnings(&report);
    assert!(
        w.iter().any(|w| w.contains("private, empty caches")),
        "{w:?}"
    );
    let first = merged_text(&repo, &report, "seen-first.txt");
    assert_eq!(
        first,
        "[CARGO_HOME]\n[PIP_CACHE_DIR]\n[npm_config_cache]\n[GOMODCACHE]\n[GOCACHE]\n"
    );
    assert_eq!(merged_text(&repo, &report, "seen-second.txt"), first);
    // The fill still filled the store; no task wrote it.
    let store = contents(&store(&repo));
    assert!(
        store.iter().any(|(p, _)| p.ends_with("fill.whl")),
        "{store:?}"
    );
    assert!(
        !store
            .iter()
            .any(|(p, c)| p.contains("evil") || c.contains("backdoor")),
        "{store:?}"
    );
}
crate::both_ways!(
    without_layers_tasks_get_private_empty_caches,
    without_layers_tasks_get_private_empty_caches
);

/// Cache folders replaced by a dangling link, a link to another folder, a file, or a folder
/// open to everyone are recreated (empty) with a warning, and the run succeeds; `fanout clean
/// --caches` removes the caches.
fn broken_cache_folders_are_recreated(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let lister = r#"for v in PIP_CACHE_DIR npm_config_cache YARN_CACHE_FOLDER UV_CACHE_DIR; do
  eval d=\$$v; echo "[$v] $(ls -A "$d/" | tr '\n' ' ')"; done > "seen-$FANOUT_TASK_ID.txt""#;
    let file = repo.write_tasks(&json!({
        "caches": ["pip", "npm", "yarn", "uv"],
        "caches_fill": "echo good > \"$PIP_CACHE_DIR/good\"",
        "agents": {"ls": {"protocol": "exec", "command": "sh", "args": ["-c", lister]}},
        "defaults": {"agent": "ls"},
        "tasks": [{"id": "t", "prompt": "x"}]
    }));
    let (out, _) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let store = store(&repo);
    let outside = repo.tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("evil"), "evil").unwrap();
    let replace = |name: &str| {
        let p = store.join(name);
        let _ = std::fs::remove_dir_all(&p);
        p
    };
    std::os::unix::fs::symlink(repo.tmp.path().join("nowhere"), replace("pip")).unwrap();
    std::os::unix::fs::symlink(&outside, replace("npm")).unwrap();
    std::fs::write(replace("yarn"), "a file").unwrap();
    let open = replace("uv");
    std::fs::create_dir(&open).unwrap();
    std::fs::write(open.join("evil"), "evil").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    if runner.drops_privileges() {
        chown_tree(&store, UNPRIVILEGED_UID);
    }

    let file = repo.write_tasks(&json!({
        "caches": ["pip", "npm", "yarn", "uv"],
        "agents": {"ls": {"protocol": "exec", "command": "sh", "args": ["-c", lister]}},
        "defaults": {"agent": "ls"},
        "tasks": [{"id": "t", "prompt": "x"}]
    }));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let w = warnings(&report);
    for (name, why) in [
        ("pip", "a link"),
        ("npm", "a link"),
        ("yarn", "not a folder"),
        ("uv", "writable by others"),
    ] {
        assert!(
            w.iter()
                .any(|w| w.contains(&format!("/{name} was {why}; replaced"))),
            "{name}: {w:?}"
        );
    }
    // Recreated empty: the npm link's target and the open folder's file are not seen.
    assert_eq!(
        merged_text(&repo, &report, "seen-t.txt"),
        "[PIP_CACHE_DIR] \n[npm_config_cache] _cacache \n[YARN_CACHE_FOLDER] \n[UV_CACHE_DIR] \n"
    );
    // The folder the link pointed to is untouched.
    assert_eq!(
        std::fs::read_to_string(outside.join("evil")).unwrap(),
        "evil"
    );
    for name in ["pip", "npm", "yarn", "uv"] {
        let m = std::fs::symlink_metadata(store.join(name)).unwrap();
        assert!(m.is_dir() && m.permissions().mode() & 0o022 == 0, "{name}");
    }

    // A third run is quiet: the folders are fanout's again.
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        !warnings(&report).iter().any(|w| w.contains("cache folder")),
        "{:?}",
        warnings(&report)
    );

    let out = repo.fanout(&["clean", "--caches"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("removed the caches"),
        "{}",
        stdout(&out)
    );
    assert!(std::fs::symlink_metadata(repo.path.join(".git/fanout/caches")).is_err());
    assert!(!store.exists(), "{}", store.display());
}
crate::both_ways!(
    broken_cache_folders_are_recreated,
    broken_cache_folders_are_recreated
);

/// A failing `caches_fill` is a warning: the tasks run with the caches as they were.
fn a_failing_fill_is_a_warning(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let file = repo.write_tasks(&json!({
        "caches": ["pip"],
        "caches_fill": "echo half > \"$PIP_CACHE_DIR/half\"; echo broken >&2; exit 3",
        "agents": {"ls": {"protocol": "exec", "command": "sh",
                          "args": ["-c", "ls -A \"$PIP_CACHE_DIR\" > seen.txt"]}},
        "defaults": {"agent": "ls"},
        "tasks": [{"id": "t", "prompt": "x"}]
    }));
    let (out, report) = repo.run(&file, &["--no-readback"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let w = warnings(&report);
    assert!(
        w.iter()
            .any(|w| w.contains("caches_fill") && w.contains("failed") && w.contains("broken")),
        "{w:?}"
    );
    // What it wrote before failing is in the store, as the task sees it.
    assert_eq!(merged_text(&repo, &report, "seen.txt"), "half\n");
    // Its checkout and branch are gone.
    assert!(!repo.branches().iter().any(|b| b.contains("caches-fill")));
    assert!(!repo.worktrees().iter().any(|w| w.contains("caches-fill")));
}
crate::both_ways!(a_failing_fill_is_a_warning, a_failing_fill_is_a_warning);

/// `caches_fill` takes a command like `setup` and needs caches to fill.
#[test]
fn caches_fill_is_validated() {
    let repo = TestRepo::with_files(1);
    let file = repo.write_tasks(&json!({
        "caches_fill": "cargo fetch",
        "tasks": [{"id": "t", "prompt": "x", "agent": "codex"}]
    }));
    let out = repo.fanout(&["validate", "--tasks", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("$.caches_fill") && text.contains("needs `caches`"),
        "{text}"
    );
    let file = repo.write_tasks(&json!({
        "caches": ["cargo"], "caches_fill": 7,
        "tasks": [{"id": "t", "prompt": "x", "agent": "codex"}]
    }));
    let out = repo.fanout(&["validate", "--tasks", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let file = repo.write_tasks(&json!({
        "caches": ["cargo"], "caches_fill": ["cargo", "fetch"],
        "tasks": [{"id": "t", "prompt": "x", "agent": "codex"}]
    }));
    let out = repo.fanout(&["validate", "--tasks", file.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}
