//! The `fanout` binary. The sandbox entry points are dispatched before anything else starts
//! (in particular before any async runtime or thread exists): the supervisor forks.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match args.get(1).and_then(|a| a.to_str()) {
        Some("sandbox-exec") => std::process::exit(fanout::sandbox::exec_main(args)),
        Some("sandbox") => std::process::exit(fanout::sandbox::cli::run(args)),
        _ => {}
    }
}
