/*!
Where and how the judges of a commit run: the read-back verifier, the reviewer and the
diagnosis (`claude -p`). They read what fanout committed — a read-only snapshot fanout writes
from the object store after the commit — never a live workspace, and they run confined.

One folder per run holds everything they touch, `<temp>/fanout-judge-<run>-<random>`:
owner-only (0700), or, when fanout is root, root's with mode 0711 (traversable, not listable,
for the unprivileged uid the judges run as). Inside, `snap/` holds the snapshots (fanout's,
read-only modes) and `home/` the judges' private, writable homes (one per process, fresh,
handed to the judges' uid), each under a random name (the judges' uid may be shared with
other runs' agents: they cannot list these folders, nor guess the names). No process of a task can write any of it: it lies outside
every task's writable folders, and as root it belongs to root.

Every judge runs under the sandbox supervisor: Landlock enforced (unless `--sandbox off`),
reads limited to the system folders, its program's install folders, the snapshots and its
home (the only writable place); TCP as the caller says (read-back: none; `claude -p`: the
model endpoint's port). When the run isolates the network, each judge gets a network namespace
of its own (`verify::judge_net`). As root it runs as [`judge_user`], never as root. Its environment is
built from nothing: `PATH`, the locale, its home — plus what the caller adds.
*/

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::git::snapshot::{self, SnapshotError, Which};
use crate::plan::SandboxOptions;
use crate::process::SpawnSpec;
use crate::sandbox::{NetPolicy, Policy, ReadAccess, RunAs};

#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    #[error("cannot prepare the judges' folder {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the snapshot of the commit")]
    Snapshot(#[from] SnapshotError),
}

/// The uid judges run as when fanout is root: the agents' unprivileged uid today. The one
/// place to change when judges get a uid of their own.
pub fn judge_user(sandbox: &SandboxOptions) -> Option<RunAs> {
    sandbox.run_as
}

/// Variables of fanout's environment a judge keeps (besides what its caller sets).
const KEPT_ENV: &[&str] = &[
    "PATH",
    "LANG",
    "LANGUAGE",
    "TZ",
    crate::sandbox::MIN_ABI_ENV,
    // A test hook of the supervisor (builds with `test-hooks` only): plays a kernel without
    // network namespaces for judges too.
    "FANOUT_TEST_NO_NETNS",
];

/// A run's judges: their folder and how they are started.
pub struct Judges {
    root: PathBuf,
    run_as: Option<RunAs>,
    enforce: bool,
    min_abi: u32,
    self_exe: PathBuf,
    run_id: String,
    next: AtomicU64,
    /// The run isolates the network: judges get a namespace each (issue 19).
    isolate_net: bool,
    /// Whether a network namespace can be made here (probed once, when first needed).
    pub(super) netns_works: std::sync::OnceLock<bool>,
}

/// Removes the judge folders a run left behind (it was killed before it could: `fanout
/// clean`). Only real folders of this process's uid with the run's prefix are touched.
pub fn remove_leftovers(run_id: &str) {
    use std::os::unix::fs::MetadataExt;
    let prefix = format!("fanout-judge-{run_id}-");
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    let me = nix::unistd::geteuid().as_raw();
    for e in entries.flatten() {
        let ours = e.file_name().to_string_lossy().starts_with(&prefix)
            && std::fs::symlink_metadata(e.path()).is_ok_and(|m| m.is_dir() && m.uid() == me);
        if ours {
            let _ = snapshot::remove(&e.path());
        }
    }
}

