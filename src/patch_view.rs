/*!
A task's change as people read it: the patch saved at collection (else the task commit), coloured
for a terminal, summed up per file (`--stat`) or as changed words (`--word-diff`). `fanout diff`
and the MCP server's `fanout_diff` both show it.
*/

use similar::{ChangeTag, TextDiff};

use crate::ids::task_branch;

/// Why a task's change cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error(transparent)]
    Lookup(#[from] crate::lookup::LookupError),
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Git(#[from] crate::git::GitError),
}

const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const CYAN: &str = "\x1b[36m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// A task's patch: the one saved at collection (exactly what was verified), else the task
/// commit on its branch; empty when there is neither.
pub fn task_patch(rt: &crate::lookup::RunTask) -> Result<Vec<u8>, PatchError> {
    let (run, task) = (&rt.run, &rt.task);
    let patch_file = crate::run_dir::RunDir::new(&rt.run_dir)
        .task(task.as_str())
        .patch;
    match std::fs::read(&patch_file) {
        Ok(p) => Ok(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let branch = task_branch(run, task);
            let commit = rt
                .repo
                .repo
                .find_branch(&branch, git2::BranchType::Local)
                .ok()
                .and_then(|b| b.get().peel_to_commit().ok());
            // A task branch holds the start commit until fanout commits the task on top of it.
            Ok(match commit.filter(|c| is_task_commit(c.message_bytes())) {
                Some(commit) => {
                    let parent = commit
                        .parent(0)
                        .map(|p| p.tree_id())
                        .unwrap_or(commit.tree_id());
                    crate::git::collect::summarize(&rt.repo.repo, parent, commit.tree_id())?.1
                }
                None => Vec::new(),
            })
        }
        Err(source) => Err(PatchError::Read {
            path: patch_file.display().to_string(),
            source,
        }),
    }
}

/// One task's change for `fanout mcp`: the patch (or its `--stat` form, uncoloured) and the
/// task's status in `state.json`. Errors are the messages `fanout diff` prints.
pub fn task_diff_text(
    repo: &std::path::Path,
    run: &str,
    task: &str,
    stat: bool,
) -> Result<(String, Option<String>), PatchError> {
    let rt = crate::lookup::run_task(repo, run, task)?;
    let patch = task_patch(&rt)?;
    let text = if patch.is_empty() {
        String::new()
    } else if stat {
        String::from_utf8_lossy(&render_stat(&patch, false)).into_owned()
    } else {
        String::from_utf8_lossy(&patch).into_owned()
    };
    Ok((text, rt.status))
}

pub fn is_task_commit(message: &[u8]) -> bool {
    message
        .windows(b"Fanout-Task:".len())
        .any(|w| w == b"Fanout-Task:")
}

/// What one line of a patch is; headers and hunk bodies are told apart by position, so a
/// removed line reading `-- x` is not taken for a `--- a/x` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    FileStart,
    Header,
    HunkHeader,
    Added,
    Removed,
    Context,
    /// `\ No newline at end of file`, binary data and anything else.
    Other,
}

/// Splits a patch into lines (with their `\n`) and classifies them.
fn classify(patch: &[u8]) -> impl Iterator<Item = (Line, &[u8])> {
    let mut in_hunk = false;
    patch.split_inclusive(|&b| b == b'\n').map(move |line| {
        let kind = if line.starts_with(b"diff ") {
            in_hunk = false;
            Line::FileStart
        } else if line.starts_with(b"@@") {
            in_hunk = true;
            Line::HunkHeader
        } else if !in_hunk {
            Line::Header
        } else {
            match line.first() {
                Some(b'+') => Line::Added,
                Some(b'-') => Line::Removed,
                Some(b' ') => Line::Context,
                _ => Line::Other,
            }
        };
        (kind, line)
    })
}

/// Writes `line` (which may end in `\n`) wrapped in `code`, keeping the newline outside.
fn painted(out: &mut Vec<u8>, code: Option<&str>, line: &[u8]) {
    let (body, nl) = match line.strip_suffix(b"\n") {
        Some(b) => (b, &b"\n"[..]),
        None => (line, &b""[..]),
    };
    match code {
        Some(c) if !body.is_empty() => {
            out.extend_from_slice(c.as_bytes());
            out.extend_from_slice(body);
            out.extend_from_slice(RESET.as_bytes());
        }
        _ => out.extend_from_slice(body),
    }
    out.extend_from_slice(nl);
}

pub fn render_patch(patch: &[u8], color: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(patch.len());
    for (kind, line) in classify(patch) {
        let code = match kind {
            _ if !color => None,
            Line::FileStart | Line::Header => Some(BOLD),
            Line::HunkHeader => Some(CYAN),
            Line::Added => Some(GREEN),
            Line::Removed => Some(RED),
            Line::Context | Line::Other => None,
        };
        painted(&mut out, code, line);
    }
    out
}

