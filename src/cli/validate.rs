//! `fanout validate`: every problem of a task file, with its location.

use super::args::ValidateArgs;
use super::common::{EXIT_OK, EXIT_USAGE};
use crate::taskfile::{self, TaskFileError};

pub fn run(a: ValidateArgs) -> anyhow::Result<i32> {
    let loaded = if a.expand {
        let dir = a
            .repo
            .clone()
            .unwrap_or_else(|| std::path::PathBuf::from("."));
        let repo = match crate::git::repo::UserRepo::open(&dir) {
            Ok(r) => r,
            Err(e) => {
                eprintln!(
                    "fanout: --expand needs a repository: {}",
                    crate::error_chain(&e)
                );
                return Ok(EXIT_USAGE);
            }
        };
        taskfile::load_expanded(
            &a.tasks,
            &|base| crate::plan::tracked_files(&repo, base.unwrap_or("HEAD")),
            &|base, path, limit| {
                crate::plan::tracked_content(&repo, base.unwrap_or("HEAD"), path, limit)
            },
        )
        .map(|(_, f)| f)
    } else {
        taskfile::load(&a.tasks)
    };
    let mut file = match loaded {
        Ok(f) => f,
        Err(TaskFileError::Invalid { path, problems }) => {
            eprintln!("fanout: {path}: {} problem(s)", problems.len());
            for p in &problems {
                eprintln!("  {p}");
            }
            return Ok(EXIT_USAGE);
        }
        Err(e) => {
            match e.source_text() {
                more if more.is_empty() => eprintln!("fanout: {e}"),
                more => eprintln!("fanout: {e}: {more}"),
            }
            return Ok(EXIT_USAGE);
        }
    };
    if let Err(e) = select(&mut file, &a.only, a.with_deps) {
        eprintln!("fanout: {e}");
        return Ok(EXIT_USAGE);
    }
    if let Some(repo) = &a.repo {
        let plan_check = crate::git::repo::UserRepo::open(repo)
            .and_then(|r| r.resolve_base(file.base.as_deref().unwrap_or("HEAD")));
        if let Err(e) = plan_check {
            eprintln!("fanout: {e}");
            return Ok(EXIT_USAGE);
        }
    }
    if let Err(e) = crate::plan::resolve_agents(&file, &|n| std::env::var(n).ok()) {
        eprintln!("fanout: {e}");
        return Ok(EXIT_USAGE);
    }
    let agents: std::collections::BTreeSet<String> = file
        .tasks
        .iter()
        .map(|t| {
            t.agent
                .clone()
                .or_else(|| file.defaults.agent.clone())
                .unwrap_or_else(|| "codex".into())
        })
        .collect();
    if a.expand {
        for t in &file.tasks {
            let first = t.prompt.lines().next().unwrap_or("");
            let paths = if t.paths.is_empty() {
                String::new()
            } else {
                format!("  [{}]", t.paths.join(", "))
            };
            super::out::outln!("{}\t{}{paths}", t.id, crate::jsonrpc::truncate(first, 100))?;
        }
    }
    print_overlaps(&file)?;
    if let Some(n) = a.shards {
        if n == 0 {
            eprintln!("fanout: --shards must be at least 1");
            return Ok(EXIT_USAGE);
        }
        print_shards(&file, n)?;
    }
    super::out::outln!(
        "{}: valid — {} task(s), agent(s): {}",
        a.tasks.display(),
        file.tasks.len(),
        agents.into_iter().collect::<Vec<_>>().join(", ")
    )?;
    Ok(EXIT_OK)
}

/// Overlap before dispatch (issue 21): the tasks whose `paths` overlap, a line per group, and
/// what the run will do with them. Templates not expanded (`--expand`) are left out.
fn print_overlaps(file: &taskfile::TaskFile) -> Result<(), super::out::OutputError> {
    let tasks: Vec<&taskfile::TaskSpec> = file.tasks.iter().filter(|t| !t.template).collect();
    let paths: Vec<&[String]> = tasks.iter().map(|t| t.paths.as_slice()).collect();
    let groups = crate::plan::overlap::overlap_groups(&paths);
    if groups.is_empty() {
        return Ok(());
    }
    let choice = file.defaults.overlap.unwrap_or_default();
    let how = match choice {
        taskfile::OverlapChoice::Serialize => {
            "they run one after another, each from the verified result of the one before"
        }
        taskfile::OverlapChoice::Parallel => "they run at the same time and may conflict",
    };
    super::out::outln!(
        "overlapping paths: {} group(s) (overlap: {}; {how}):",
        groups.len(),
        choice.as_str()
    )?;
    for g in &groups {
        let ids: Vec<&str> = g.tasks.iter().map(|&i| tasks[i].id.as_str()).collect();
        let shown = &g.paths[..g.paths.len().min(10)];
        let more = match g.paths.len() - shown.len() {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        super::out::outln!("  {}: {}{more}", ids.join(", "), shown.join(", "))?;
    }
    Ok(())
}

/// `--only` as `fanout run` would apply it: only the selected tasks are listed and counted.
fn select(
    file: &mut taskfile::TaskFile,
    only: &[String],
    with_deps: bool,
) -> Result<(), crate::plan::SelectError> {
    let ids = crate::plan::split_ids(only);
    if ids.is_empty() {
        return Ok(());
    }
    let pairs: Vec<(String, Vec<String>)> = file
        .tasks
        .iter()
        .map(|t| {
            let deps = t.depends_on.iter().map(|d| d.to_string()).collect();
            (t.id.to_string(), deps)
        })
        .collect();
    let keep = crate::plan::selection(&pairs, &ids, with_deps)?;
    file.tasks = crate::plan::keep_selected(std::mem::take(&mut file.tasks), &keep);
    Ok(())
}

/// `--shards N`: each task's shard, then the tasks per shard and the balance.
fn print_shards(file: &taskfile::TaskFile, n: u32) -> anyhow::Result<()> {
    use crate::shard::assign::{assign, Node};
    let nodes: Vec<Node<'_>> = file
        .tasks
        .iter()
        .map(|t| Node {
            id: t.id.as_str(),
            depends_on: t.depends_on.iter().map(|d| d.as_str()).collect(),
            group: t.group.as_deref(),
        })
        .collect();
    let shards = assign(&nodes, n);
    let mut per = vec![0usize; n as usize];
    for (t, k) in file.tasks.iter().zip(&shards) {
        per[*k as usize - 1] += 1;
        super::out::outln!("{}\tshard {k}/{n}", t.id)?;
    }
    for (k, c) in per.iter().enumerate() {
        super::out::outln!("shard {}/{n}: {c} task(s)", k + 1)?;
    }
    let (min, max) = (
        per.iter().min().copied().unwrap_or(0),
        per.iter().max().copied().unwrap_or(0),
    );
    let mean = file.tasks.len() as f64 / f64::from(n);
    super::out::outln!(
        "balance: {min}..{max} task(s) per shard (mean {mean:.1}; largest {:.0}% of the mean)",
        if mean > 0.0 {
            max as f64 / mean * 100.0
        } else {
            0.0
        }
    )?;
    Ok(())
}

trait SourceText {
    fn source_text(&self) -> String;
}

impl SourceText for TaskFileError {
    fn source_text(&self) -> String {
        match self {
            TaskFileError::Read { source, .. } => source.to_string(),
            TaskFileError::Invalid { .. } | TaskFileError::NotATaskFile { .. } => String::new(),
        }
    }
}
