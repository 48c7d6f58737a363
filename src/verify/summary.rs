/*!
Why a verify command failed, in one line, from its own output: the summary a test runner
prints (mocha, jest, cargo test, pytest, go test, or any `N passed, N failed`) and the head of
its failure list; package-manager noise (`npm warn`, `npm notice`, progress lines) never counts.
Without a runner's summary, the last lines of output that are not noise stand for it.
*/

use std::sync::LazyLock;

use regex::Regex;

/// Longest reason, in bytes: it goes on one line of every output.
const MAX_REASON: usize = 400;

/// The reason a failed command's output gives, or `None` when it printed nothing but noise.
pub fn reason(stdout: &str, stderr: &str) -> Option<String> {
    let out = clean(stdout);
    let err = clean(stderr);
    let parts = runner_summary(&out)
        .or_else(|| runner_summary(&err))
        .or_else(|| last_lines(&out))
        .or_else(|| last_lines(&err))?;
    Some(one_line(&parts))
}

/// The lines of `text` that are not noise, escape sequences and carriage-return progress gone.
fn clean(text: &str) -> Vec<String> {
    static ANSI: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\x1b\[[0-9;?]*[ -/]*[@-~]").expect("a valid pattern"));
    text.lines()
        .map(|l| {
            // A progress line redrawn with `\r`: only its last state counts.
            let last = l.rsplit('\r').next().unwrap_or(l);
            ANSI.replace_all(last, "").trim_end().to_string()
        })
        .filter(|l| !is_noise(l))
        .collect()
}

/// Package-manager chatter and progress lines: never the reason a test run failed.
pub fn is_noise(line: &str) -> bool {
    static NOISE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"(?ix)^\s*(
                npm\s+(warn|notice|http|timing|info|verb)\b
              | (yarn|pnpm)\s+(warn|warning|notice|info)\b
              | warning\s+.*deprecated
              | (\[[\#=>\.\s-]*\]|[⠁-⣿]|[|/\\-]\s*$)   # progress bars and spinners
              | (added|removed|changed|audited|up\s+to\s+date)\b.*\bpackages?\b
              | \d+\s+packages?\s+are\s+looking\s+for\s+funding
              | run\s+`npm\s+fund`
              | >\s+\S+@\S+\s+\S+                         # npm's `> pkg@1.0.0 test` banner
              | >\s+(mocha|jest|vitest|node|tsc)\b
            )",
        )
        .expect("a valid pattern")
    });
    line.trim().is_empty() || NOISE.is_match(line)
}

/// A test runner's summary: its count line(s) and the head of its failure list.
fn runner_summary(lines: &[String]) -> Option<Vec<String>> {
    mocha(lines)
        .or_else(|| jest(lines))
        .or_else(|| cargo(lines))
        .or_else(|| pytest(lines))
        .or_else(|| go(lines))
        .or_else(|| counts(lines))
}

fn last_match(lines: &[String], re: &Regex) -> Option<usize> {
    lines.iter().rposition(|l| re.is_match(l))
}

/// mocha: `N passing`, `N failing`, then the numbered failures (`1) suite`, the test, the error).
fn mocha(lines: &[String]) -> Option<Vec<String>> {
    static FAILING: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^\s*\d+ failing\b").expect("a valid pattern"));
    static PASSING: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^\s*\d+ (passing|pending)\b").expect("a valid pattern"));
    let at = last_match(lines, &FAILING)?;
    let mut counts: Vec<String> = lines[..at]
        .iter()
        .rev()
        .take(3)
        .filter(|l| PASSING.is_match(l))
        .map(|l| l.trim().to_string())
        .collect();
    counts.reverse();
    counts.push(lines[at].trim().to_string());
    let mut out = vec![counts.join(", ")];
    // The first failure: `1) title` up to its error line (or a few lines of it).
    let first = lines[at + 1..]
        .iter()
        .position(|l| l.trim_start().starts_with("1)"))
        .map(|p| at + 1 + p);
    if let Some(start) = first {
        let head: Vec<String> = lines[start..]
            .iter()
            .take(6)
            .map(|l| l.trim().to_string())
            .take_while(|l| !l.starts_with("at "))
            .collect();
        let end = head
            .iter()
            .position(|l| l.contains("Error") || l.starts_with('+') || l.starts_with('-'))
            .map_or(head.len().min(3), |p| p + 1);
        out.push(head[..end].join(" "));
    }
    Some(out)
}

/// jest: `Tests: N failed, N passed, N total` and the first `● suite › test`.
fn jest(lines: &[String]) -> Option<Vec<String>> {
    static TESTS: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^\s*Tests:\s+.*\d+ failed").expect("a valid pattern"));
    let at = last_match(lines, &TESTS)?;
    let mut out = vec![lines[at].trim().to_string()];
    if let Some(first) = lines.iter().find(|l| l.trim_start().starts_with("● ")) {
        out.push(first.trim().to_string());
    }
    Some(out)
}

/// cargo test: `test result: FAILED. …` and the names under the last `failures:`.
fn cargo(lines: &[String]) -> Option<Vec<String>> {
    static RESULT: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^test result: FAILED\b").expect("a valid pattern"));
    let at = last_match(lines, &RESULT)?;
    let mut out = vec![lines[at].trim().to_string()];
    if let Some(list) = lines[..at].iter().rposition(|l| l.trim() == "failures:") {
        let names: Vec<&str> = lines[list + 1..at]
            .iter()
            .map(|l| l.trim())
            .take_while(|l| !l.is_empty() && !l.starts_with("test result"))
            .collect();
        if !names.is_empty() {
            out.push(format!("failed: {}", names.join(", ")));
        }
    }
    Some(out)
}

