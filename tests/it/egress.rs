//! `--net isolated`: every process of a task (agent, `setup`, verify commands) lives in a
//! network namespace of its own with only a loopback interface. Hostile exec agents try the
//! host's loopback (a listener the test holds, port 443 too when it can be bound), an outside
//! address, UDP and DNS: nothing arrives, as root and as an ordinary user, in both kinds of
//! workspace. Where no namespace can be made, Landlock's port rule applies and says so.

use crate::support::{git_text, stderr, task, Runner, TestRepo};
use serde_json::{json, Value};
use std::net::{TcpListener, UdpSocket};

/// What the test holds on the host's loopback for the agent to try.
struct HostListeners {
    tcp: Vec<TcpListener>,
    udp: Vec<UdpSocket>,
}

impl HostListeners {
    /// A TCP listener on a free port and on 443, a UDP socket on a free port and on 53 (the
    /// fixed ones only when they can be bound: root, and nothing else holds them).
    fn open() -> HostListeners {
        let mut tcp = vec![TcpListener::bind("127.0.0.1:0").expect("bind a TCP port")];
        tcp.extend(TcpListener::bind("127.0.0.1:443").ok());
        let mut udp = vec![UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port")];
        udp.extend(UdpSocket::bind("127.0.0.1:53").ok());
        for l in &tcp {
            l.set_nonblocking(true).expect("nonblocking");
        }
        for s in &udp {
            s.set_nonblocking(true).expect("nonblocking");
        }
        HostListeners { tcp, udp }
    }

    fn tcp_ports(&self) -> Vec<u16> {
        self.tcp.iter().map(|l| port(l.local_addr())).collect()
    }

    fn udp_ports(&self) -> Vec<u16> {
        self.udp.iter().map(|s| port(s.local_addr())).collect()
    }

    /// The ports (`tcp 443`, `udp 53`, …) where something arrived since the test opened them.
    fn reached(&self) -> Vec<String> {
        let mut out = Vec::new();
        for l in &self.tcp {
            if l.accept().is_ok() {
                out.push(format!("tcp {}", port(l.local_addr())));
            }
        }
        let mut buf = [0u8; 512];
        for s in &self.udp {
            if s.recv_from(&mut buf).is_ok() {
                out.push(format!("udp {}", port(s.local_addr())));
            }
        }
        out
    }
}

fn port(addr: std::io::Result<std::net::SocketAddr>) -> u16 {
    addr.expect("local address").port()
}

/// A bash script that tries every way out it is given and writes one line per try to `out`:
/// `tcp 127.0.0.1 N reached|refused`, `udp … sent|refused`, `dns reached|refused`.
fn escape_script(out: &str, tcp: &[u16], udp: &[u16]) -> String {
    let tcp: Vec<String> = tcp.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let udp: Vec<String> = udp.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    format!(
        r#"try_tcp() {{ if timeout 5 bash -c "exec 3<>/dev/tcp/$1/$2 && echo hello >&3" 2>/dev/null; then echo "tcp $1 $2 reached"; else echo "tcp $1 $2 refused"; fi; }}
try_udp() {{ if timeout 5 bash -c "echo hello >/dev/udp/$1/$2" 2>/dev/null; then echo "udp $1 $2 sent"; else echo "udp $1 $2 refused"; fi; }}
{{
for a in {tcp} 1.1.1.1:443 8.8.8.8:53; do try_tcp "${{a%:*}}" "${{a#*:}}"; done
for a in {udp} 8.8.8.8:53; do try_udp "${{a%:*}}" "${{a#*:}}"; done
ns=$(awk '/^nameserver/ {{print $2; exit}}' /etc/resolv.conf 2>/dev/null)
[ -n "$ns" ] && try_udp "$ns" 53
if timeout 5 getent hosts example.com >/dev/null 2>&1; then echo "dns reached"; else echo "dns refused"; fi
}} > {out}"#,
        tcp = tcp.join(" "),
        udp = udp.join(" "),
    )
}

/// One exec task running `script` with bash; `connect_ports` lets Landlock's port rule pass the
/// test's ports, so only the namespace can stop them.
fn escape_tasks(script: &str, verify: &str, ports: &[u16]) -> Value {
    json!({
        "version": 1,
        "agents": {"bash": {"protocol": "exec", "command": "bash",
                            "args": ["-c", "eval \"$FANOUT_PROMPT\""],
                            "connect_ports": ports}},
        "defaults": {"agent": "bash", "timeout_secs": 120, "max_attempts": 1},
        "tasks": [{"id": "escape", "prompt": script,
                   "setup": format!("bash -c '{}'", verify.replace('\'', "'\\''")),
                   "verify": ["bash", "-c", verify]}]
    })
}

/// The lines of `file` the merged task left on the run's integration branch.
fn merged_lines(repo: &TestRepo, report: &Value, file: &str) -> Vec<String> {
    let branch = report["integration_branch"]
        .as_str()
        .expect("integration branch");
    git_text(&repo.path, &["show", &format!("{branch}:{file}")])
        .lines()
        .map(str::to_string)
        .collect()
}

/// A verify (and setup) command that fails when it reaches any of the test's TCP ports.
fn verify_cannot_reach(ports: &[u16]) -> String {
    ports
        .iter()
        .map(|p| format!("! timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/{p}' 2>/dev/null"))
        .collect::<Vec<_>>()
        .join(" && ")
}

fn hostile_agent_is_alone(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let host = HostListeners::open();
    let (tcp, udp) = (host.tcp_ports(), host.udp_ports());
    let file = repo.write_tasks(&escape_tasks(
        &escape_script("net.txt", &tcp, &udp),
        &verify_cannot_reach(&tcp),
        &tcp,
    ));
    let (out, report) = repo.run(&file, &["--net", "isolated", "--no-readback"]);
    let t = task(&report, "escape");
    assert_eq!(t["status"], "merged", "{t:#}\n{}", stderr(&out));
    assert_eq!(t["network"], "namespace", "{t:#}");
    assert_eq!(report["sandbox"]["network"], "namespace", "{report:#}");
    let lines = merged_lines(&repo, &report, "net.txt");
    assert!(
        lines.iter().any(|l| l.starts_with("tcp 127.0.0.1")),
        "{lines:?}"
    );
    for l in &lines {
        assert!(
            l.ends_with("refused") || l.starts_with("udp 127."),
            "{l}: {lines:?}"
        );
    }
    assert_eq!(host.reached(), Vec::<String>::new(), "{lines:?}");
}
crate::every_way!(
    a_hostile_agent_reaches_nothing_beyond_its_loopback,
    hostile_agent_is_alone
);

/// The same agent without a namespace (`FANOUT_TEST_NO_NETNS=1` plays a kernel without one):
/// the report says `landlock-ports`, the supervisor warns, and the ports Landlock lets pass are
/// reached — what the test above proves the namespace stops.
fn fallback_is_the_port_rule(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let host = HostListeners::open();
    let (tcp, udp) = (host.tcp_ports(), host.udp_ports());
    let file = repo.write_tasks(&escape_tasks(
        &escape_script("net.txt", &tcp, &udp),
        "true",
        &tcp,
    ));
    let (out, report) = crate::support::with_env("FANOUT_TEST_NO_NETNS", "1", || {
        repo.run(&file, &["--net", "isolated", "--no-readback"])
    });
    let t = task(&report, "escape");
    assert_eq!(t["status"], "merged", "{t:#}\n{}", stderr(&out));
    assert_eq!(t["network"], "landlock-ports", "{t:#}");
    let log =
        std::fs::read_to_string(t["stderr_log"].as_str().expect("stderr log")).unwrap_or_default();
    assert!(log.contains("no network namespace"), "{log}");
    let lines = merged_lines(&repo, &report, "net.txt");
    let first = format!("tcp 127.0.0.1 {} reached", tcp[0]);
    assert!(lines.contains(&first), "{lines:?}");
    let reached = host.reached();
    assert!(reached.contains(&format!("tcp {}", tcp[0])), "{reached:?}");
    assert!(reached.contains(&format!("udp {}", udp[0])), "{reached:?}");
}
crate::both_ways!(
    without_a_namespace_the_port_rule_applies,
    fallback_is_the_port_rule
);

/// Without `--net`, a task gets its own namespace (`network: namespace`); `--net default` is
/// Landlock's port rule (`landlock-ports`).
#[test]
fn the_default_network_is_a_namespace() {
    let repo = TestRepo::with_files(1);
    let file = repo.write_tasks(&escape_tasks("echo x > x.txt", "true", &[]));
    for (args, want) in [
        (vec!["--no-readback"], "namespace"),
        (vec!["--no-readback", "--net", "default"], "landlock-ports"),
    ] {
        let (out, report) = repo.run(&file, &args);
        let t = task(&report, "escape");
        assert_eq!(t["status"], "merged", "{t:#}\n{}", stderr(&out));
        assert_eq!(t["network"], want, "{args:?}: {t:#}");
        assert_eq!(report["sandbox"]["network"], want, "{report:#}");
    }
}

/// Each task's proxies (three listening sockets under `--net isolated`) close with the task:
/// 150 tasks run under a limit of 200 open files, and no socket is left in `egress/`.
#[test]
fn a_tasks_proxies_close_with_it() {
    use std::os::unix::process::CommandExt;
    let repo = TestRepo::with_files(1);
    let tasks: Vec<Value> = (0..150)
        .map(|i| json!({"id": format!("t{i:03}"), "prompt": "x"}))
        .collect();
    let write = json!({"protocol": "exec", "command": "sh",
        "args": ["-c", "echo x > f_$FANOUT_TASK_ID.txt"]});
    let file = repo.write_tasks(&json!({"version": 1, "agents": {"w": write},
        "defaults": {"agent": "w"}, "tasks": tasks}));
    let mut cmd = repo.fanout_command();
    cmd.current_dir(&repo.path)
        .args(["run", "--no-readback", "--jobs", "4", "-q", "--tasks"])
        .arg(&file);
    // SAFETY: only setrlimit between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 200,
                rlim_max: 200,
            };
            match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let out = cmd.output().expect("fanout runs");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(out.status.success(), "{said}");
    assert!(said.contains("150 merged"), "{said}");
    let runs = repo.path.join(".git/fanout/runs");
    for run in std::fs::read_dir(&runs).expect("runs").flatten() {
        let left: Vec<_> = std::fs::read_dir(run.path().join("egress"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "sockets left: {left:?}");
    }
}

/// The agent's environment is an allow-list: a token in fanout's environment does not reach
/// it (nor its verify command), a variable the profile names in `env_pass` does, and so do
/// the base ones (PATH, HOME) and fanout's own.
fn environment_is_an_allow_list(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let mut tasks = escape_tasks(
        "env > env.txt",
        "! env | grep -q fake-token-of-the-ci-job",
        &[],
    );
    tasks["agents"]["bash"]["env_pass"] = json!(["FANOUT_EGRESS_UNUSED", "PASSED_SETTING"]);
    // The integration gate runs what the agents wrote: it gets no token either.
    tasks["integrate"] = json!({"verify": "! env | grep -q fake-token-of-the-ci-job"});
    let file = repo.write_tasks(&tasks);
    let (out, report) =
        crate::support::with_env("GITHUB_TOKEN", "fake-token-of-the-ci-job", || {
            crate::support::with_env(
                "AWS_SECRET_ACCESS_KEY",
                "fake-token-of-the-ci-job-2",
                || {
                    crate::support::with_env("PASSED_SETTING", "visible-to-the-agent", || {
                        repo.run(&file, &["--net", "isolated", "--no-readback"])
                    })
                },
            )
        });
    let t = task(&report, "escape");
    assert_eq!(t["status"], "merged", "{t:#}\n{}", stderr(&out));
    assert_eq!(report["integration"]["passed"], true, "{report:#}");
    let lines = merged_lines(&repo, &report, "env.txt");
    assert!(
        lines
            .iter()
            .any(|l| l == "PASSED_SETTING=visible-to-the-agent"),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.starts_with("PATH=")), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("FANOUT_TASK_ID=")),
        "{lines:?}"
    );
    for l in &lines {
        assert!(!l.contains("fake-token-of-the-ci-job"), "{l}");
        assert!(
            !l.starts_with("GITHUB_TOKEN=") && !l.starts_with("AWS_SECRET"),
            "{l}"
        );
    }
}
crate::every_way!(
    a_token_in_fanouts_environment_stays_there,
    environment_is_an_allow_list
);

