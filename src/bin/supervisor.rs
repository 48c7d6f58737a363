//! `fanout-supervisor`: the sandbox supervisor on its own (`fanout sandbox-exec` without the
//! rest of fanout). `fanout-supervisor --version` prints the version it must share with the
//! `fanout` binary beside it, which checks it once per run before using it.

#![deny(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.len() == 2 && args[1] == "--version" {
        println!("{}", fanout::sandbox::SUPERVISOR_VERSION);
        return ExitCode::SUCCESS;
    }
    ExitCode::from(fanout::sandbox::exec_main(args).clamp(0, 255) as u8)
}
