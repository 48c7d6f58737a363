/*!
Integration repair (`integrate: {verify, repair: N}`): when the integration gate fails and
bisection names a task, that task's agent gets the gate's output and a workspace at the
integrated tree that fails, and makes a fix commit. A repair cannot edit what judged it: it may
change only the paths the task already changed or its declared `paths`, and nothing under a
`protect` glob; anything else fails the repair's gates, naming the path.
*/

use crate::report::GateResult;
use crate::verify::scope::Scope;

/// What a repair round may change.
#[derive(Clone, Debug, Default)]
pub(crate) struct RepairScope {
    /// The paths the task's verified commit changed.
    pub changed: Vec<String>,
    /// The task's `paths` globs.
    pub paths: Vec<String>,
    /// `protect` globs (the task's, else the defaults').
    pub protect: Vec<String>,
}

/// The repair gate: every path the fix changed must be one the task changed or one of its
/// `paths`, and none may be protected.
pub(crate) fn scope_gate(scope: &RepairScope, fixed: &[String]) -> GateResult {
    let protect = Scope::new(&scope.protect).ok();
    // An empty `paths` list is no limit for the scope gate; here it allows nothing more.
    let declared = (!scope.paths.is_empty())
        .then(|| Scope::new(&scope.paths).ok())
        .flatten();
    let mut refused = Vec::new();
    let mut why = Vec::new();
    for p in fixed {
        if !scope.protect.is_empty() && protect.as_ref().is_none_or(|s| s.allows(p)) {
            why.push(format!("{p} is protected (protect)"));
            refused.push(p.clone());
        } else if !scope.changed.contains(p) && !declared.as_ref().is_some_and(|s| s.allows(p)) {
            why.push(format!(
                "{p} is neither a path the task changed nor one of its paths"
            ));
            refused.push(p.clone());
        }
    }
    let passed = refused.is_empty();
    GateResult {
        gate: "repair_scope".into(),
        passed,
        detail: (!passed)
            .then(|| format!("a repair cannot edit what judged it: {}", why.join("; "))),
        paths: refused,
        output: None,
        stderr: None,
        flaky: false,
    }
}

/// What the culprit's agent is told in a repair round: the gate's `command`, its output's tail.
pub(crate) fn feedback(
    task_id: &str,
    command: &str,
    output: &str,
    (round, rounds): (u32, u32),
) -> String {
    format!(
        "fanout merged your change (task {task_id}) with the other tasks' changes, and the integration's verify command fails because of it (found by bisection; repair round {round} of {rounds}).\n\
         The failing command (run in the workspace's root): {command}\n\
         Your workspace now holds the integrated tree that fails, your change included. Fix it with a small change: \
         you may edit only the files your change touched or the task's declared paths; the tests and the verify configuration are not yours to change.\n\
         The end of the verify command's output:\n{}",
        super::tail::tail(output, 4000)
    )
}

/// A verify command as one line: the shell text, or the argv (each word quoted when needed).
pub(crate) fn command_text(command: &crate::taskfile::VerifyCommand) -> String {
    use crate::taskfile::VerifyCommand;
    match command {
        VerifyCommand::Shell(s) => s.clone(),
        VerifyCommand::Argv(v) => v
            .iter()
            .map(|w| {
                let plain = !w.is_empty()
                    && w.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
                match plain {
                    true => w.clone(),
                    false => format!("'{}'", w.replace('\'', "'\\''")),
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> RepairScope {
        RepairScope {
            changed: vec!["src/a.py".into()],
            paths: vec!["src/lib/".into()],
            protect: vec!["tests/".into(), "Makefile".into()],
        }
    }

    #[test]
    fn a_repair_may_touch_its_own_paths_only() {
        let g = scope_gate(&scope(), &["src/a.py".into(), "src/lib/x.py".into()]);
        assert!(g.passed, "{g:?}");
        let g = scope_gate(&scope(), &["src/b.py".into()]);
        assert!(!g.passed);
        assert_eq!(g.paths, vec!["src/b.py"]);
    }

    #[test]
    fn the_feedback_names_the_command_and_the_output_tail() {
        use crate::taskfile::VerifyCommand;
        let argv = VerifyCommand::Argv(vec!["sh".into(), "-c".into(), "make test".into()]);
        assert_eq!(command_text(&argv), "sh -c 'make test'");
        let shell = VerifyCommand::Shell("sh tests/check.sh".into());
        let text = feedback(
            "b",
            &command_text(&shell),
            "x\nFAILED: extra/wave.sh\n",
            (1, 2),
        );
        assert!(
            text.contains("The failing command (run in the workspace's root): sh tests/check.sh"),
            "{text}"
        );
        assert!(text.contains("FAILED: extra/wave.sh"), "{text}");
        assert!(text.contains("repair round 1 of 2"), "{text}");
    }

    #[test]
    fn a_protected_path_is_refused_even_when_the_task_changed_it() {
        let mut s = scope();
        s.changed.push("tests/test_a.py".into());
        let g = scope_gate(&s, &["tests/test_a.py".into()]);
        assert!(!g.passed);
        let detail = g.detail.unwrap_or_default();
        assert!(detail.contains("tests/test_a.py is protected"), "{detail}");
    }
}