impl Judges {
    /// Creates the run's judge folder (removed again when this is dropped).
    pub fn create(
        sandbox: &SandboxOptions,
        self_exe: &Path,
        run_id: &str,
    ) -> Result<Judges, JudgeError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| JudgeError::Io { path, source }
        };
        let temp = std::env::temp_dir();
        let run_as = judge_user(sandbox);
        // A fresh, unpredictable name: nobody can have prepared it in the shared temp folder.
        let root = tempfile::Builder::new()
            .prefix(&format!("fanout-judge-{run_id}-"))
            .tempdir_in(&temp)
            .map_err(io(&temp))?
            .keep();
        let judges = Judges {
            root,
            run_as,
            enforce: sandbox.enabled,
            min_abi: sandbox.min_abi,
            self_exe: self_exe.to_path_buf(),
            run_id: run_id.to_string(),
            next: AtomicU64::new(0),
            isolate_net: sandbox.net.isolates(sandbox.enabled),
            netns_works: std::sync::OnceLock::new(),
        };
        // Traversable by the judges' uid only when it is another uid (fanout is root).
        let mode = if run_as.is_some() { 0o711 } else { 0o700 };
        for dir in [judges.root.clone(), judges.snapshots(), judges.homes()] {
            if dir != judges.root {
                std::fs::create_dir(&dir).map_err(io(&dir))?;
            }
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
                .map_err(io(&dir))?;
        }
        // The egress proxies' sockets: fanout's (and its forwarders') only.
        let egress = judges.egress_dir();
        std::fs::create_dir(&egress).map_err(io(&egress))?;
        std::fs::set_permissions(&egress, std::fs::Permissions::from_mode(0o700))
            .map_err(io(&egress))?;
        Ok(judges)
    }

    /// The uid judges run as (`None`: fanout's own, it is not root).
    pub fn run_as(&self) -> Option<RunAs> {
        self.run_as
    }

    /// The folder every snapshot of the run is in (readable by the read-back verifier).
    pub fn snapshots(&self) -> PathBuf {
        self.root.join("snap")
    }

    fn homes(&self) -> PathBuf {
        self.root.join("home")
    }

    /// Whether the run isolates the network (judges then get a namespace each).
    pub fn isolates_net(&self) -> bool {
        self.isolate_net
    }

    /// The folder of the judges' egress proxy sockets (owner-only).
    pub(super) fn egress_dir(&self) -> PathBuf {
        self.root.join("egress")
    }

    /// A fresh socket path for one judge's egress proxy (short: `sun_path` is 108 bytes).
    pub(super) fn egress_socket(&self) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.egress_dir().join(format!("{n}.sock"))
    }

    /// A name nobody can guess: the judges' uid may be shared (the agents' `nobody`), and it
    /// can traverse the folders these names are in, but not list them.
    fn fresh_name(&self, label: &str) -> Result<String, JudgeError> {
        use std::io::Read;
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let label: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let mut random = [0u8; 12];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut random))
            .map_err(|source| JudgeError::Io {
                path: PathBuf::from("/dev/urandom"),
                source,
            })?;
        let random: String = random.iter().map(|b| format!("{b:02x}")).collect();
        Ok(format!("{n}-{label}-{random}"))
    }

    /// Writes `which` of `tree` (blocking: git2 and file writes) into a fresh snapshot.
    pub fn snapshot(
        &self,
        repo_path: &Path,
        tree: git2::Oid,
        which: &Which,
        label: &str,
    ) -> Result<Snapshot, JudgeError> {
        let path = self.snapshots().join(self.fresh_name(label)?);
        let snap = Snapshot { path };
        snapshot::materialise(repo_path, tree, which, &snap.path)?;
        Ok(snap)
    }

    /// A fresh private folder for one judge process (its home, config and temp folder);
    /// handed to the judges' uid when the process starts (it is the policy's writable folder).
    pub fn private_dir(&self, label: &str) -> Result<PrivateDir, JudgeError> {
        let path = self.homes().join(self.fresh_name(label)?);
        let io = |p: &Path| {
            let path = p.to_path_buf();
            move |source| JudgeError::Io { path, source }
        };
        std::fs::create_dir(&path).map_err(io(&path))?;
        let dir = PrivateDir { path };
        std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o700))
            .map_err(io(&dir.path))?;
        let tmp = dir.path.join("tmp");
        std::fs::create_dir(&tmp).map_err(io(&tmp))?;
        Ok(dir)
    }

    /// How to start `program` as a judge: confined as described above, `home` its only
    /// writable folder, `readable` (snapshots) besides the system folders and its program's
    /// folders, `net` its TCP policy. `env` is added to the judge's minimal environment.
    pub fn spawn_spec(&self, judge: Judge<'_>) -> SpawnSpec {
        let mut readable = judge.readable;
        readable.extend(crate::which::program_dirs(&judge.program));
        let policy = Policy {
            enforce: self.enforce,
            writable: vec![judge.home.to_path_buf()],
            read: ReadAccess::Strict { readable },
            net: judge.net,
            min_abi: self.min_abi,
            run_as: self.run_as,
            overlay: None,
            caches: None,
            isolate_net: judge.isolate_net,
            egress: judge.egress,
            hide: Vec::new(),
        };
        let (env, env_remove) = self.environment(judge.home, judge.env);
        SpawnSpec {
            self_exe: self.self_exe.clone(),
            policy,
            program: judge.program,
            args: judge.args,
            cwd: judge.cwd,
            env,
            env_remove,
            stderr_log: judge.stderr_log,
            status_file: judge.status_file,
        }
    }

    /// A judge's environment: nothing of fanout's but [`KEPT_ENV`] (every other inherited
    /// variable is removed), its home, and `extra`.
    fn environment(
        &self,
        home: &Path,
        extra: BTreeMap<String, String>,
    ) -> (BTreeMap<String, String>, Vec<String>) {
        let mut remove = Vec::new();
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy().into_owned();
            let kept = KEPT_ENV.contains(&name.as_str()) || name.starts_with("LC_");
            if !kept {
                remove.push(name);
            }
        }
        let mut env = BTreeMap::new();
        env.insert("HOME".into(), home.display().to_string());
        env.insert("TMPDIR".into(), home.join("tmp").display().to_string());
        // Lets the run's process accounting find its judges (no secret: the run's id).
        env.insert("FANOUT_RUN_ID".into(), self.run_id.clone());
        env.extend(extra);
        remove.retain(|k| !env.contains_key(k));
        (env, remove)
    }
}

