//! `fanout doctor` as a user runs it: the binary, PATH and a Codex home of the test's making.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::support::*;

#[test]
fn doctor_names_the_wrong_codex_package_and_a_broken_config() {
    let tmp = tempfile::tempdir().unwrap();
    // npm's layout of the unrelated `codex` package, linked from a bin folder on PATH.
    let pkg = tmp.path().join("node_modules/codex");
    std::fs::create_dir_all(pkg.join("bin")).unwrap();
    std::fs::write(
        pkg.join("package.json"),
        r#"{"name":"codex","version":"0.2.3"}"#,
    )
    .unwrap();
    let bin = pkg.join("bin/codex");
    std::fs::write(&bin, "#!/bin/sh\necho 0.2.3\n").unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin_dir = tmp.path().join("node_modules/.bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::os::unix::fs::symlink("../codex/bin/codex", bin_dir.join("codex")).unwrap();
    let codex_home = tmp.path().join("codex-home");
    std::fs::create_dir_all(&codex_home).unwrap();
    std::fs::write(codex_home.join("config.toml"), "model = [unclosed\n").unwrap();
    let path = format!("{}:/usr/bin:/bin", bin_dir.display());
    let out = Command::new(fanout_bin())
        .args(["doctor", "--repo"])
        .arg(tmp.path())
        .env("PATH", path)
        .env("CODEX_HOME", &codex_home)
        .env_remove("FANOUT_CODEX_BIN")
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}\n{}", stderr(&out));
    assert!(
        text.contains("static-site generator") && text.contains("@openai/codex"),
        "{text}"
    );
    assert!(
        text.contains("config.toml") && text.contains("TOML"),
        "{text}"
    );
    assert!(text.contains("Landlock ABI"), "{text}");
}
