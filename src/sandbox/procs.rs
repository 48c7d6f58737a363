//! Finding the supervisor's descendants through `/proc`.

use std::collections::{HashMap, HashSet};

/// One process as seen in `/proc/<pid>/stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub pid: i32,
    pub ppid: i32,
    pub session: i32,
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
    let _pgrp = rest.next()?;
    let session = rest.next()?.parse().ok()?;
    Some(ProcStat { pid, ppid, session })
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

/// The processes descending from `root` (excluding it): the ppid closure, plus — while the
/// session can still be trusted — the members of `session` (the sandboxed child's session,
/// which catches a process the child created with `CLONE_PARENT`).
pub(crate) fn descendants(procs: &[ProcStat], root: i32, session: Option<i32>) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut found: HashSet<i32> = HashSet::new();
    let mut stack = vec![root];
    if let Some(sid) = session {
        // A session id can only be reused once every member is gone; if a process with that
        // pid exists and is not our own child, the number was reused: ignore the session.
        let reused = procs.iter().any(|p| p.pid == sid && p.ppid != root);
        if !reused {
            stack.extend(procs.iter().filter(|p| p.session == sid).map(|p| p.pid));
        }
    }
    while let Some(pid) = stack.pop() {
        if pid != root && !found.insert(pid) {
            continue;
        }
        if let Some(kids) = children.get(&pid) {
            stack.extend(kids.iter().copied().filter(|k| *k != root));
        }
    }
    found.remove(&root);
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
        assert_eq!(
            parse_stat(s),
            Some(ProcStat {
                pid: 1234,
                ppid: 1,
                session: 1234
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn ppid_closure_and_session() {
        let p = |pid, ppid, session| ProcStat { pid, ppid, session };
        let procs = vec![
            p(1, 0, 1),
            p(10, 1, 10),  // supervisor
            p(11, 10, 11), // sandboxed child (own session)
            p(12, 11, 11),
            p(13, 12, 13), // setsid'd grandchild
            p(14, 1, 11),  // CLONE_PARENT escapee, still in the session
            p(20, 1, 20),  // unrelated
        ];
        assert_eq!(descendants(&procs, 10, Some(11)), vec![11, 12, 13, 14]);
        assert_eq!(descendants(&procs, 10, None), vec![11, 12, 13]);
        // pid 11 reused by an unrelated session leader: the session is not trusted.
        let reused = vec![p(10, 1, 10), p(11, 1, 11), p(15, 11, 11)];
        assert!(descendants(&reused, 10, Some(11)).is_empty());
    }
}
