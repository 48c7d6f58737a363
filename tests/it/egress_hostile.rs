//! Hostile tasks under `--net isolated` against a "remote" host: a second network namespace the
//! test makes (`ip netns add`, a veth pair), listening on TCP 443, TCP 53 and UDP 53, which the
//! test itself reaches from the host. The agent, `setup` and the verify command each try it
//! directly (TCP, UDP, DNS), the host's end of the veth pair, and `CONNECT` through the egress
//! proxy: nothing arrives, the proxy answers 403 and reports the refusals — as root and as an
//! ordinary user, in both kinds of workspace. The namespace and its listener are removed
//! whatever happens.

use crate::support::{git_text, stderr, task, Runner, TestRepo};
use serde_json::json;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The listener the remote host runs: one line per arrival in the log (`tcp 443 <from>`).
const REMOTE_LISTENER: &str = r#"
import socket, sys, threading
log = open(sys.argv[1], "a", buffering=1)
def tcp(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(64)
    while True:
        c, a = s.accept(); log.write("tcp %d %s\n" % (port, a[0])); c.close()
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", port))
    while True:
        d, a = s.recvfrom(2048); log.write("udp %d %s\n" % (port, a[0]))
for f, p in ((tcp, 443), (tcp, 53), (udp, 53)):
    threading.Thread(target=f, args=(p,), daemon=True).start()
threading.Event().wait()
"#;

/// A second network namespace with a host in it, joined to the host's by a veth pair.
struct Remote {
    name: String,
    /// The host's end of the pair and the remote's address.
    host_ip: String,
    ip: String,
    listener: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Remote {
    /// Makes the namespace, the pair and the listener, and waits until the host reaches it.
    fn create() -> Remote {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 60;
        let pid = std::process::id();
        let subnet = format!("10.77.{}", pid % 250);
        let dir = tempfile::tempdir().expect("tmp");
        let mut remote = Remote {
            name: format!("fo-remote-{pid}-{n}"),
            host_ip: format!("{subnet}.{}", n * 4 + 1),
            ip: format!("{subnet}.{}", n * 4 + 2),
            listener: None,
            log: dir.path().join("arrivals.log"),
            _dir: dir,
        };
        let (vh, vr) = (
            format!("foh{}x{n}", pid % 100000),
            format!("for{}x{n}", pid % 100000),
        );
        let ns = remote.name.clone();
        let host_cidr = format!("{}/30", remote.host_ip);
        let remote_cidr = format!("{}/30", remote.ip);
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", &ns],
            vec!["link", "add", &vh, "type", "veth", "peer", "name", &vr],
            vec!["link", "set", &vr, "netns", &ns],
            vec!["addr", "add", &host_cidr, "dev", &vh],
            vec!["link", "set", &vh, "up"],
            vec!["-n", &ns, "addr", "add", &remote_cidr, "dev", &vr],
            vec!["-n", &ns, "link", "set", &vr, "up"],
            vec!["-n", &ns, "link", "set", "lo", "up"],
        ];
        for step in steps {
            if let Err(e) = ip(&step) {
                // Dropping `remote` removes what was made so far.
                panic!("cannot make the remote host: {e}");
            }
        }
        std::fs::write(&remote.log, "").expect("log");
        remote.listener = Some(
            Command::new("ip")
                .args(["netns", "exec", &ns, "python3", "-c", REMOTE_LISTENER])
                .arg(&remote.log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("the remote listener starts"),
        );
        // The control: the test itself reaches the remote on TCP 443 and UDP 53.
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr: std::net::SocketAddr = format!("{}:443", remote.ip).parse().expect("addr");
        while TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err() {
            assert!(Instant::now() < deadline, "the remote host never listened");
            std::thread::sleep(Duration::from_millis(100));
        }
        let udp = UdpSocket::bind("0.0.0.0:0").expect("udp");
        while !remote.arrivals().iter().any(|l| l.starts_with("udp 53")) {
            let _ = udp.send_to(b"control", format!("{}:53", remote.ip));
            assert!(Instant::now() < deadline, "the remote never got UDP");
            std::thread::sleep(Duration::from_millis(100));
        }
        remote
    }

    fn arrivals(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        if let Some(mut c) = self.listener.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Removing the namespace removes the remote's end of the pair, and with it the host's.
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// A bash script that tries every way to the remote and to the host's end of the pair, one
/// line per try: `<what> reached|refused`, `connect <dest> <status line>`.
fn probe_script(remote: &Remote, host_port: u16) -> String {
    let (r, h) = (&remote.ip, &remote.host_ip);
    format!(
        r#"try_tcp() {{ if timeout 5 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; then echo "tcp $1 $2 reached"; else echo "tcp $1 $2 refused"; fi; }}
try_udp() {{ if timeout 5 bash -c "echo hostile >/dev/udp/$1/$2" 2>/dev/null; then echo "udp $1 $2 sent"; else echo "udp $1 $2 refused"; fi; }}
connect() {{
  exec 3<>/dev/tcp/127.0.0.1/3128 || {{ echo "connect $1 no-proxy"; return; }}
  printf 'CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n' "$1" "$1" >&3
  IFS= read -r line <&3; exec 3>&-; echo "connect $1 ${{line%$'\r'}}"
}}
try_tcp {r} 443; try_tcp {r} 53; try_udp {r} 53; try_tcp {h} {host_port}
if timeout 5 getent hosts remote.test >/dev/null 2>&1; then echo "dns reached"; else echo "dns refused"; fi
connect {r}:443; connect {r}:53
"#
    )
}

/// Every phase probes; `setup` and verify fail when anything got through.
fn hostile_tasks(probe: &str) -> serde_json::Value {
    let checked = format!("{{ {probe} }} > \"$TMPDIR/probe.txt\"; ! grep -qvE '(refused|403 Forbidden)$' \"$TMPDIR/probe.txt\"");
    json!({
        "version": 1,
        "agents": {"bash": {"protocol": "exec", "command": "bash",
                            "args": ["-c", "eval \"$FANOUT_PROMPT\""],
                            "connect_ports": [443, 53]}},
        "defaults": {"agent": "bash", "timeout_secs": 120, "max_attempts": 1},
        "tasks": [{"id": "remote", "prompt": format!("{{ {probe} }} > net.txt"),
                   "setup": ["bash", "-c", checked.clone()],
                   "verify": ["bash", "-c", checked]}]
    })
}

fn nothing_reaches_the_remote(runner: Runner) {
    if !crate::support::is_root() {
        eprintln!("skipped: making a second network namespace needs root");
        return;
    }
    let remote = Remote::create();
    let before = remote.arrivals().len();
    let host_side = TcpListener::bind((remote.host_ip.as_str(), 0)).expect("bind the host's end");
    host_side.set_nonblocking(true).expect("nonblocking");
    let host_port = host_side.local_addr().expect("addr").port();
    let repo = TestRepo::with_files(1).run_by(runner);
    let file = repo.write_tasks(&hostile_tasks(&probe_script(&remote, host_port)));
    let (out, report) = repo.run(&file, &["--net", "isolated", "--no-readback"]);
    let err = stderr(&out);
    let t = task(&report, "remote");
    assert_eq!(t["status"], "merged", "{t:#}\n{err}");
    assert_eq!(t["network"], "namespace", "{t:#}");
    let branch = report["integration_branch"].as_str().expect("branch");
    let lines: Vec<String> = git_text(&repo.path, &["show", &format!("{branch}:net.txt")])
        .lines()
        .map(|l| l.trim_end().to_string())
        .collect();
    assert_eq!(lines.len(), 7, "{lines:?}");
    for l in &lines {
        assert!(
            l.ends_with("refused") || l.ends_with("403 Forbidden"),
            "{l}: {lines:?}"
        );
    }
    assert!(
        lines.contains(&format!("connect {}:443 HTTP/1.1 403 Forbidden", remote.ip)),
        "{lines:?}"
    );
    assert_eq!(remote.arrivals()[before..], [] as [String; 0]);
    assert!(host_side.accept().is_err(), "the host's end was reached");
    for phase in ["agent", "setup", "verify"] {
        let want = format!("egress refused ({phase}): {}:443", remote.ip);
        assert!(err.contains(&want), "{want} not on the terminal:\n{err}");
    }
}
crate::every_way!(
    a_hostile_task_reaches_no_remote_host_in_any_phase,
    nothing_reaches_the_remote
);

/// The control: without a namespace (`FANOUT_TEST_NO_NETNS=1` plays a kernel without one) the
/// same agent reaches the remote host on the ports Landlock lets pass — what the test above
/// proves the namespace stops, so its silence means something.
fn without_a_namespace_the_remote_is_reached(runner: Runner) {
    if !crate::support::is_root() {
        eprintln!("skipped: making a second network namespace needs root");
        return;
    }
    let remote = Remote::create();
    let before = remote.arrivals().len();
    let repo = TestRepo::with_files(1).run_by(runner);
    let mut tasks = hostile_tasks(&probe_script(&remote, 9));
    tasks["tasks"][0]["setup"] = json!("true");
    tasks["tasks"][0]["verify"] = json!("true");
    let file = repo.write_tasks(&tasks);
    let (out, report) = crate::support::with_env("FANOUT_TEST_NO_NETNS", "1", || {
        repo.run(&file, &["--net", "isolated", "--no-readback"])
    });
    let t = task(&report, "remote");
    assert_eq!(t["status"], "merged", "{t:#}\n{}", stderr(&out));
    assert_eq!(t["network"], "landlock-ports", "{t:#}");
    let branch = report["integration_branch"].as_str().expect("branch");
    let lines = git_text(&repo.path, &["show", &format!("{branch}:net.txt")]);
    assert!(
        lines.contains(&format!("tcp {} 443 reached", remote.ip)),
        "{lines}"
    );
    let arrived = remote.arrivals()[before..].to_vec();
    assert!(
        arrived.iter().any(|l| l.starts_with("tcp 443")),
        "{arrived:?}"
    );
}
crate::both_ways!(
    without_a_namespace_the_remote_host_is_reached,
    without_a_namespace_the_remote_is_reached
);

/// Real keys of the run below: fanout's environment holds them, nothing of a task may.
const REAL_OPENAI_KEY: &str = "sk-openai-real-key-of-the-run-4242";
const REAL_ANTHROPIC_KEY: &str = "sk-ant-real-key-of-the-run-4242";

/// A spy task running beside a real Codex task (its `claude-code` MCP server started) in the
/// same run: it waits until it sees both processes, then reads every `/proc/<pid>/environ` of
/// theirs it can, and its own environment. It writes `<pid> codex|claude refused|clean|LEAK`.
const SPY: &str = r#"
# Every process's parent (from its stat) and which are Codex or Claude Code (from its argv):
# readable by anyone. Builtins only, so a scan is quick on a busy machine.
snapshot() {
  par=(); kind=()
  local d p line rest argv
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    read -r line < "$d/stat" 2>/dev/null || continue
    rest=${line##*) }; set -- $rest; par[$p]=$2
    argv=(); mapfile -d '' -t argv < "$d/cmdline" 2>/dev/null
    case "${argv[0]##*/}" in
      claude|claude.exe) kind[$p]=claude ;;
      codex) kind[$p]=codex ;;
      node|node.exe) [[ "${argv[1]##*/}" == codex.js ]] && kind[$p]=codex ;;
    esac
  done
}
# The Codex and Claude Code processes of this run (other runs' are not ours).
ours() {
  local p q
  for p in "${!kind[@]}"; do
    q=$p
    while [ -n "$q" ] && [ "$q" -gt 1 ]; do
      [ "$q" = "$run" ] && { echo "$p"; break; }
      q=${par[$q]}
    done
  done
}
snapshot
# This run's `fanout run`: the spy's ancestor whose argv[1] is `run`.
run=$$
while [ -n "$run" ] && [ "$run" -gt 1 ]; do
  mapfile -d '' -t a < "/proc/$run/cmdline"; [ "${a[1]}" = run ] && break; run=${par[$run]}
done
# The keys, spelled so that this script (in FANOUT_PROMPT) does not hold them.
keys=(-e "real-key""-of-the-run" -e "fake-github""-token")
deadline=$((SECONDS + 90))
while [ $SECONDS -lt $deadline ]; do
  snapshot; seen=" "
  for p in $(ours); do seen+="${kind[$p]} "; done
  [[ $seen == *claude* && $seen == *codex* ]] && break
  sleep 0.2
done
{
echo "run $run after ${SECONDS}s"
for p in $(ours); do
  if env=$(tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null); then
    if grep -q "${keys[@]}" <<<"$env"; then echo "$p ${kind[$p]} LEAK"; else echo "$p ${kind[$p]} clean"; fi
  else
    echo "$p ${kind[$p]} refused"
  fi
done
if env | grep -q "${keys[@]}"; then echo "self LEAK"; else echo "self clean"; fi
} > spy.txt
"#;

fn no_process_of_a_task_holds_a_key(runner: Runner) {
    use crate::model_server::{self, ModelServer, Reply};
    let repo = TestRepo::with_files(1).run_by(runner);
    // The command Codex runs is hostile too: from inside Codex's own sandbox domain it reads
    // Codex's environment and its private `CODEX_HOME` (`auth.json`), then keeps the tree
    // alive until the spy is done.
    let inside = r#"h=$(tr '\0' '\n' < /proc/$PPID/environ | sed -n 's/^CODEX_HOME=//p'); { cat "$h/auth.json" 2>/dev/null || echo no-auth-json; } > auth.txt; tr '\0' '\n' < /proc/$PPID/environ | grep -E '^(OPENAI|ANTHROPIC)_' > codex_env.txt; sleep 12"#;
    let server = ModelServer::start(move |req| {
        if req.after_tool_output() {
            Reply::Message("done".into())
        } else {
            Reply::Command(inside.into())
        }
    });
    let anthropic = crate::anthropic_server::AnthropicServer::start(|_| {
        crate::anthropic_server::Reply::Text("ok".into())
    });
    let home = repo.path.parent().expect("tmp").join("codex-home");
    std::fs::create_dir_all(&home).expect("mkdir");
    std::fs::write(
        home.join("config.toml"),
        model_server::codex_config_for_port(server.port()),
    )
    .expect("write");
    // The user's login: a key Codex would use, which no task may see.
    std::fs::write(
        home.join("auth.json"),
        format!(r#"{{"OPENAI_API_KEY": "{REAL_OPENAI_KEY}"}}"#),
    )
    .expect("write");
    let codex = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".agents/codex-0.169.0/node_modules/.bin/codex");
    let claude = crate::support::claude_bin();
    let tasks = json!({
        "version": 1,
        "agents": {
            "codex": {"protocol": "auto", "command": "codex",
                      "mcp_servers": {"claude-code": {"command": claude.display().to_string()}}},
            "spy": {"protocol": "exec", "command": "bash", "args": ["-c", "eval \"$FANOUT_PROMPT\""]}
        },
        "defaults": {"timeout_secs": 180, "max_attempts": 1},
        "tasks": [
            {"id": "codex", "prompt": "Wait.", "agent": "codex"},
            {"id": "spy", "prompt": SPY, "agent": "spy"}
        ]
    });
    let file = repo.write_tasks(&tasks);
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let env: [(&'static str, &'static str); 6] = [
        ("FANOUT_CODEX_BIN", leak(codex.display().to_string())),
        ("CODEX_HOME", leak(home.display().to_string())),
        ("OPENAI_API_KEY", REAL_OPENAI_KEY),
        ("ANTHROPIC_API_KEY", REAL_ANTHROPIC_KEY),
        ("ANTHROPIC_BASE_URL", leak(anthropic.base_url())),
        ("GITHUB_TOKEN", "fake-github-token-of-the-ci-job"),
    ];
    let run = || {
        repo.run(
            &file,
            &["--net", "isolated", "--no-readback", "--jobs", "2"],
        )
    };
    let (out, report) = env.iter().rev().fold(
        Box::new(run) as Box<dyn FnOnce() -> (std::process::Output, serde_json::Value)>,
        |inner, (k, v)| Box::new(move || crate::support::with_env(k, v, inner)),
    )();
    let err = stderr(&out);
    for id in ["codex", "spy"] {
        let t = task(&report, id);
        assert_eq!(t["status"], "merged", "{t:#}\n{err}");
        assert_eq!(t["network"], "namespace", "{t:#}");
    }
    let branch = report["integration_branch"].as_str().expect("branch");
    let spy = git_text(&repo.path, &["show", &format!("{branch}:spy.txt")]);
    eprintln!("the spy saw:\n{spy}");
    assert!(spy.contains(" codex "), "the spy never saw Codex:\n{spy}");
    assert!(
        spy.contains(" claude "),
        "the spy never saw Claude Code:\n{spy}"
    );
    assert!(spy.lines().any(|l| l == "self clean"), "{spy}");
    assert!(
        !spy.contains("run \n"),
        "the spy did not find its run:\n{spy}"
    );
    assert!(!spy.contains("LEAK"), "{spy}");
    let auth = git_text(&repo.path, &["show", &format!("{branch}:auth.txt")]);
    assert!(!auth.contains("real-key-of-the-run"), "{auth}");
    let codex_env = git_text(&repo.path, &["show", &format!("{branch}:codex_env.txt")]);
    assert!(
        codex_env
            .lines()
            .any(|l| l == "OPENAI_API_KEY=fanout-placeholder"),
        "{codex_env}"
    );
    assert!(!codex_env.contains("real-key-of-the-run"), "{codex_env}");
    for r in server.requests() {
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {REAL_OPENAI_KEY}").as_str())
        );
    }
}
crate::both_ways!(
    a_spy_task_finds_no_key_in_codex_or_claude_code,
    no_process_of_a_task_holds_a_key
);

/// A hostile judge: the program fanout runs as Claude Code for read-back and the review is a
/// script that first tries every way out — the host's loopback (a listener the test holds, 443
/// too when it can be bound), the remote host, UDP, DNS, `CONNECT` through the proxy — and
/// says what it got on its stderr, which fanout keeps in the judges' logs. Read-back has no way
/// out at all (not even the proxy); the review reaches only the proxy, which refuses the
/// `CONNECT` (noted in its log), and its environment holds the placeholder key.
fn judges_reach_nothing(runner: Runner) {
    if !crate::support::is_root() {
        eprintln!("skipped: making a second network namespace needs root");
        return;
    }
    let remote = Remote::create();
    let before = remote.arrivals().len();
    let mut host = vec![TcpListener::bind("127.0.0.1:0").expect("bind")];
    host.extend(TcpListener::bind("127.0.0.1:443").ok());
    for l in &host {
        l.set_nonblocking(true).expect("nonblocking");
    }
    let ports: Vec<String> = host
        .iter()
        .map(|l| l.local_addr().expect("addr").port().to_string())
        .collect();
    let anthropic = crate::anthropic_server::AnthropicServer::start(|_| {
        crate::anthropic_server::Reply::Text("APPROVE".into())
    });
    let repo = TestRepo::with_files(1).run_by(runner);
    let bin = tempfile::tempdir().expect("tmp");
    // Named `claude…`: fanout then runs it for the review too.
    let judge = bin.path().join("claude-hostile");
    let r = &remote.ip;
    std::fs::write(
        &judge,
        format!(
            r#"#!/bin/bash
try_tcp() {{ if timeout 5 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; then echo "probe: tcp $1 $2 reached"; else echo "probe: tcp $1 $2 refused"; fi; }}
try_udp() {{ if timeout 5 bash -c "echo hostile >/dev/udp/$1/$2" 2>/dev/null; then echo "probe: udp $1 $2 sent"; else echo "probe: udp $1 $2 refused"; fi; }}
connect() {{
  exec 3<>/dev/tcp/127.0.0.1/3128 2>/dev/null || {{ echo "probe: connect $1 refused"; return; }}
  printf 'CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n' "$1" "$1" >&3
  IFS= read -r line <&3; exec 3>&-; echo "probe: connect $1 ${{line%$'\r'}}"
}}
{{
for p in {ports}; do try_tcp 127.0.0.1 $p; done
try_tcp {r} 443; try_udp {r} 53
if timeout 5 getent hosts remote.test >/dev/null 2>&1; then echo "probe: dns reached"; else echo "probe: dns refused"; fi
connect example.com:443
echo "probe: key ${{ANTHROPIC_API_KEY:-none}}"
}} >&2
exit 1
"#,
            ports = ports.join(" ")
        ),
    )
    .expect("write");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&judge, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    let tasks = json!({
        "version": 1,
        "verifier": {"command": judge.display().to_string(), "args": ["mcp", "serve"]},
        "agents": {"sh": {"protocol": "exec", "command": "sh", "args": ["-c", "echo x > x.txt"]}},
        "defaults": {"agent": "sh", "max_attempts": 1,
                     "review": {"prompt": "Approve.", "timeout_secs": 60}},
        "tasks": [{"id": "judged", "prompt": "write x.txt"}]
    });
    let file = repo.write_tasks(&tasks);
    let base: &'static str = Box::leak(anthropic.base_url().into_boxed_str());
    let (out, report) = crate::support::with_env("ANTHROPIC_BASE_URL", base, || {
        crate::support::with_env("ANTHROPIC_API_KEY", "sk-ant-real-key-of-the-run-77", || {
            repo.run(&file, &["--net", "isolated"])
        })
    });
    let t = task(&report, "judged");
    // The verifier did not start (it is no MCP server): its stderr is in the report.
    let readback = t["readback"]["result"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let review_log =
        PathBuf::from(t["stderr_log"].as_str().expect("stderr log")).with_extension("review.log");
    let review = std::fs::read_to_string(&review_log).unwrap_or_default();
    let ctx = format!(
        "{t:#}\n{}\nread-back:\n{readback}\nreview:\n{review}",
        stderr(&out)
    );
    for (who, log, proxy) in [
        (
            "read-back",
            &readback,
            "probe: connect example.com:443 refused",
        ),
        (
            "review",
            &review,
            "probe: connect example.com:443 HTTP/1.1 403 Forbidden",
        ),
    ] {
        let probes: Vec<&str> = log
            .lines()
            .filter_map(|l| l.find("probe: ").map(|i| &l[i..]))
            .collect();
        assert!(probes.len() >= 6, "{who} never probed:\n{ctx}");
        assert!(probes.contains(&proxy), "{who}: {proxy}\n{ctx}");
        for p in &probes {
            assert!(
                p.ends_with("refused")
                    || p.ends_with("403 Forbidden")
                    || p.starts_with("probe: key"),
                "{who}: {p}\n{ctx}"
            );
        }
    }
    assert!(readback.contains("probe: key none"), "{ctx}");
    assert!(review.contains("probe: key fanout-placeholder"), "{ctx}");
    assert!(
        review.contains("fanout: egress refused (review): example.com:443"),
        "{ctx}"
    );
    // And in the report, with the review gate.
    let gate = t["attempt_history"][0]["gates"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["gate"] == "review"))
        .cloned()
        .unwrap_or_default();
    assert!(
        gate["stderr"]
            .as_str()
            .is_some_and(|s| s.contains("egress refused (review): example.com:443")),
        "{gate:#}\n{ctx}"
    );
    assert_eq!(remote.arrivals()[before..], [] as [String; 0]);
    for l in &host {
        assert!(
            l.accept().is_err(),
            "the host's loopback was reached:\n{ctx}"
        );
    }
    assert_ne!(
        t["status"], "merged",
        "a review that did not happen approved:\n{ctx}"
    );
}
crate::both_ways!(hostile_judges_reach_nothing, judges_reach_nothing);
