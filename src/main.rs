//! The `fanout` binary: a thin shell over the library (`fanout::cli`).
//!
//! The hidden sandbox supervisor (`sandbox-exec`) is dispatched before anything else starts,
//! in particular before any async runtime or thread exists: the supervisor forks.

#![deny(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "sandbox-exec") {
        return exit(fanout::sandbox::exec_main(args));
    }
    let cli = fanout::cli::Cli::parse();
    match fanout::cli::run(cli) {
        Ok(code) => exit(code),
        Err(e) => {
            if let Some(out) = e.downcast_ref::<fanout::cli::out::OutputError>() {
                // `fanout diff … | head`: the reader had enough; end as quietly as a tool
                // killed by SIGPIPE would (128 + 13), so `set -o pipefail` sees the same.
                if out.is_broken_pipe() {
                    return exit(fanout::exit::BROKEN_PIPE);
                }
            }
            match e.downcast_ref::<fanout::cli::UsageError>() {
                Some(usage) => eprintln!("fanout: {usage}"),
                None => eprintln!("fanout: error: {e:#}"),
            }
            exit(fanout::exit::USAGE)
        }
    }
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(code.clamp(0, 255) as u8)
}