/// fanout's egress proxy reached from inside a namespace: the supervisor's forwarder relays
/// 127.0.0.1:3128 to the proxy's Unix socket. `CONNECT` to a name the allow-list holds reaches
/// the host's echo server; the same server by address, or another port, gets 403 and becomes a
/// refusal; the server itself is not reachable directly. The forwarder dies with the tree.
fn proxy_is_the_only_way_out(runner: Runner) {
    use fanout::egress::{serve, AllowList, HostPort};
    use fanout::sandbox::{EgressLink, Policy, RunAs, POLICY_ENV, STATUS_FILE_ENV};
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("egress.sock");
    let echo = TcpListener::bind("127.0.0.1:0").expect("bind");
    let echo_port = port(echo.local_addr());
    std::thread::spawn(move || {
        for mut s in echo.incoming().flatten() {
            std::thread::spawn(move || {
                if let Ok(mut r) = s.try_clone() {
                    let _ = std::io::copy(&mut r, &mut s);
                }
            });
        }
    });
    let other = HostListeners::open();
    let other_port = other.tcp_ports()[0];
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let allow = AllowList(vec![
        HostPort::parse(&format!("localhost:{echo_port}")).expect("host:port")
    ]);
    let listener = {
        let _in_rt = rt.enter();
        tokio::net::UnixListener::bind(&socket).expect("bind the proxy's socket")
    };
    rt.spawn(serve(listener, std::sync::Arc::new(allow), tx));
    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    let mut policy = Policy::workspace_write(vec![work.clone()]);
    policy.isolate_net = true;
    policy.egress = Some(EgressLink {
        socket: socket.clone(),
        port: 3128,
    });
    if runner == Runner::Invoker && crate::support::is_root() {
        // As fanout does: root's agents run as an ordinary uid.
        policy.run_as = Some(RunAs {
            uid: 65534,
            gid: 65534,
        });
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    // Its own per way: both ways run at once in one test process.
    let marker = format!("egress-marker-{}-{runner:?}", std::process::id());
    let script = format!(
        r#": {marker}
probe() {{
  exec 3<>/dev/tcp/127.0.0.1/3128 || {{ echo "$1 no-forwarder"; return; }}
  printf 'CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n' "$1" "$1" >&3
  IFS= read -r line <&3; echo "$1 ${{line%$'\r'}}"
  if [[ $line == *" 200 "* ]]; then IFS= read -r _ <&3; echo ping >&3; IFS= read -r back <&3; echo "$1 echo:$back"; fi
  exec 3>&-
}}
probe localhost:{echo_port}
probe 127.0.0.1:{echo_port}
probe localhost:{other_port}
if timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/{echo_port}' 2>/dev/null; then echo direct reached; else echo direct refused; fi
"#
    );
    let status = dir.path().join("status.json");
    let mut cmd = if runner.drops_privileges() {
        crate::support::chown_tree(dir.path(), crate::support::UNPRIVILEGED_UID);
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(crate::support::fanout_bin());
        c
    } else {
        std::process::Command::new(crate::support::fanout_bin())
    };
    let out = cmd
        .args(["sandbox-exec", "--", "bash", "-c", &script])
        .env(POLICY_ENV, serde_json::to_string(&policy).expect("policy"))
        .env(STATUS_FILE_ENV, &status)
        .current_dir(&work)
        .output()
        .expect("the supervisor runs");
    let text = crate::support::stdout(&out);
    let err = stderr(&out);
    let status_text = std::fs::read_to_string(&status).unwrap_or_default();
    assert!(
        status_text.contains("\"network\": \"namespace\""),
        "{status_text}\n{err}"
    );
    let allowed = format!("localhost:{echo_port}");
    for want in [
        format!("{allowed} HTTP/1.1 200 Connection established"),
        format!("{allowed} echo:ping"),
        format!("127.0.0.1:{echo_port} HTTP/1.1 403 Forbidden"),
        format!("localhost:{other_port} HTTP/1.1 403 Forbidden"),
        "direct refused".to_string(),
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "{want} missing:\n{text}\n{err}"
        );
    }
    let refused: Vec<String> = rt.block_on(async {
        let mut v = Vec::new();
        while let Ok(Some(r)) =
            tokio::time::timeout(std::time::Duration::from_secs(2), rx.recv()).await
        {
            v.push(r.destination);
        }
        v
    });
    assert_eq!(
        refused,
        vec![
            format!("127.0.0.1:{echo_port}"),
            format!("localhost:{other_port}")
        ]
    );
    assert_eq!(other.reached(), Vec::<String>::new());
    let lingering: Vec<String> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&marker))
        .collect();
    assert!(lingering.is_empty(), "{lingering:?}");
}
crate::both_ways!(
    the_egress_proxy_is_the_only_way_out,
    proxy_is_the_only_way_out
);

