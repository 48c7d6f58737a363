/*!
How a verify command ended, in words. The sandbox supervisor exits 128 + n when the program died
of signal n, which is also what a program that exited with that status gives (mocha exits with
the number of failures: 141 failures is not a SIGPIPE). The supervisor writes the signal into
the enforcement report when there was one; only then is it "killed by signal".
*/

use std::path::Path;
use std::process::ExitStatus;

/// `exited with status 141`, or `killed by signal SIGPIPE` when the program died of it.
pub fn describe(status: &ExitStatus, status_file: &Path) -> String {
    let signal = crate::sandbox::read_report(status_file)
        .ok()
        .and_then(|r| r.child_signal);
    in_words(status, signal)
}

fn in_words(status: &ExitStatus, signal: Option<i32>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), signal) {
        (Some(code), Some(sig)) if code == 128 + sig => {
            format!("killed by signal {}", signal_name(sig))
        }
        (Some(code), _)
            if code == crate::sandbox::EXIT_NOT_ENFORCED
                || code == crate::sandbox::EXIT_EXEC_FAILED =>
        {
            crate::process::describe_exit(status)
        }
        (Some(code), _) => format!("exited with status {code}"),
        (None, _) if status.signal().is_some() => crate::process::describe_exit(status),
        (None, _) => "unknown exit".into(),
    }
}

fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| sig.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn an_exit_status_above_128_is_not_a_signal_unless_the_supervisor_saw_one() {
        let exited_141 = ExitStatus::from_raw(141 << 8);
        assert_eq!(in_words(&exited_141, None), "exited with status 141");
        assert_eq!(in_words(&exited_141, Some(13)), "killed by signal SIGPIPE");
        assert_eq!(
            in_words(&ExitStatus::from_raw(1 << 8), None),
            "exited with status 1"
        );
        assert_eq!(
            in_words(&ExitStatus::from_raw(9), None),
            "killed by signal SIGKILL"
        );
    }
}
