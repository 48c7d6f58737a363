//! The invoker's credential files under `--net isolated`: a hostile task (agent, `setup` and
//! verify command) run with HOME set to a temp home full of fake credentials holding a unique
//! secret tries every way to read them — `cat`, `ls`, `find`, `grep -r`, copies, symbolic
//! links from its workspace, `/proc/<pid>/root/…` of every process — and writes what it got
//! into files it commits. The secret must appear in no object of the repository, in nothing of
//! the run folder, in no report and in nothing fanout printed; the home must be unchanged. The
//! control runs show the same task reads the secret under `--net default` and where no network
//! namespace can be made, as the docs say.

use crate::support::{stderr, stdout, task, Runner, TestRepo};
use serde_json::json;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Files of the fake home (relative paths), each holding the secret.
const FAKE: &[&str] = &[
    ".codex/auth.json",
    ".codex/config.toml",
    ".claude/.credentials.json",
    ".claude.json",
    ".config/gh/hosts.yml",
    ".git-credentials",
    ".netrc",
    ".aws/credentials",
    ".ssh/id_ed25519",
    ".docker/config.json",
    ".npmrc",
    ".pypirc",
    ".kube/config",
    ".config/gcloud/credentials.db",
    ".cargo/credentials.toml",
];

/// A secret no pattern of fanout's redaction knows (so a leak is not masked away), unique to
/// this test.
fn unique_secret() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("credential canary {} {nanos}", std::process::id())
}

/// The fake home and a separate `CODEX_HOME`, readable by every uid (so that only the hiding,
/// not file modes, keeps a task of another uid out), inside the repository's temp folder.
struct FakeHome {
    home: PathBuf,
    codex_home: PathBuf,
    secret: String,
}

impl FakeHome {
    fn create(repo: &TestRepo) -> FakeHome {
        let secret = unique_secret();
        let home = repo.tmp.path().join("home");
        let codex_home = repo.tmp.path().join("codex-home");
        for f in FAKE {
            let p = home.join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, format!("{f}: {secret}\n")).expect("write");
        }
        std::fs::create_dir_all(&codex_home).expect("mkdir");
        std::fs::write(codex_home.join("auth.json"), format!("{secret}\n")).expect("write");
        open_to_all(repo.tmp.path());
        FakeHome {
            home,
            codex_home,
            secret,
        }
    }

    /// Path → (mode, content) of everything beneath both homes.
    fn state(&self) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
        let mut out = BTreeMap::new();
        for root in [&self.home, &self.codex_home] {
            walk(root, &mut out);
        }
        out
    }
}

fn walk(p: &Path, out: &mut BTreeMap<PathBuf, (u32, Vec<u8>)>) {
    let Ok(meta) = std::fs::symlink_metadata(p) else {
        return;
    };
    let content = if meta.is_file() {
        std::fs::read(p).unwrap_or_default()
    } else {
        Vec::new()
    };
    out.insert(p.to_path_buf(), (meta.permissions().mode(), content));
    if meta.is_dir() {
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            walk(&e.path(), out);
        }
    }
}

/// Folders 0755, files 0644, beneath `dir`.
fn open_to_all(dir: &Path) {
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return;
    };
    if meta.file_type().is_symlink() {
        return;
    }
    let mode = if meta.is_dir() { 0o755 } else { 0o644 };
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode));
    if meta.is_dir() {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            open_to_all(&e.path());
        }
    }
}

/// The agent that reads: every file by name, listings, a search, a copy of the folders.
fn reader_script(h: &FakeHome) -> String {
    let (home, codex) = (h.home.display(), h.codex_home.display());
    let names: Vec<String> = FAKE.iter().map(|f| format!("\"$H/{f}\"")).collect();
    format!(
        r#"H='{home}'; C='{codex}'
{{
for f in {files} "$C/auth.json"; do echo "== $f"; cat "$f" 2>&1; done
ls -laR "$H" "$C" 2>&1
find "$H" "$C" -type f -exec cat {{}} + 2>&1
grep -ra . "$H" "$C" 2>&1
tar -cf copied-home.tar -C "$H" . 2>&1; tar -cf copied-codex.tar -C "$C" . 2>&1
# Writes must not reach the home either.
echo pwned > "$H/.netrc" 2>&1; rm -rf "$H/.ssh" 2>&1; touch "$H/new-file" 2>&1
echo reader-done
}} > loot.txt 2>&1
cat loot.txt >&2
"#,
        files = names.join(" ")
    )
}