/// A bash function that asks the egress proxy (127.0.0.1:3128 in the namespace) for `CONNECT $1`
/// and prints `$1 <status line> <first line of the answer>`.
const CONNECT_FN: &str = r#"connect() {
  exec 3<>/dev/tcp/127.0.0.1/3128 || { echo "$1 no-proxy"; return; }
  printf 'CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n' "$1" "$1" >&3
  IFS= read -r line <&3; line=${line%$'\r'}
  body=
  if [[ $line == *" 200 "* ]]; then IFS= read -r _ <&3; IFS= read -r body <&3; fi
  exec 3>&-
  echo "$1 $line $body"
}
"#;

/// The task file's `network` per phase: `setup` reaches the scripted registry it names through
/// the proxy; the agent (default: model API only) and the verify command (default: none) are
/// refused the same name with 403, and every refusal is a warning (on the terminal) naming
/// the phase and host.
fn phases_reach_what_network_names(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let registry = TcpListener::bind("127.0.0.1:0").expect("bind");
    let reg_port = port(registry.local_addr());
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for mut s in registry.incoming().flatten() {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = std::io::Write::write_all(&mut s, b"hello-from-registry\n");
        }
    });
    let reg = format!("localhost:{reg_port}");
    let setup = format!(
        "{CONNECT_FN}out=$(connect {reg}); echo \"$out\" >&2; [[ $out == *' 200 '*hello-from-registry ]]"
    );
    let agent = format!(
        "{CONNECT_FN}{{ connect {reg}; connect example.com:443; }} > agent.txt; connect example.com:443 >/dev/null"
    );
    let verify = format!("{CONNECT_FN}out=$(connect {reg}); [[ $out == *' 403 '* ]]");
    let tasks = json!({
        "version": 1,
        "agents": {"bash": {"protocol": "exec", "command": "bash",
                            "args": ["-c", "eval \"$FANOUT_PROMPT\""]}},
        "defaults": {"agent": "bash", "timeout_secs": 120, "max_attempts": 1,
                     "network": {"setup": [reg.clone()]}},
        "tasks": [{"id": "phases", "prompt": agent,
                   "setup": ["bash", "-c", setup],
                   "verify": ["bash", "-c", verify]}]
    });
    let file = repo.write_tasks(&tasks);
    let html = repo.path.join("report.html");
    let html_arg = html.to_str().expect("utf-8 path");
    let (out, report) = repo.run(
        &file,
        &["--net", "isolated", "--no-readback", "--html", html_arg],
    );
    let err = stderr(&out);
    let t = task(&report, "phases");
    assert_eq!(t["status"], "merged", "{t:#}\n{err}");
    let lines: Vec<String> = merged_lines(&repo, &report, "agent.txt")
        .iter()
        .map(|l| l.trim_end().to_string())
        .collect();
    assert_eq!(
        lines,
        vec![
            format!("{reg} HTTP/1.1 403 Forbidden"),
            "example.com:443 HTTP/1.1 403 Forbidden".to_string()
        ]
    );
    assert_eq!(
        served.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "only setup got through"
    );
    for want in [
        format!("egress refused (agent): {reg}"),
        "egress refused (agent): example.com:443".to_string(),
        format!("egress refused (verify): {reg}"),
    ] {
        assert!(err.contains(&want), "{want} not on the terminal:\n{err}");
    }
    refusals_are_reported(&report, &out, &html, &reg);
}