/// pytest: `==== 2 failed, 5 passed in 0.1s ====` and the first `FAILED path::test - why`.
fn pytest(lines: &[String]) -> Option<Vec<String>> {
    static RESULT: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^=+ .*\b\d+ (failed|error|errors)\b.* in [\d.]+s.*=+$")
            .expect("a valid pattern")
    });
    let at = last_match(lines, &RESULT)?;
    let mut out = vec![lines[at].trim_matches(|c| c == '=' || c == ' ').to_string()];
    if let Some(first) = lines.iter().find(|l| l.starts_with("FAILED ")) {
        out.push(first.trim().to_string());
    }
    Some(out)
}

/// go test: the first `--- FAIL: TestX` and the `FAIL` package lines.
fn go(lines: &[String]) -> Option<Vec<String>> {
    static PKG: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^FAIL\s+\S+").expect("a valid pattern"));
    let at = last_match(lines, &PKG)?;
    let mut out = Vec::new();
    if let Some(first) = lines
        .iter()
        .find(|l| l.trim_start().starts_with("--- FAIL:"))
    {
        out.push(first.trim().to_string());
    }
    out.push(lines[at].trim().to_string());
    Some(out)
}

/// Any runner's `N passed, N failed` (or the other way round) with at least one failure.
fn counts(lines: &[String]) -> Option<Vec<String>> {
    static COUNTS: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?i)\b([1-9]\d*) (failed|failing|failures?)\b.*\b\d+ (passed|passing)\b|\b\d+ (passed|passing)\b.*\b([1-9]\d*) (failed|failing|failures?)\b")
            .expect("a valid pattern")
    });
    let at = last_match(lines, &COUNTS)?;
    Some(vec![lines[at].trim().to_string()])
}

/// The last three lines that are not noise.
fn last_lines(lines: &[String]) -> Option<Vec<String>> {
    let n = lines.len();
    (n > 0).then(|| {
        lines[n.saturating_sub(3)..]
            .iter()
            .map(|l| l.trim().to_string())
            .collect()
    })
}

fn one_line(parts: &[String]) -> String {
    let text = parts
        .iter()
        .filter(|p| !p.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if text.len() <= MAX_REASON {
        return text;
    }
    let mut end = MAX_REASON;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npm_noise(n: usize) -> String {
        (0..n)
            .map(|i| {
                format!("npm warn deprecated pkg{i}@1.0.0: this package is no longer supported\n")
            })
            .collect::<String>()
            + "npm notice New major version of npm available!\n"
    }

    #[test]
    fn mocha_failures_are_named_through_npm_noise() {
        let stdout = "\n> app@1.0.0 test\n> mocha\n\n  parser\n    ✓ parses\n    1) handles empty input\n\n  \
                      141 passing (2s)\n  2 failing\n\n  1) parser\n       handles empty input:\n\n      \
                      AssertionError: expected 0 to equal 1\n      at Context.<anonymous> (test/p.js:9:5)\n\n  2) timing\n";
        let why = reason(stdout, &npm_noise(200)).expect("a reason");
        assert!(why.starts_with("141 passing (2s), 2 failing"), "{why}");
        assert!(why.contains("1) parser handles empty input:"), "{why}");
        assert!(
            why.contains("AssertionError: expected 0 to equal 1"),
            "{why}"
        );
        assert!(!why.contains("npm"), "{why}");
    }

    #[test]
    fn jest_cargo_pytest_go_and_plain_counts() {
        let jest = "  ● math › adds\n\n    expect(received).toBe(expected)\nTest Suites: 1 failed, 1 total\nTests:       1 failed, 3 passed, 4 total\n";
        assert_eq!(
            reason(jest, "").as_deref(),
            Some("Tests:       1 failed, 3 passed, 4 total; ● math › adds")
        );
        let cargo = "running 2 tests\ntest a ... ok\ntest b ... FAILED\n\nfailures:\n\n---- b stdout ----\npanicked\n\nfailures:\n    b\n\ntest result: FAILED. 1 passed; 1 failed; 0 ignored\n";
        assert_eq!(
            reason(cargo, "error: test failed, to rerun pass `--lib`").as_deref(),
            Some("test result: FAILED. 1 passed; 1 failed; 0 ignored; failed: b")
        );
        let pytest = "FAILED tests/test_x.py::test_y - assert 1 == 2\n=========== 1 failed, 4 passed in 0.12s ===========\n";
        assert_eq!(
            reason(pytest, "").as_deref(),
            Some("1 failed, 4 passed in 0.12s; FAILED tests/test_x.py::test_y - assert 1 == 2")
        );
        let go = "=== RUN   TestX\n--- FAIL: TestX (0.00s)\n    x_test.go:9: boom\nFAIL\nFAIL\texample.com/x\t0.01s\n";
        assert_eq!(
            reason(go, "").as_deref(),
            Some("--- FAIL: TestX (0.00s); FAIL\texample.com/x\t0.01s")
        );
        assert_eq!(
            reason("ran\n7 passed, 2 failed\nbye\n", "").as_deref(),
            Some("7 passed, 2 failed")
        );
    }

    #[test]
    fn without_a_summary_the_last_real_lines_stand() {
        let stderr = format!("{}error: cannot find module 'x'\n", npm_noise(50));
        assert_eq!(
            reason("", &stderr).as_deref(),
            Some("error: cannot find module 'x'")
        );
        assert_eq!(reason("", &npm_noise(5)), None);
        assert_eq!(
            reason("\x1b[31mbroken\x1b[0m\n", "").as_deref(),
            Some("broken")
        );
    }

    #[test]
    fn a_long_reason_is_cut() {
        let line = "x".repeat(2000);
        let why = reason(&line, "").expect("a reason");
        assert!(why.len() <= MAX_REASON + 4, "{}", why.len());
    }
}