/// The agent that goes around: symbolic links from its workspace, `/proc/<pid>/root/…` of
/// itself, its parent, pid 1 and every process it can see, a hard link, `/proc/self/cwd`.
fn linker_script(h: &FakeHome) -> String {
    let home = h.home.display();
    format!(
        r#"H='{home}'
mkdir -p links
for f in .netrc .ssh/id_ed25519 .codex/auth.json .claude/.credentials.json; do
  ln -s "$H/$f" "links/$(echo "$f" | tr / _)"
done
ln -s "$H" links/home
ln "$H/.netrc" hard-netrc 2>/dev/null
{{
for l in links/*; do echo "== $l"; cat "$l" 2>&1; done
cat links/home/.netrc links/home/.aws/credentials 2>&1
for p in self $$ $PPID 1 $(ls /proc | grep -E '^[0-9]+$'); do
  for f in .netrc .ssh/id_ed25519 .codex/auth.json .git-credentials; do
    cat "/proc/$p/root$H/$f" 2>/dev/null && echo "(read $f via /proc/$p/root: $(cat /proc/$p/comm 2>&1), $(stat -c '%F %s' "/proc/$p/root$H/$f" 2>&1))"
  done
done
cat "/proc/self/cwd/../../../../../../../..$H/.netrc" 2>&1
echo linker-done
}} > linked.txt 2>&1
cat linked.txt
"#
    )
}

/// `setup` and verify read too: the setup writes what it got into its log and its output, the
/// verify command fails the task when a file had content.
fn tasks(h: &FakeHome) -> serde_json::Value {
    let home = h.home.display();
    let setup =
        format!("cat '{home}/.netrc' '{home}/.ssh/id_ed25519' 2>&1 | tee setup-loot.txt >&2; true");
    let verify = format!(
        "for f in '{home}/.netrc' '{home}/.ssh/id_ed25519' '{home}/.codex/auth.json'; do test ! -s \"$f\" || exit 1; done"
    );
    json!({
        "version": 1,
        "agents": {"bash": {"protocol": "exec", "command": "bash",
                            "args": ["-c", "eval \"$FANOUT_PROMPT\""]}},
        "defaults": {"agent": "bash", "timeout_secs": 120, "max_attempts": 1},
        "tasks": [
            {"id": "reader", "prompt": reader_script(h),
             "setup": ["bash", "-c", setup], "verify": ["bash", "-c", verify]},
            {"id": "linker", "prompt": linker_script(h)}
        ]
    })
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Runs fanout with `HOME` and `CODEX_HOME` the fake ones.
fn run_with_home(
    repo: &TestRepo,
    h: &FakeHome,
    file: &Path,
    extra: &[&str],
) -> (std::process::Output, serde_json::Value) {
    let (home, codex) = (
        leak(h.home.display().to_string()),
        leak(h.codex_home.display().to_string()),
    );
    crate::support::with_env("HOME", home, || {
        crate::support::with_env("CODEX_HOME", codex, || repo.run(file, extra))
    })
}

/// Every object of the repository's store (reachable or not), as bytes.
fn all_objects(repo: &Path) -> Vec<u8> {
    crate::support::git(repo, &["cat-file", "--batch-all-objects", "--batch"]).stdout
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Files beneath `dir` (links not followed) whose bytes hold `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return out;
    };
    if meta.is_file() {
        if std::fs::read(dir).is_ok_and(|b| contains(&b, needle)) {
            out.push(dir.to_path_buf());
        }
    } else if meta.is_dir() {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            out.extend(files_holding(&e.path(), needle));
        }
    }
    out
}

/// `path` as the commit of task `id` holds it.
fn committed(report: &serde_json::Value, repo: &TestRepo, id: &str, path: &str) -> String {
    let t = task(report, id);
    let commit = t["commit"]
        .as_str()
        .unwrap_or_else(|| panic!("no commit: {t:#}"));
    crate::support::git_text(&repo.path, &["show", &format!("{commit}:{path}")])
}

fn hostile_tasks_read_no_credential(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let h = FakeHome::create(&repo);
    let before = h.state();
    let file = repo.write_tasks(&tasks(&h));
    let (out, report) = run_with_home(&repo, &h, &file, &["--net", "isolated", "--no-readback"]);
    let (o, e) = (stdout(&out), stderr(&out));
    // The reader passes its verify command (which fails on a credential file with content);
    // the linker's links out of its workspace are risky changes, its commit is kept.
    let r = task(&report, "reader");
    assert_eq!(r["status"], "merged", "{r:#}\n{e}");
    for id in ["reader", "linker"] {
        assert_eq!(task(&report, id)["network"], "namespace", "{report:#}");
    }
    // The tasks did run their tries.
    let loot = committed(&report, &repo, "reader", "loot.txt");
    assert!(loot.contains("reader-done"), "{loot}");
    assert!(loot.contains("== "), "{loot}");
    let linked = committed(&report, &repo, "linker", "linked.txt");
    assert!(linked.contains("linker-done"), "{linked}");
    if std::env::var_os("CRED_TEST_SHOW").is_some() {
        eprintln!("{loot}\n{linked}");
    }
    // Nowhere: not in any object, not in the run folder (logs, events, state, workspaces),
    // not in the report, not on the terminal.
    let s = &h.secret;
    assert!(
        !contains(&all_objects(&repo.path), s),
        "the secret is in a git object"
    );
    let leaked = files_holding(&repo.path.join(".git"), s);
    assert!(leaked.is_empty(), "the secret is in {leaked:?}");
    let report_text = std::fs::read(repo.report_path()).expect("report");
    assert!(!contains(&report_text, s), "the secret is in the report");
    assert!(
        !o.contains(s.as_str()) && !e.contains(s.as_str()),
        "printed:\n{o}\n{e}"
    );
    // And the home is as it was.
    assert_eq!(h.state(), before, "the fake home changed");
}
crate::every_way!(
    hostile_tasks_read_no_credential_of_the_invoker,
    hostile_tasks_read_no_credential
);

/// The controls: the same tasks read the secret where the docs say nothing is hidden — under
/// `--net default`, and under `--net isolated` where no namespace can be made.
fn without_a_namespace_credentials_are_readable(runner: Runner) {
    for (extra, no_netns, network) in [
        (["--net", "default", "--no-readback"], "0", "landlock-ports"),
        (
            ["--net", "isolated", "--no-readback"],
            "1",
            "landlock-ports",
        ),
    ] {
        let repo = TestRepo::with_files(1).run_by(runner);
        let h = FakeHome::create(&repo);
        let mut t = tasks(&h);
        // Only the reader, without its verify command (which fails when the files have content).
        t["tasks"] = json!([{"id": "reader", "prompt": reader_script(&h)}]);
        let file = repo.write_tasks(&t);
        let (out, report) = crate::support::with_env("FANOUT_TEST_NO_NETNS", no_netns, || {
            run_with_home(&repo, &h, &file, &extra)
        });
        let r = task(&report, "reader");
        assert_eq!(r["status"], "merged", "{r:#}\n{}", stderr(&out));
        assert_eq!(r["network"], network, "{r:#}");
        let loot = committed(&report, &repo, "reader", "loot.txt");
        assert!(loot.contains(&h.secret), "{extra:?}: not read:\n{loot}");
    }
}
crate::both_ways!(
    without_a_namespace_credentials_are_readable_as_documented,
    without_a_namespace_credentials_are_readable
);

/// `fanout sandbox --net isolated` hides them too; `--net default` does not.
fn fanout_sandbox_hides_them_under_isolation(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let h = FakeHome::create(&repo);
    let netrc = h.home.join(".netrc");
    let run = |net: &str| {
        let mut cmd = repo.fanout_command();
        cmd.env("HOME", &h.home)
            .arg("sandbox")
            .args(["--net", net, "--"])
            .arg("cat")
            .arg(&netrc)
            .current_dir(&repo.path);
        let out = cmd.output().expect("fanout sandbox");
        (stdout(&out), stderr(&out))
    };
    let (o, e) = run("isolated");
    assert!(e.contains("network: namespace"), "{e}");
    assert!(!o.contains(&h.secret), "read under isolation: {o}");
    let (o, e) = run("default");
    assert!(o.contains(&h.secret), "{o}\n{e}");
    // A credential folder that holds the writable folder stays visible, with a warning; the
    // others are still covered.
    let work = h.home.join(".kube/work");
    std::fs::create_dir_all(&work).expect("mkdir");
    crate::support::chown_tree(&work, owner());
    let mut cmd = repo.fanout_command();
    cmd.env("HOME", &h.home)
        .arg("sandbox")
        .args(["--net", "isolated", "-w"])
        .arg(&work)
        .args(["--", "sh", "-c"])
        .arg(format!(
            "cat ../config; echo made > made.txt; cat '{}'",
            netrc.display()
        ))
        .current_dir(&work);
    let out = cmd.output().expect("fanout sandbox");
    let (o, e) = (stdout(&out), stderr(&out));
    assert!(
        e.contains("not hiding the credential path") && e.contains(".kube"),
        "{e}"
    );
    assert_eq!(
        o.matches(h.secret.as_str()).count(),
        1,
        "only .kube/config:\n{o}\n{e}"
    );
    assert!(o.starts_with(".kube/config: "), "{o}");
    assert!(work.join("made.txt").is_file(), "{e}");
}

/// Who may write a folder the test makes for `fanout sandbox -w`: the uid its command runs as.
fn owner() -> u32 {
    if crate::support::is_root() {
        // As root the command runs as `nobody`; the unprivileged pass is that uid too.
        crate::support::UNPRIVILEGED_UID
    } else {
        nix::unistd::geteuid().as_raw()
    }
}
crate::both_ways!(
    fanout_sandbox_hides_credentials_under_isolation,
    fanout_sandbox_hides_them_under_isolation
);

/// A credential folder that holds the repository (here: `DOCKER_CONFIG` naming the test's temp
/// folder) is left visible — the task still runs and merges — and the run says so.
fn a_credential_folder_holding_the_run_stays_visible(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let h = FakeHome::create(&repo);
    let mut t = tasks(&h);
    t["tasks"] = json!([{"id": "reader", "prompt": reader_script(&h)}]);
    let file = repo.write_tasks(&t);
    let holder = leak(repo.tmp.path().display().to_string());
    let (out, report) = crate::support::with_env("DOCKER_CONFIG", holder, || {
        run_with_home(&repo, &h, &file, &["--net", "isolated", "--no-readback"])
    });
    let e = stderr(&out);
    let r = task(&report, "reader");
    assert_eq!(r["status"], "merged", "{r:#}\n{e}");
    assert!(
        e.contains("credential paths left readable to the agent") && e.contains(holder),
        "{e}"
    );
    let visible = &r["agent"]["sandbox"]["credentials_visible"];
    assert_eq!(visible, &json!([holder]), "{r:#}");
    // The rest of the list is still covered.
    let loot = committed(&report, &repo, "reader", "loot.txt");
    assert!(!loot.contains(&h.secret), "{loot}");
}
crate::both_ways!(
    a_credential_folder_holding_the_run_stays_visible_with_a_warning,
    a_credential_folder_holding_the_run_stays_visible
);

/// A Codex profile whose own `env` names the `CODEX_HOME` fanout copies from: real Codex runs
/// the command the scripted model gives it, which reads that folder's login. Fanout still uses
/// the login (the proxy sends the key upstream); the command finds the folder empty.
fn a_profiles_codex_home_is_hidden(runner: Runner) {
    use crate::model_server::{self, ModelServer, Reply};
    let repo = TestRepo::with_files(1).run_by(runner);
    let h = FakeHome::create(&repo);
    let key = format!("sk-{}", h.secret.replace(' ', "-"));
    let source = repo.tmp.path().join("profile-codex-home");
    std::fs::create_dir_all(&source).expect("mkdir");
    let read = format!(
        "{{ cat '{s}/auth.json'; ls -la '{s}'; cat '{home}/.codex/auth.json'; }} > got.txt 2>&1",
        s = source.display(),
        home = h.home.display()
    );
    let server = ModelServer::start(move |req| {
        if req.after_tool_output() {
            Reply::Message("done".into())
        } else {
            Reply::Command(read.clone())
        }
    });
    std::fs::write(
        source.join("config.toml"),
        model_server::codex_config_for_port(server.port()),
    )
    .expect("write");
    std::fs::write(
        source.join("auth.json"),
        format!(r#"{{"OPENAI_API_KEY": "{key}"}}"#),
    )
    .expect("write");
    open_to_all(repo.tmp.path());
    let codex =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".agents/codex-0.169.0/node_modules/.bin/codex");
    let file = repo.write_tasks(&json!({
        "version": 1,
        "agents": {"codex": {"protocol": "auto", "command": "codex",
                             "env": {"CODEX_HOME": source.display().to_string()}}},
        "defaults": {"agent": "codex", "timeout_secs": 180, "max_attempts": 1},
        "tasks": [{"id": "codex", "prompt": "Read the login."}]
    }));
    let (out, report) = crate::support::with_env(
        "FANOUT_CODEX_BIN",
        leak(codex.display().to_string()),
        || {
            crate::support::with_env("HOME", leak(h.home.display().to_string()), || {
                repo.run(&file, &["--net", "isolated", "--no-readback"])
            })
        },
    );
    let t = task(&report, "codex");
    assert_eq!(t["status"], "merged", "{t:#}\n{}", stderr(&out));
    assert_eq!(t["network"], "namespace", "{t:#}");
    let got = committed(&report, &repo, "codex", "got.txt");
    assert!(got.contains("No such file"), "the command did run:\n{got}");
    assert!(!got.contains(&h.secret.replace(' ', "-")), "{got}");
    assert!(
        !contains(&all_objects(&repo.path), &h.secret.replace(' ', "-")),
        "the key is in a git object"
    );
    // fanout did use the login: the model server saw the key.
    let auth = format!("Bearer {key}");
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.authorization.as_deref() == Some(auth.as_str())),
        "the proxy never sent the key"
    );
}
crate::both_ways!(
    a_profiles_own_codex_home_is_hidden_from_its_commands,
    a_profiles_codex_home_is_hidden
);
