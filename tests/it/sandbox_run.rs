//! The sandbox as `fanout run` applies it: an `exec` agent that tries to escape, fail-closed on
//! a too-old ABI, and `--sandbox off` only when asked, with a warning.

use serde_json::json;

use crate::support::*;

/// An exec agent (Python) that tries every escape and writes what happened into the worktree.
const ESCAPES: &str = r#"
import os, socket, sys, json, subprocess
res = {}
def attempt(name, f):
    try:
        f(); res[name] = "ALLOWED"
    except OSError as e:
        res[name] = "denied %d" % e.errno
main = os.environ["MAIN_REPO"]; outside = os.environ["OUTSIDE"]; other = os.environ["OTHER_WT"]
attempt("write_main_worktree", lambda: open(os.path.join(main, "src/file_00.txt"), "a").write("x"))
attempt("write_main_git_config", lambda: open(os.path.join(main, ".git/config"), "a").write("x"))
attempt("create_hook", lambda: open(os.path.join(main, ".git/hooks/pre-commit"), "w").write("x"))
attempt("write_outside", lambda: open(os.path.join(outside, "secret.txt"), "a").write("x"))
attempt("truncate_outside", lambda: os.truncate(os.path.join(outside, "secret.txt"), 0))
attempt("mkfifo_outside", lambda: os.mkfifo(os.path.join(outside, "fifo")))
attempt("write_tmp", lambda: open("/tmp/fanout-escape-%d" % os.getpid(), "w").write("x"))
attempt("rename_out", lambda: os.rename("src/file_01.txt", os.path.join(outside, "stolen.txt")))
attempt("hardlink_in", lambda: os.link(os.path.join(outside, "secret.txt"), "linked.txt"))
os.symlink(os.path.join(outside, "secret.txt"), "link")
attempt("write_through_symlink", lambda: open("link", "a").write("x"))
attempt("write_other_task", lambda: open(os.path.join(other, "x.txt"), "w").write("x"))
# The supervisor is our parent and fanout its parent: neither may be signalled.
sup = os.getppid()
fanout_pid = int(open("/proc/%d/stat" % sup).read().rsplit(")", 1)[1].split()[1])
attempt("signal_supervisor", lambda: os.kill(sup, 0))
attempt("signal_fanout", lambda: os.kill(fanout_pid, 0))
def bind():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
attempt("bind_tcp", bind)
def connect():
    s = socket.socket(); s.settimeout(2); s.connect(("127.0.0.1", int(os.environ["CLOSED_PORT"])))
attempt("connect_tcp", connect)
# Allowed: its own worktree and TMPDIR.
open("inside.txt", "w").write("ok\n")
open(os.path.join(os.environ["TMPDIR"], "t"), "w").write("ok")
# A daemon that tries to outlive the task.
subprocess.Popen(["setsid", "sh", "-c", "sleep 300 & sleep 300"], cwd=".", start_new_session=True)
json.dump(res, open("escapes.json", "w"), indent=1, sort_keys=True)
"#;

#[test]
fn an_exec_agent_cannot_escape_and_leaves_nothing_running() {
    let repo = TestRepo::with_files(3);
    let outside = repo.tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "secret\n").unwrap();
    let script = repo.tmp.path().join("escape.py");
    std::fs::write(&script, ESCAPES).unwrap();
    // A port nobody listens on is refused by the kernel; under Landlock it is denied first.
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let before = repo.snapshot();
    let other_wt = repo.path.join(".git/fanout/runs");
    let file = repo.write_tasks(&json!({
        "agents": {"escape": {"protocol": "exec", "command": "python3", "args": [script.to_str().unwrap()],
            "env": {"MAIN_REPO": repo.path.to_str().unwrap(), "OUTSIDE": outside.to_str().unwrap(),
                    "OTHER_WT": other_wt.to_str().unwrap(),
                    "CLOSED_PORT": closed_port.to_string()}}},
        // The two run at once (their `paths` overlap), each a neighbour to the other.
        "defaults": {"overlap": "parallel"},
        // The link to outside is a risky change: the tasks name it explicitly to keep it.
        "tasks": [{"id": "escape", "prompt": "try", "agent": "escape", "paths": ["**", "link"]},
                  {"id": "neighbour", "prompt": "sleep", "agent": "escape", "paths": ["**", "link"]}]
    }));
    // Landlock's TCP rule is what this checks (bind denied): `--net default`; inside the
    // namespace of `--net isolated` binding its own loopback is allowed (tests/it/egress.rs).
    let (out, report) = repo.run(&file, &["--no-readback", "--jobs", "2", "--net", "default"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let t = task(&report, "escape");
    assert_eq!(t["sandbox"], "fully_enforced", "{t}");
    assert!(t["sandbox_abi"].as_u64().unwrap() >= 3);
    assert_eq!(report["sandbox"]["mode"], "landlock");
    assert!(
        t["risky"][0]["why"]
            .as_str()
            .unwrap()
            .contains("outside the repository"),
        "{t}"
    );
    let tree = repo.tree_files(report["integration_branch"].as_str().unwrap());
    let results: serde_json::Value = serde_json::from_slice(&tree["escapes.json"]).unwrap();
    for (name, result) in results.as_object().unwrap() {
        assert!(
            result.as_str().unwrap().starts_with("denied"),
            "{name}: {result}"
        );
    }
    assert_eq!(results.as_object().unwrap().len(), 15, "{results}");
    assert_eq!(tree["inside.txt"], b"ok\n");
    assert_eq!(
        std::fs::read(outside.join("secret.txt")).unwrap(),
        b"secret\n"
    );
    assert!(!outside.join("fifo").exists() && !outside.join("stolen.txt").exists());
    assert_eq!(repo.snapshot(), before);
    // The setsid'd daemons died with their task.
    assert!(
        repo.live_processes().is_empty(),
        "{:?}",
        repo.live_processes()
    );
}

#[test]
fn a_too_old_kernel_fails_closed() {
    let repo = TestRepo::with_files(1);
    let file = repo.write_tasks(&json!({
        "agents": {"e": {"protocol": "exec", "command": "sh", "args": ["-c", "echo ran > ran.txt"]}},
        "tasks": [{"id": "t", "prompt": "x", "agent": "e"}]
    }));
    let (out, report) = repo.run(&file, &["--no-readback", "--min-abi", "99"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let t = task(&report, "t");
    assert_eq!(t["status"], "failed");
    assert_eq!(t["sandbox"], "not_enforced");
    let err = t["error"].as_str().unwrap();
    assert!(
        err.contains("ABI") && err.contains("--sandbox off"),
        "{err}"
    );
    assert!(
        t["files"].as_array().unwrap().is_empty(),
        "the agent must not have run: {t}"
    );
}

#[test]
fn sandbox_off_is_explicit_and_warned_about() {
    let repo = TestRepo::with_files(1);
    let file = repo.write_tasks(&json!({
        "agents": {"e": {"protocol": "exec", "command": "sh", "args": ["-c", "echo ran > ran.txt"]}},
        "tasks": [{"id": "t", "prompt": "x", "agent": "e"}]
    }));
    let (out, report) = repo.run(&file, &["--no-readback", "--sandbox", "off"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("UNCONFINED"), "{}", stderr(&out));
    assert_eq!(report["sandbox"]["mode"], "off");
    assert!(report["sandbox"]["warning"]
        .as_str()
        .unwrap()
        .contains("UNCONFINED"));
    assert_eq!(task(&report, "t")["sandbox"], "off");
}
