//! Standard output that reports errors instead of panicking (`println!` panics on a full disk
//! or a closed pipe). A closed pipe (`fanout diff … | head`) ends the command quietly.

use std::io::Write;

/// Writing to standard output failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot write to standard output")]
pub struct OutputError(#[source] pub std::io::Error);

impl OutputError {
    /// The reader went away (`| head`): not an error worth a message.
    pub fn is_broken_pipe(&self) -> bool {
        self.0.kind() == std::io::ErrorKind::BrokenPipe
    }
}

/// Writes `text` to standard output and flushes it.
pub fn print(text: impl AsRef<[u8]>) -> Result<(), OutputError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_ref())
        .and_then(|()| out.flush())
        .map_err(OutputError)
}

/// `println!` that returns a [`OutputError`] instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::out::print(format!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;