/// The refusals of [`phases_reach_what_network_names`] in report.json (once per phase and
/// destination, counted), as `egress_refused` events, in the summary table and on the HTML page.
fn refusals_are_reported(
    report: &Value,
    out: &std::process::Output,
    html: &std::path::Path,
    reg: &str,
) {
    let t = task(report, "phases");
    let (reg_host, reg_port) = reg.rsplit_once(':').expect("host:port");
    let reg_port: u64 = reg_port.parse().expect("port");
    let got: Vec<(String, String, u64, u64)> = t["egress_refused"]
        .as_array()
        .expect("egress_refused")
        .iter()
        .map(|r| {
            (
                r["phase"].as_str().unwrap_or_default().to_string(),
                r["host"].as_str().unwrap_or_default().to_string(),
                r["port"].as_u64().unwrap_or_default(),
                r["count"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    for want in [
        ("agent".to_string(), reg_host.to_string(), reg_port, 1),
        ("agent".to_string(), "example.com".to_string(), 443, 2),
        ("verify".to_string(), reg_host.to_string(), reg_port, 1),
    ] {
        assert!(got.contains(&want), "{want:?} not in {got:?}");
    }
    assert_eq!(got.len(), 3, "{got:?}");
    let events = std::fs::read_to_string(
        std::path::Path::new(report["run_dir"].as_str().expect("run dir")).join("run-events.jsonl"),
    )
    .expect("the run's events");
    let refused: Vec<Value> = events
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "egress_refused")
        .collect();
    assert_eq!(
        refused.len(),
        3,
        "one event per phase and destination: {refused:?}"
    );
    assert!(
        refused.iter().any(|e| e["task"] == "phases"
            && e["phase"] == "agent"
            && e["host"] == "example.com"
            && e["port"] == 443
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("not allowed"))),
        "{refused:?}"
    );
    let line = "network refused: agent → example.com:443 (2 times) — allow it with network.agent";
    let table = crate::support::stdout(out);
    assert!(table.contains(&format!("phases: {line}")), "{table}");
    let page = std::fs::read_to_string(html).expect("the HTML report");
    assert!(
        page.contains("network refused: verify →"),
        "not on the HTML page"
    );
    assert!(page.contains(line), "not on the HTML page");
}
crate::every_way!(
    each_phase_reaches_what_network_names,
    phases_reach_what_network_names
);

/// Not a check: the proxy's added latency per request (scripts/bench.sh runs it). A python
/// client in the namespace makes SAMPLES new connections to the host's echo server through the
/// forwarder and the proxy (CONNECT, one line echoed, close); the test makes as many directly.
/// Prints the medians and p99s, and the difference of the medians.
#[test]
#[ignore]
fn proxy_latency() {
    use fanout::egress::{serve, AllowList, HostPort};
    use fanout::sandbox::{EgressLink, Policy, POLICY_ENV, STATUS_FILE_ENV};
    let samples: usize = std::env::var("SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("egress.sock");
    let echo = TcpListener::bind("127.0.0.1:0").expect("bind");
    let echo_port = port(echo.local_addr());
    std::thread::spawn(move || {
        for mut s in echo.incoming().flatten() {
            std::thread::spawn(move || {
                if let Ok(mut r) = s.try_clone() {
                    let _ = std::io::copy(&mut r, &mut s);
                }
            });
        }
    });
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let allow = AllowList(vec![
        HostPort::parse(&format!("localhost:{echo_port}")).expect("host:port")
    ]);
    let listener = {
        let _in_rt = rt.enter();
        tokio::net::UnixListener::bind(&socket).expect("bind the proxy's socket")
    };
    rt.spawn(serve(listener, std::sync::Arc::new(allow), tx));
    let mut policy = Policy::workspace_write(vec![dir.path().to_path_buf()]);
    policy.isolate_net = true;
    policy.egress = Some(EgressLink { socket, port: 3128 });
    let script = format!(
        r#"
import socket, time
out = []
for _ in range({samples}):
    t = time.perf_counter_ns()
    s = socket.create_connection(("127.0.0.1", 3128))
    s.sendall(b"CONNECT localhost:{echo_port} HTTP/1.1\r\n\r\n")
    buf = b""
    while not buf.endswith(b"\r\n\r\n"):
        buf += s.recv(1)
    s.sendall(b"ping\n")
    got = b""
    while not got.endswith(b"\n"):
        got += s.recv(64)
    s.close()
    out.append((time.perf_counter_ns() - t) // 1000)
print(" ".join(map(str, out)))
"#
    );
    let out = std::process::Command::new(crate::support::fanout_bin())
        .args(["sandbox-exec", "--", "python3", "-c", &script])
        .env(POLICY_ENV, serde_json::to_string(&policy).expect("policy"))
        .env(STATUS_FILE_ENV, dir.path().join("status.json"))
        .output()
        .expect("the supervisor runs");
    let mut proxied: Vec<u64> = crate::support::stdout(&out)
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(proxied.len(), samples, "{}", stderr(&out));
    let mut direct: Vec<u64> = (0..samples)
        .map(|_| {
            let t = std::time::Instant::now();
            let mut s = std::net::TcpStream::connect(("127.0.0.1", echo_port)).expect("connect");
            std::io::Write::write_all(&mut s, b"ping\n").expect("write");
            let mut b = [0u8; 5];
            std::io::Read::read_exact(&mut s, &mut b).expect("read");
            t.elapsed().as_micros() as u64
        })
        .collect();
    proxied.sort_unstable();
    direct.sort_unstable();
    let at = |v: &[u64], q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    println!(
        "egress proxy, per new connection (us): direct median {} p99 {}; through forwarder and proxy median {} p99 {}; added median {:.2} ms",
        at(&direct, 0.5),
        at(&direct, 0.99),
        at(&proxied, 0.5),
        at(&proxied, 0.99),
        (at(&proxied, 0.5) as f64 - at(&direct, 0.5) as f64) / 1000.0
    );
}

/// Not a check: the model route's added latency per request (scripts/bench.sh runs it), to a
/// plain and to a TLS upstream. A python client in the namespace sends SAMPLES requests through
/// the forwarder and the proxy's model route (each on a new connection, as the route closes
/// them); the test sends as many straight to the server (a new connection, and a new TLS
/// session, each). Prints medians and p99s, and the difference of the medians.
#[test]
#[ignore]
fn model_route_latency() {
    use crate::model_server::{ModelServer, Reply, TestCa};
    use fanout::egress::{serve_with, AllowList, ModelRoute};
    use fanout::sandbox::{EgressLink, Policy, POLICY_ENV, STATUS_FILE_ENV};
    let samples: usize = std::env::var("SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new();
    // Read once, when the proxy's TLS client is first built (this test runs alone).
    std::env::set_var("SSL_CERT_FILE", ca.write_pem(dir.path()));
    let answer = |_: &crate::model_server::Request| Reply::Message("ok".into());
    let plain = ModelServer::start(answer);
    let tls = ModelServer::start_tls(&ca, answer);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let request = b"POST /model/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    let mut lines = Vec::new();
    for (label, server) in [("plain", &plain), ("TLS", &tls)] {
        let socket = dir.path().join(format!("{label}.sock"));
        let route =
            ModelRoute::to("/model", &server.base_url(), Some("Bearer k".into())).expect("route");
        let listener = {
            let _in_rt = rt.enter();
            tokio::net::UnixListener::bind(&socket).expect("bind the proxy's socket")
        };
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        rt.spawn(serve_with(
            listener,
            std::sync::Arc::new(AllowList::default()),
            Some(std::sync::Arc::new(route)),
            tx,
        ));
        let mut policy = Policy::workspace_write(vec![dir.path().to_path_buf()]);
        policy.isolate_net = true;
        policy.egress = Some(EgressLink { socket, port: 3128 });
        let script = format!(
            r#"
import socket, time
out = []
for _ in range({samples}):
    t = time.perf_counter_ns()
    s = socket.create_connection(("127.0.0.1", 3128))
    s.sendall({request:?}.encode())
    got = b""
    # Read to the answer's end (the scripted server keeps its side open).
    while b"response.completed" not in got:
        b = s.recv(65536)
        assert b, got
        got += b
    s.close()
    out.append((time.perf_counter_ns() - t) // 1000)
print(" ".join(map(str, out)))
"#,
            request = String::from_utf8_lossy(request)
        );
        let out = std::process::Command::new(crate::support::fanout_bin())
            .args(["sandbox-exec", "--", "python3", "-c", &script])
            .env(POLICY_ENV, serde_json::to_string(&policy).expect("policy"))
            .env(STATUS_FILE_ENV, dir.path().join("status.json"))
            .output()
            .expect("the supervisor runs");
        let mut proxied: Vec<u64> = crate::support::stdout(&out)
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        assert_eq!(proxied.len(), samples, "{}", stderr(&out));
        let mut direct: Vec<u64> = (0..samples)
            .map(|_| direct_request(server.port(), (label == "TLS").then_some(&ca), request))
            .collect();
        proxied.sort_unstable();
        direct.sort_unstable();
        let at = |v: &[u64], q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
        lines.push(format!(
            "{label} upstream: direct median {} p99 {}, through forwarder and proxy median {} p99 {}, added median {:.2} ms",
            at(&direct, 0.5),
            at(&direct, 0.99),
            at(&proxied, 0.5),
            at(&proxied, 0.99),
            (at(&proxied, 0.5) as f64 - at(&direct, 0.5) as f64) / 1000.0
        ));
    }
    println!("egress model route, per request (us): {}", lines.join("; "));
}

/// One request straight to the model server on a new connection (TLS trusting `ca` when
/// given), read to its end; microseconds.
fn direct_request(port: u16, ca: Option<&crate::model_server::TestCa>, request: &[u8]) -> u64 {
    use std::io::{Read, Write};
    let t = std::time::Instant::now();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let mut got = Vec::new();
    let ends = |got: &[u8]| got.windows(18).any(|w| w == b"response.completed");
    match ca {
        None => {
            let mut s = tcp;
            s.write_all(request).expect("write");
            let mut b = [0u8; 65536];
            while !ends(&got) {
                let n = s.read(&mut b).expect("read");
                assert!(n > 0);
                got.extend_from_slice(&b[..n]);
            }
        }
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(rustls::pki_types::CertificateDer::from(ca.ca_der.clone()))
                .expect("root");
            #[allow(deprecated)]
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
            let conn =
                rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("client");
            let mut s = rustls::StreamOwned::new(conn, tcp);
            s.write_all(request).expect("write");
            let mut b = [0u8; 65536];
            while !ends(&got) {
                let n = s.read(&mut b).expect("read");
                assert!(n > 0);
                got.extend_from_slice(&b[..n]);
            }
        }
    }
    t.elapsed().as_micros() as u64
}

/// What a Codex run through the proxy left for the test to check.
struct ProxiedCodex {
    report: Value,
    requests: Vec<crate::model_server::Request>,
}

/// The key the run holds in its environment; the model server must see it on every request.
const REAL_KEY: &str = "sk-real-key-of-the-run-0123456789";

/// Real Codex `version` under `--net isolated` completes a task through the proxy's model route
/// against the scripted Responses server (behind TLS with a test CA when `tls`, which fanout
/// trusts through `SSL_CERT_FILE`). The task's command writes what Codex's own environment held
/// (`/proc/$PPID/environ`) and what its private `CODEX_HOME` lists.
fn codex_through_proxy(version: &str, tls: bool) -> ProxiedCodex {
    use crate::model_server::{self, ModelServer, TestCa};
    let ca = TestCa::new();
    let server = if tls {
        ModelServer::start_tls(&ca, model_server::run_prompt_command)
    } else {
        ModelServer::start_default()
    };
    let home = tempfile::tempdir().expect("tmp");
    std::fs::write(home.path().join("config.toml"), server.codex_config()).expect("write");
    std::fs::write(
        home.path().join("auth.json"),
        r#"{"OPENAI_API_KEY": "sk-auth-json-secret-0123456789"}"#,
    )
    .expect("write");
    let ca_file = ca.write_pem(home.path());
    let codex = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!(".agents/codex-{version}/node_modules/.bin/codex"));
    assert!(
        codex.is_file(),
        "Codex {version} is not installed at {}",
        codex.display()
    );
    let repo = TestRepo::with_files(1);
    let cmd = r#"h=$(tr '\0' '\n' < /proc/$PPID/environ | sed -n 's/^CODEX_HOME=//p'); tr '\0' '\n' < /proc/$PPID/environ | grep -E '^(OPENAI_|SSL_)' > codex_env.txt; ls -a "$h" > codex_home.txt"#;
    // The model server itself, straight from the sandbox: not reachable.
    let cmd = format!(
        "{cmd}; if timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/{}' 2>/dev/null; then echo reached; else echo refused; fi > direct.txt",
        server.port()
    );
    let tasks = json!({
        "version": 1,
        "defaults": {"timeout_secs": 90, "max_attempts": 1},
        "tasks": [{"id": "through-proxy", "prompt": format!("Look around.\nCMD: {cmd}")}]
    });
    let file = repo.write_tasks(&tasks);
    let report_path = repo.report_path();
    let out = repo
        .fanout_command()
        .args(["run", "--repo"])
        .arg(&repo.path)
        .arg("--tasks")
        .arg(&file)
        .args(["--net", "isolated", "--no-readback", "--report"])
        .arg(&report_path)
        .env("FANOUT_CODEX_BIN", &codex)
        .env("CODEX_HOME", home.path())
        .env("OPENAI_API_KEY", REAL_KEY)
        .env("SSL_CERT_FILE", &ca_file)
        .output()
        .expect("fanout runs");
    let err = stderr(&out);
    let report: Value = std::fs::read(&report_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let t = task(&report, "through-proxy");
    assert_eq!(t["status"], "merged", "{t:#}\n{err}\n{}", run_logs(&report));
    assert_eq!(t["network"], "namespace", "{t:#}");
    let requests = server.requests();
    assert!(!requests.is_empty());
    // Every request the model saw came from the proxy: only it holds the real key, and the
    // namespace lets nothing else reach the server.
    for r in &requests {
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {REAL_KEY}").as_str()),
            "{}",
            r.path
        );
    }
    let env = merged_lines(&repo, &report, "codex_env.txt");
    assert!(
        env.iter().any(|l| l == "OPENAI_API_KEY=fanout-placeholder"),
        "{env:?}"
    );
    assert!(!env.iter().any(|l| l.contains("sk-real")), "{env:?}");
    let listing = merged_lines(&repo, &report, "codex_home.txt");
    assert!(listing.iter().any(|l| l == "config.toml"), "{listing:?}");
    assert!(!listing.iter().any(|l| l == "auth.json"), "{listing:?}");
    assert_eq!(merged_lines(&repo, &report, "direct.txt"), vec!["refused"]);
    ProxiedCodex { report, requests }
}

/// Every log of a run, for a failure's message.
fn run_logs(report: &Value) -> String {
    let run_dir = report["run_dir"].as_str().unwrap_or_default().to_string();
    std::fs::read_dir(std::path::Path::new(&run_dir).join("logs"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            format!(
                "{}:\n{}",
                e.path().display(),
                std::fs::read_to_string(e.path()).unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn codex_works_through_the_proxy_with_a_placeholder_key() {
    codex_through_proxy("0.169.0", false);
}

#[test]
fn codex_0171_reaches_a_tls_model_api_through_the_proxy() {
    let done = codex_through_proxy("0.171.0", true);
    assert!(done.requests.len() >= 2, "{:?}", done.requests.len());
}

#[test]
fn codex_0169_reaches_a_tls_model_api_through_the_proxy() {
    codex_through_proxy("0.169.0", true);
}

/// Codex 0.153.4 speaks `mcp-server`; its provider's `base_url` in the private config is the
/// proxy's model route all the same.
#[test]
fn codex_0153_mcp_server_reaches_a_tls_model_api_through_the_proxy() {
    let done = codex_through_proxy("0.153.4", true);
    let t = task(&done.report, "through-proxy");
    assert_eq!(t["agent"]["protocol"], "mcp", "{t:#}");
}

/// A model API whose certificate fanout does not trust (`SSL_CERT_FILE` names another CA)
/// never sees the key: the proxy's TLS handshake fails before any request, and the task fails.
#[test]
fn an_untrusted_tls_model_api_never_sees_the_key() {
    use crate::model_server::{self, ModelServer, TestCa};
    let (ca, other) = (TestCa::new(), TestCa::new());
    let server = ModelServer::start_tls(&ca, model_server::run_prompt_command);
    let home = tempfile::tempdir().expect("tmp");
    std::fs::write(home.path().join("config.toml"), server.codex_config()).expect("write");
    let ca_file = other.write_pem(home.path());
    let codex = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".agents/codex-0.171.0/node_modules/.bin/codex");
    let repo = TestRepo::with_files(1);
    let file = repo.write_tasks(&json!({
        "version": 1,
        "defaults": {"timeout_secs": 60, "max_attempts": 1},
        "tasks": [{"id": "untrusted", "prompt": "Look around.\nCMD: echo x > x.txt"}]
    }));
    let report_path = repo.report_path();
    let out = repo
        .fanout_command()
        .args(["run", "--repo"])
        .arg(&repo.path)
        .arg("--tasks")
        .arg(&file)
        .args(["--net", "isolated", "--no-readback", "--report"])
        .arg(&report_path)
        .env("FANOUT_CODEX_BIN", &codex)
        .env("CODEX_HOME", home.path())
        .env("OPENAI_API_KEY", REAL_KEY)
        .env("SSL_CERT_FILE", &ca_file)
        .output()
        .expect("fanout runs");
    let report: Value = std::fs::read(&report_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let t = task(&report, "untrusted");
    assert_ne!(t["status"], "merged", "{t:#}\n{}", stderr(&out));
    assert!(
        server.requests().is_empty(),
        "the server got a request: {:?}",
        server
            .requests()
            .iter()
            .map(|r| &r.path)
            .collect::<Vec<_>>()
    );
}

/// A JWT-shaped token with `claims` and `signature` (Codex reads a ChatGPT login's claims).
fn jwt(claims: &Value, signature: &str) -> String {
    let enc = |b: &[u8]| {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for c in b.chunks(3) {
            let n = c
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, x)| n | (u32::from(*x) << (16 - 8 * i)));
            for i in 0..=c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    };
    format!(
        "{}.{}.{signature}",
        enc(br#"{"alg":"RS256","typ":"JWT"}"#),
        enc(claims.to_string().as_bytes())
    )
}

/// A scripted OAuth token endpoint: answers a refresh of `refresh` with new tokens, anything
/// else with 400; returns its URL and the bodies it received.
fn token_endpoint(
    refresh: &'static str,
    answer: Value,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use std::io::{BufRead, Read, Write};
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://127.0.0.1:{}/oauth/token", port(l.local_addr()));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut r = std::io::BufReader::new(s);
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0u8; len];
            let _ = r.read_exact(&mut body);
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let ok = body["grant_type"] == "refresh_token" && body["refresh_token"] == refresh;
            log.lock().expect("lock").push(body);
            let (status, text) = match ok {
                true => ("200 OK", answer.to_string()),
                false => (
                    "400 Bad Request",
                    "{\"error\":\"invalid_grant\"}".to_string(),
                ),
            };
            let mut s = r.into_inner();
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    (url, seen)
}

/// A ChatGPT login (`auth.json` with tokens) whose access token has expired: real Codex
/// 0.171.0 completes a task against the scripted ChatGPT backend (TLS) through the proxy. The
/// proxy sends the real access token and account id; on the backend's 401 it refreshes once at
/// the token endpoint (`FANOUT_CODEX_TOKEN_URL`), retries, and writes the new tokens back to
/// the user's `auth.json`. The sandbox's `auth.json` has the same shape and no real token, and
/// Codex's environment no key.
#[test]
fn codex_with_a_chatgpt_login_gets_its_tokens_from_the_proxy() {
    use crate::model_server::{self, ModelServer, TestCa};
    let claims = json!({"email": "user@example.com", "exp": 4_000_000_000u64,
        "https://api.openai.com/auth": {"chatgpt_plan_type": "pro",
                                        "chatgpt_account_id": "acc-test"}});
    let old_access = jwt(&claims, "real-access-signature-1");
    let new_access = jwt(&claims, "real-access-signature-2");
    let want = format!("Bearer {new_access}");
    let ca = TestCa::new();
    let server = ModelServer::start_tls(&ca, move |r| {
        if r.authorization.as_deref() != Some(want.as_str()) {
            return model_server::Reply::Error(401, "token expired".into());
        }
        model_server::run_prompt_command(r)
    });
    let (token_url, refreshes) = token_endpoint(
        "real-refresh-token-1",
        json!({"access_token": new_access, "refresh_token": "real-refresh-token-2",
               "id_token": jwt(&claims, "real-id-signature-2")}),
    );
    let home = tempfile::tempdir().expect("tmp");
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            // The scripted backend reads plain JSON: no zstd request bodies.
            "model = \"gpt-5\"\nchatgpt_base_url = \"https://localhost:{}/backend-api/\"\n[features]\nenable_request_compression = false\n",
            server.port()
        ),
    )
    .expect("write");
    let auth_path = home.path().join("auth.json");
    std::fs::write(
        &auth_path,
        json!({"OPENAI_API_KEY": null, "last_refresh": "2026-12-01T00:00:00Z",
               "tokens": {"id_token": jwt(&claims, "real-id-signature-1"),
                          "access_token": old_access,
                          "refresh_token": "real-refresh-token-1",
                          "account_id": "acc-test"}})
        .to_string(),
    )
    .expect("write");
    let ca_file = ca.write_pem(home.path());
    let codex = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".agents/codex-0.171.0/node_modules/.bin/codex");
    let repo = TestRepo::with_files(1);
    let cmd = r#"h=$(tr '\0' '\n' < /proc/$PPID/environ | sed -n 's/^CODEX_HOME=//p'); tr '\0' '\n' < /proc/$PPID/environ > codex_env.txt; cat "$h/auth.json" > codex_auth.json"#;
    let tasks = json!({
        "version": 1,
        "defaults": {"timeout_secs": 90, "max_attempts": 1},
        "tasks": [{"id": "chatgpt", "prompt": format!("Look around.\nCMD: {cmd}")}]
    });
    let file = repo.write_tasks(&tasks);
    let report_path = repo.report_path();
    let out = repo
        .fanout_command()
        .args(["run", "--repo"])
        .arg(&repo.path)
        .arg("--tasks")
        .arg(&file)
        .args(["--net", "isolated", "--no-readback", "--report"])
        .arg(&report_path)
        .env("FANOUT_CODEX_BIN", &codex)
        .env("CODEX_HOME", home.path())
        .env_remove("OPENAI_API_KEY")
        .env("SSL_CERT_FILE", &ca_file)
        .env("FANOUT_CODEX_TOKEN_URL", &token_url)
        .output()
        .expect("fanout runs");
    let err = stderr(&out);
    let report: Value = std::fs::read(&report_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let t = task(&report, "chatgpt");
    let asked: Vec<String> = server
        .requests()
        .iter()
        .map(|r| format!("{} {:?}", r.path, r.input()))
        .collect();
    assert_eq!(t["status"], "merged", "{t:#}\n{err}\n{asked:#?}");
    let responses: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/backend-api/codex/responses"))
        .collect();
    assert!(responses.len() >= 2, "{}", responses.len());
    for r in &responses {
        assert_eq!(r.account_id.as_deref(), Some("acc-test"), "{}", r.path);
        let a = r.authorization.as_deref().unwrap_or_default();
        assert!(
            a.contains("real-access-signature-"),
            "not a real token: {a}"
        );
    }
    let refreshed = refreshes.lock().expect("lock").clone();
    assert_eq!(refreshed.len(), 1, "one refresh: {refreshed:?}");
    assert_eq!(refreshed[0]["refresh_token"], "real-refresh-token-1");
    let saved: Value =
        serde_json::from_slice(&std::fs::read(&auth_path).expect("auth.json")).expect("json");
    assert_eq!(saved["tokens"]["access_token"], new_access);
    assert_eq!(saved["tokens"]["refresh_token"], "real-refresh-token-2");
    assert_eq!(saved["tokens"]["account_id"], "acc-test");
    let seen = merged_lines(&repo, &report, "codex_auth.json").join("\n");
    let sandbox_auth: Value = serde_json::from_str(&seen).expect("the sandbox's auth.json");
    assert!(sandbox_auth["tokens"]["access_token"].is_string(), "{seen}");
    let env = merged_lines(&repo, &report, "codex_env.txt").join("\n");
    for secret in [
        "real-access-signature",
        "real-refresh-token",
        "real-id-signature",
    ] {
        assert!(
            !seen.contains(secret),
            "{secret} in the sandbox's auth.json: {seen}"
        );
        assert!(!env.contains(secret), "{secret} in Codex's environment");
        assert!(!err.contains(secret), "{secret} on the terminal");
    }
}

/// `--net any` keeps the old behaviour, with a warning in the report.
#[test]
fn net_any_warns() {
    let repo = TestRepo::with_files(1);
    let file = repo.write_tasks(&escape_tasks("echo x > x.txt", "true", &[]));
    let (out, report) = repo.run(&file, &["--net", "any", "--no-readback"]);
    let t = task(&report, "escape");
    assert_eq!(t["status"], "merged", "{t:#}\n{}", stderr(&out));
    assert_eq!(t["network"], "any", "{t:#}");
    assert!(
        report["warnings"].to_string().contains("--net any"),
        "{}",
        report["warnings"]
    );
}

/// A test suite that serves on an ephemeral loopback port and connects to it (supertest,
/// most web frameworks' tests): inside its own namespace it passes, in every phase; under
/// `--net default` Landlock's port rule refuses the bind, as docs/sandbox.md says.
fn local_servers_work_inside_the_namespace(runner: Runner) {
    let repo = TestRepo::with_files(1).run_by(runner);
    let serve = "node -e \"const net=require('net');const s=net.createServer(c=>c.end('ok'));\
                 s.listen(0,'127.0.0.1',()=>{net.connect(s.address().port,'127.0.0.1')\
                 .on('data',d=>{process.exit(String(d)==='ok'?0:1)})\
                 .on('error',()=>process.exit(1))})\"";
    let file = repo.write_tasks(&escape_tasks(
        &format!("{serve} && echo x > x.txt"),
        serve,
        &[],
    ));
    let (out, report) = repo.run(&file, &["--net", "isolated", "--no-readback"]);
    let t = task(&report, "escape");
    assert_eq!(t["status"], "merged", "{t:#}\n{}", stderr(&out));
    assert_eq!(t["network"], "namespace", "{t:#}");
    let (_, report) = repo.run(&file, &["--no-readback", "--net", "default"]);
    assert_ne!(task(&report, "escape")["status"], "merged", "{report:#}");
}
crate::every_way!(
    a_test_suite_serves_on_loopback_inside_the_namespace,
    local_servers_work_inside_the_namespace
);
