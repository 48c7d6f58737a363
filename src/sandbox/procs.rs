//! Finding the supervisor's descendants through `/proc`.

use std::collections::{HashMap, HashSet};

/// One process as seen in `/proc/<pid>/stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub pid: i32,
    pub ppid: i32,
}

/// Parses the content of `/proc/<pid>/stat`. The command name (field 2) may contain spaces
/// and parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let mut rest = text[close + 1..].split_ascii_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some(ProcStat { pid, ppid })
}

/// Every process currently visible in `/proc`.
pub(crate) fn all_processes() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let name = e.file_name();
        let name = name.to_str()?;
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let text = std::fs::read_to_string(format!("/proc/{name}/stat")).ok()?;
        parse_stat(&text)
    })
    .collect()
}

/// The processes descending from `root` (excluding it), read from each process's threads'
/// `children` lists: O(the tree) rather than O(every process on the machine), which a
/// supervisor ending after every task would otherwise pay on a busy machine. `None` where
/// the kernel has no such lists (`CONFIG_PROC_CHILDREN`): then [`descendants`] over
/// [`all_processes`].
pub(crate) fn descendants_of(root: i32) -> Option<Vec<i32>> {
    let mut found: HashSet<i32> = HashSet::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            // It ended since its parent listed it: nothing below it to find any more
            // (its children went to the subreaper, whose list the next pass reads).
            if pid == root {
                return None;
            }
            continue;
        };
        for t in threads.flatten() {
            let list = t.path().join("children");
            let text = match std::fs::read_to_string(&list) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && pid == root => {
                    return None;
                }
                Err(_) => continue,
            };
            for k in text.split_ascii_whitespace().filter_map(|k| k.parse().ok()) {
                if k != root && found.insert(k) {
                    stack.push(k);
                }
            }
        }
    }
    let mut v: Vec<i32> = found.into_iter().collect();
    v.sort_unstable();
    Some(v)
}

/// The processes descending from `root` (excluding it), by ppid chains. Because `root` is a
/// child subreaper, every orphan of its tree — including processes that double-forked and
/// called `setsid()` — is reparented to it or to a descendant, so the closure is complete.
/// (`CLONE_PARENT` from a descendant creates a sibling, which is still inside the tree.)
pub(crate) fn descendants(procs: &[ProcStat], root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut found: HashSet<i32> = HashSet::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        if let Some(kids) = children.get(&pid) {
            for &k in kids {
                if k != root && found.insert(k) {
                    stack.push(k);
                }
            }
        }
    }
    let mut v: Vec<i32> = found.into_iter().collect();
    v.sort_unstable();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_odd_command_names() {
        let s = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 0 0";
        assert_eq!(parse_stat(s), Some(ProcStat { pid: 1234, ppid: 1 }));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn children_lists_find_a_grandchild() {
        use std::process::{Command, Stdio};
        // sh starts a sleep and waits: the sleep is this process's grandchild.
        let mut child = Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .stdout(Stdio::null())
            .spawn()
            .expect("sh");
        let me = std::process::id() as i32;
        let sh = child.id() as i32;
        // Other tests of this process start and end children meanwhile: only this one's
        // subtree is looked at.
        let grandchild = || {
            all_processes()
                .into_iter()
                .find(|p| p.ppid == sh)
                .map(|p| p.pid)
        };
        let found = (0..200).find_map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            let d = descendants_of(me)?;
            let g = grandchild()?;
            (d.contains(&sh) && d.contains(&g)).then_some(d)
        });
        let none_listed = descendants_of(me).is_none();
        let _ = Command::new("pkill")
            .args(["-P", &child.id().to_string()])
            .status();
        let _ = child.kill();
        let _ = child.wait();
        let Some(found) = found else {
            // Only where the kernel keeps no children lists: the full scan then serves.
            assert!(none_listed, "the grandchild was never listed");
            return;
        };
        assert!(found.contains(&sh));
    }

    #[test]
    fn ppid_closure() {
        let p = |pid, ppid| ProcStat { pid, ppid };
        let procs = vec![
            p(1, 0),
            p(10, 1),  // supervisor
            p(11, 10), // sandboxed child
            p(12, 11),
            p(13, 12),
            p(14, 10), // reparented orphan
            p(20, 1),  // unrelated
            p(21, 20),
        ];
        assert_eq!(descendants(&procs, 10), vec![11, 12, 13, 14]);
        assert!(descendants(&procs, 13).is_empty());
    }
}