/// `git diff --word-diff`-like output: hunk bodies without the `+`/`-`/` ` column; a run of
/// removed lines followed by added lines is diffed word by word.
pub fn render_word_diff(patch: &[u8], color: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(patch.len());
    let mut removed = String::new();
    let mut added = String::new();
    for (kind, line) in classify(patch) {
        match kind {
            Line::Removed if added.is_empty() => {
                removed.push_str(&String::from_utf8_lossy(&line[1..]));
                continue;
            }
            Line::Added => {
                added.push_str(&String::from_utf8_lossy(&line[1..]));
                continue;
            }
            // The marker belongs to the line before it, which is already in a block.
            Line::Other if !(removed.is_empty() && added.is_empty()) => continue,
            _ => {}
        }
        flush_words(&mut out, &mut removed, &mut added, color);
        match kind {
            // A removal right after additions starts the next block.
            Line::Removed => removed.push_str(&String::from_utf8_lossy(&line[1..])),
            Line::Context => out.extend_from_slice(&line[1..]),
            Line::FileStart | Line::Header => painted(&mut out, color.then_some(BOLD), line),
            Line::HunkHeader => painted(&mut out, color.then_some(CYAN), line),
            Line::Added | Line::Other => out.extend_from_slice(line),
        }
    }
    flush_words(&mut out, &mut removed, &mut added, color);
    out
}

fn flush_words(out: &mut Vec<u8>, removed: &mut String, added: &mut String, color: bool) {
    if removed.is_empty() && added.is_empty() {
        return;
    }
    let diff = TextDiff::from_words(removed.as_str(), added.as_str());
    // Neighbouring tokens of one kind make one span: `[-two words-]`, not `[-two-][- -]…`.
    let mut span: Option<(ChangeTag, String)> = None;
    for change in diff.iter_all_changes() {
        match &mut span {
            Some((tag, text)) if *tag == change.tag() => text.push_str(change.value()),
            _ => {
                if let Some((tag, text)) = span.take() {
                    word_span(out, tag, &text, color);
                }
                span = Some((change.tag(), change.value().to_string()));
            }
        }
    }
    if let Some((tag, text)) = span {
        word_span(out, tag, &text, color);
    }
    // A block must end its last line even when the file had no final newline.
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    removed.clear();
    added.clear();
}

/// One changed span; markers never enclose a newline, so every output line stays balanced.
fn word_span(out: &mut Vec<u8>, tag: ChangeTag, text: &str, color: bool) {
    let (open, close) = match (tag, color) {
        (ChangeTag::Equal, _) => ("", ""),
        (ChangeTag::Delete, true) => (RED, RESET),
        (ChangeTag::Insert, true) => (GREEN, RESET),
        (ChangeTag::Delete, false) => ("[-", "-]"),
        (ChangeTag::Insert, false) => ("{+", "+}"),
    };
    for piece in text.split_inclusive('\n') {
        let (body, nl) = match piece.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (piece, ""),
        };
        if !body.is_empty() {
            out.extend_from_slice(open.as_bytes());
            out.extend_from_slice(body.as_bytes());
            out.extend_from_slice(close.as_bytes());
        }
        out.extend_from_slice(nl.as_bytes());
    }
}

/// One file of a `--stat`.
#[derive(Debug, Default, PartialEq, Eq)]
struct FileStat {
    name: String,
    insertions: usize,
    deletions: usize,
    binary: bool,
}

/// The widest bar, as git's default on an 80-column terminal.
const BAR_WIDTH: usize = 50;

fn file_stats(patch: &[u8]) -> Vec<FileStat> {
    let mut files: Vec<FileStat> = Vec::new();
    let mut renamed = false;
    let mut rename_from = String::new();
    for (kind, line) in classify(patch) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\n');
        if kind == Line::FileStart {
            renamed = false;
            // `diff --git a/X b/Y`: the name after the last " b/" until a better header comes.
            let name = text
                .rfind(" b/")
                .map(|i| text[i + 3..].to_string())
                .unwrap_or_else(|| text.to_string());
            files.push(FileStat {
                name: unquote(&name),
                ..FileStat::default()
            });
            continue;
        }
        let Some(file) = files.last_mut() else {
            continue;
        };
        match kind {
            Line::Header => {
                if let Some(from) = text.strip_prefix("rename from ") {
                    rename_from = unquote(from);
                } else if let Some(to) = text.strip_prefix("rename to ") {
                    renamed = true;
                    file.name = format!("{rename_from} => {}", unquote(to));
                } else if let Some(p) = text.strip_prefix("+++ ") {
                    let p = unquote(p);
                    if !renamed && p != "/dev/null" {
                        file.name = p.strip_prefix("b/").unwrap_or(&p).to_string();
                    }
                } else if text.starts_with("Binary files ") || text == "GIT binary patch" {
                    file.binary = true;
                }
            }
            Line::Added => file.insertions += 1,
            Line::Removed => file.deletions += 1,
            _ => {}
        }
    }
    files
}

/// Strips the quotes git puts around paths with unusual characters (escapes are kept).
fn unquote(s: &str) -> String {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
        .to_string()
}

