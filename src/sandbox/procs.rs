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