impl Drop for Judges {
    fn drop(&mut self) {
        let _ = snapshot::remove(&self.root);
    }
}

/// What one judge process is.
pub struct Judge<'a> {
    pub program: String,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    pub home: &'a Path,
    pub readable: Vec<PathBuf>,
    pub net: NetPolicy,
    /// A network namespace of its own (loopback only), and the egress proxy reached in it.
    pub isolate_net: bool,
    pub egress: Option<crate::sandbox::EgressLink>,
    pub env: BTreeMap<String, String>,
    pub stderr_log: PathBuf,
    pub status_file: PathBuf,
}

/// A snapshot of one commit; removed when dropped.
#[derive(Debug)]
pub struct Snapshot {
    path: PathBuf,
}

impl Snapshot {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let _ = snapshot::remove(&self.path);
    }
}

/// A judge's private folder; removed when dropped.
pub struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = crate::fs_util::remove_tree(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn the_folder_is_private_and_removed() {
        let judges = Judges::create(&SandboxOptions::default(), Path::new("/x/fanout"), "r1")
            .expect("create");
        let root = judges.root.clone();
        let m = std::fs::metadata(&root).expect("meta");
        let want = if judges.run_as().is_some() {
            0o711
        } else {
            0o700
        };
        assert_eq!(m.mode() & 0o777, want);
        let home = judges.private_dir("verifier").expect("home");
        assert_eq!(
            std::fs::metadata(home.path()).expect("meta").mode() & 0o777,
            0o700
        );
        let spec = judges.spawn_spec(Judge {
            program: "sh".into(),
            args: Vec::new(),
            cwd: home.path().to_path_buf(),
            home: home.path(),
            readable: vec![judges.snapshots()],
            net: NetPolicy::None,
            isolate_net: false,
            egress: None,
            env: BTreeMap::from([("X".to_string(), "1".to_string())]),
            stderr_log: root.join("e"),
            status_file: root.join("s"),
        });
        assert_eq!(spec.policy.writable, [home.path().to_path_buf()]);
        assert!(matches!(spec.policy.read, ReadAccess::Strict { .. }));
        assert_eq!(spec.env["X"], "1");
        assert!(spec.env_remove.iter().all(|k| k != "PATH" && k != "X"));
        drop(home);
        drop(judges);
        assert!(!root.exists());
    }
}