pub fn render_stat(patch: &[u8], color: bool) -> Vec<u8> {
    let files = file_stats(patch);
    let name_width = files
        .iter()
        .map(|f| f.name.chars().count())
        .max()
        .unwrap_or(0);
    let max_change = files
        .iter()
        .map(|f| f.insertions + f.deletions)
        .max()
        .unwrap_or(0);
    let count_width = max_change.to_string().len().max(3);
    // Like git: bars are scaled only when the largest change does not fit.
    let scale = |n: usize| {
        if max_change <= BAR_WIDTH || n == 0 {
            n
        } else {
            1 + n * (BAR_WIDTH - 1) / max_change
        }
    };
    let (mut insertions, mut deletions) = (0, 0);
    let mut out = String::new();
    for f in &files {
        insertions += f.insertions;
        deletions += f.deletions;
        let pad = name_width - f.name.chars().count();
        if f.binary {
            out.push_str(&format!(
                " {}{} | {:>count_width$}\n",
                f.name,
                " ".repeat(pad),
                "Bin"
            ));
            continue;
        }
        let total = scale(f.insertions + f.deletions);
        let plus = scale(f.insertions).min(total);
        let minus = total - plus;
        let (g, r, z) = if color {
            (GREEN, RED, RESET)
        } else {
            ("", "", "")
        };
        let plus = if plus > 0 {
            format!("{g}{}{z}", "+".repeat(plus))
        } else {
            String::new()
        };
        let minus = if minus > 0 {
            format!("{r}{}{z}", "-".repeat(minus))
        } else {
            String::new()
        };
        out.push_str(&format!(
            " {}{} | {:>count_width$} {plus}{minus}\n",
            f.name,
            " ".repeat(pad),
            f.insertions + f.deletions
        ));
    }
    let plural = |n: usize, one: &str, many: &str| {
        if n == 1 {
            one.to_string()
        } else {
            many.to_string()
        }
    };
    out.push_str(&format!(
        " {} {} changed, {insertions} {}(+), {deletions} {}(-)\n",
        files.len(),
        plural(files.len(), "file", "files"),
        plural(insertions, "insertion", "insertions"),
        plural(deletions, "deletion", "deletions"),
    ));
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATCH: &str = "diff --git a/src/a.txt b/src/a.txt
index 1111111..2222222 100644
--- a/src/a.txt
+++ b/src/a.txt
@@ -1,3 +1,3 @@
 keep this
-the quick brown fox
+the quick red fox
-- not a header
diff --git a/img.png b/img.png
new file mode 100644
index 0000000..3333333
Binary files /dev/null and b/img.png differ
diff --git a/old.txt b/new.txt
similarity index 90%
rename from old.txt
rename to new.txt
";

    fn text(b: Vec<u8>) -> String {
        String::from_utf8(b).expect("utf-8")
    }

    #[test]
    fn stat_counts_lines_names_renames_and_binaries() {
        let stats = file_stats(PATCH.as_bytes());
        assert_eq!(stats.len(), 3);
        assert_eq!(
            (
                stats[0].name.as_str(),
                stats[0].insertions,
                stats[0].deletions
            ),
            ("src/a.txt", 1, 2)
        );
        assert!(stats[1].binary);
        assert_eq!(stats[2].name, "old.txt => new.txt");
        let out = text(render_stat(PATCH.as_bytes(), false));
        assert!(out.contains(" src/a.txt          |   3 +--\n"), "{out}");
        assert!(out.contains(" img.png            | Bin\n"), "{out}");
        assert!(
            out.ends_with(" 3 files changed, 1 insertion(+), 2 deletions(-)\n"),
            "{out}"
        );
    }

    #[test]
    fn stat_bars_are_scaled_to_fit() {
        let mut patch = String::from("diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -0,0 +1,500 @@\n");
        for i in 0..500 {
            patch.push_str(&format!("+{i}\n"));
        }
        let out = text(render_stat(patch.as_bytes(), false));
        let bar = out
            .lines()
            .next()
            .and_then(|l| l.split(' ').next_back())
            .unwrap_or("");
        assert_eq!(bar.len(), BAR_WIDTH, "{out}");
    }

    #[test]
    fn word_diff_marks_only_changed_words() {
        let out = text(render_word_diff(PATCH.as_bytes(), false));
        assert!(out.contains("\nkeep this\n"), "{out}");
        assert!(out.contains("the quick [-brown-]{+red+} fox\n"), "{out}");
        assert!(out.contains("[-- not a header-]\n"), "{out}");
        let coloured = text(render_word_diff(PATCH.as_bytes(), true));
        assert!(coloured.contains("\x1b[31mbrown\x1b[0m"), "{coloured}");
        assert!(!coloured.contains("[-"), "{coloured}");
    }

    #[test]
    fn colour_only_when_asked() {
        assert!(!render_patch(PATCH.as_bytes(), false).contains(&0x1b));
        let out = text(render_patch(PATCH.as_bytes(), true));
        assert!(out.contains("\x1b[32m+the quick red fox\x1b[0m\n"), "{out}");
        assert!(out.contains("\x1b[31m-- not a header\x1b[0m\n"), "{out}");
    }
}
