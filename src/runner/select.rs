/*!
Candidates (best-of-N): which passing candidate's commit becomes the task's, and why each
other one was not chosen (`select`: `smallest`, `first` or `review`; docs/taskfile.md).
*/

use std::collections::BTreeMap;
use std::sync::Arc;

use super::candidate_outcome::Outcome;
use super::shared::Shared;
use crate::taskfile::SelectMode;
use crate::verify::select_review;

/// The choice: the chosen candidate with why, and why each other one was not chosen.
#[derive(Clone, Debug, Default)]
pub(super) struct Choice {
    pub chosen: Option<(u32, String)>,
    pub reasons: BTreeMap<u32, String>,
}

/// Chooses among the task's candidates by its `select`.
pub(super) async fn choose(
    shared: &Arc<Shared>,
    index: usize,
    outcomes: &[Outcome],
    stopped: &[u32],
    first_passed: Option<u32>,
) -> Choice {
    let task = &shared.tasks[index];
    let mut choice = not_chosen(outcomes, stopped, first_passed);
    let passing: Vec<&Outcome> = outcomes.iter().filter(|o| o.commit().is_some()).collect();
    let (k, why) = match (passing.len(), task.select) {
        (0, _) => return choice,
        (1, _) => (
            passing[0].k,
            "the only candidate that passed its gates".into(),
        ),
        (_, SelectMode::First) => match first_passed {
            Some(f) => (f, "the first candidate to pass its gates".into()),
            None => smallest(&passing),
        },
        (_, SelectMode::Smallest) => smallest(&passing),
        (_, SelectMode::Review) => match review(shared, index, &passing).await {
            Ok((k, why)) => (k, format!("the reviewer chose it: {why}")),
            Err(e) => {
                shared.events.warn(
                    Some(task.id().as_str()),
                    &format!("the review of the candidates failed, so the smallest is chosen: {e}"),
                );
                let (k, why) = smallest(&passing);
                (k, format!("{why} (the review failed: {e})"))
            }
        },
    };
    for o in passing.iter().filter(|o| o.k != k) {
        let why = match task.select {
            SelectMode::First => format!("passed after candidate {k}"),
            SelectMode::Smallest => format!(
                "passed, with {} changed lines (the chosen candidate {k}: fewer)",
                size(o)
            ),
            SelectMode::Review => format!("passed; candidate {k} was chosen over it"),
        };
        choice.reasons.insert(o.k, why);
    }
    choice.reasons.insert(k, why.clone());
    choice.chosen = Some((k, why));
    choice
}

/// Why the candidates that did not pass (or were stopped) were not chosen; a passing one is
/// not chosen either when a budget stopped the task.
pub(super) fn not_chosen(
    outcomes: &[Outcome],
    stopped: &[u32],
    first_passed: Option<u32>,
) -> Choice {
    let mut choice = Choice::default();
    for o in outcomes {
        let why = match o.commit() {
            Some(_) => "passed, but a budget stopped the task before the choice".to_string(),
            None => {
                let why = o.error().unwrap_or_else(|| "it changed nothing".into());
                format!("did not pass ({}): {why}", o.status())
            }
        };
        choice.reasons.insert(o.k, why);
    }
    for &k in stopped {
        let by = first_passed.map(|f| format!(" after candidate {f} passed first"));
        choice
            .reasons
            .insert(k, format!("stopped{}", by.unwrap_or_default()));
    }
    choice
}

fn size(o: &Outcome) -> usize {
    o.report.insertions + o.report.deletions
}

/// The passing candidate with the fewest changed lines (the lower number on a tie).
fn smallest(passing: &[&Outcome]) -> (u32, String) {
    let best = passing
        .iter()
        .min_by_key(|o| (size(o), o.k))
        .map(|o| (o.k, size(o)))
        .unwrap_or((0, 0));
    (
        best.0,
        format!(
            "the fewest changed lines among the passing candidates ({})",
            best.1
        ),
    )
}

/// Claude Code names the best of the passing candidates, reading their diffs from the
/// committed trees in a snapshot of the commit they started from.
async fn review(
    shared: &Arc<Shared>,
    index: usize,
    passing: &[&Outcome],
) -> Result<(u32, String), String> {
    let task = &shared.tasks[index];
    let start = passing[0]
        .report
        .started_from
        .as_deref()
        .and_then(|s| git2::Oid::from_str(s).ok())
        .ok_or("the candidates' start commit is unknown")?;
    let commits: Vec<(u32, String, usize, git2::Oid)> = passing
        .iter()
        .filter_map(|o| Some((o.k, o.report.agent_name.clone(), size(o), o.commit()?)))
        .collect();
    let s = shared.clone();
    let label = format!("{}-select", task.id());
    let (snapshot, entries) = super::steps::blocking(move || {
        let repo = git2::Repository::open(&s.repo_path).map_err(|e| e.to_string())?;
        let mut entries = Vec::new();
        for (k, agent, size, commit) in commits {
            let diff = select_review::diff_text(&repo, start, commit).map_err(|e| e.to_string())?;
            entries.push(select_review::Entry {
                candidate: k,
                agent,
                size,
                diff,
            });
        }
        let tree = repo
            .find_commit(start)
            .map(|c| c.tree_id())
            .map_err(|e| e.to_string())?;
        let snap = s
            .judges
            .snapshot(
                &s.repo_path,
                tree,
                &crate::git::snapshot::Which::All,
                &label,
            )
            .map_err(|e| crate::error_chain(&e))?;
        Ok::<_, String>((snap, entries))
    })
    .await?;
    let files = crate::run_dir::RunDir::new(&shared.run_dir).task(task.id().as_str());
    let place = select_review::Place {
        judges: &shared.judges,
        claude: &task.claude,
        snapshot: snapshot.path(),
        stderr_log: &files.stderr_log,
        status_file: &files.status_file,
    };
    select_review::choose(place, &task.spec.prompt, &entries)
        .await
        .map_err(|e| e.to_string())
}
