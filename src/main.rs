//! The `fanout` binary: a thin shell over the library (`fanout::cli`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The sandbox supervisor must start before any runtime or thread exists.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "sandbox-exec") {
        return exit(fanout::sandbox::exec_main(args[2..].to_vec()));
    }
    let cli = fanout::cli::Cli::parse();
    match fanout::cli::run(cli) {
        Ok(code) => exit(code),
        Err(e) => {
            eprintln!("fanout: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(code.clamp(0, 255) as u8)
}
