//! The messages of integration commits.

use super::shared::Shared;

/// The message of a task's integration commit: what it brings (a short subject, the full
/// prompt below when cut), and trailers naming it.
pub(crate) fn merge_message(shared: &Shared, i: usize) -> String {
    use crate::git::message;
    let task = &shared.tasks[i];
    let prefix = format!("fanout: merge {}", task.id());
    let subject = message::subject(&prefix, " \u{2014} ", &task.spec.prompt);
    message::message(
        &subject,
        &task.spec.prompt,
        &[
            ("Fanout-Run", shared.run_id.as_str()),
            ("Fanout-Task", task.id().as_str()),
        ],
    )
}

/// The first non-blank line of a prompt, bounded (one line of a squashed commit's list).
pub(crate) fn first_line(prompt: &str) -> String {
    let room = crate::git::message::SUBJECT_MAX;
    crate::git::message::shorten(crate::git::message::first_line(prompt), room)
}
