/*!
Landlock confinement of agent process trees. PLACEHOLDER until the sandbox branch lands:
the interface is final, the implementation here runs commands unconfined.
*/

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum ReadAccess {
    All,
    Strict { readable: Vec<PathBuf> },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum NetPolicy {
    Any,
    None,
    ConnectPorts(Vec<u16>),
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Policy {
    pub enforce: bool,
    pub writable: Vec<PathBuf>,
    pub read: ReadAccess,
    pub net: NetPolicy,
    pub min_abi: u32,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EnforcementStatus {
    FullyEnforced,
    PartiallyEnforced,
    NotEnforced,
    Off,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SandboxReport {
    pub status: EnforcementStatus,
    pub abi: Option<u32>,
    pub missing: Vec<String>,
    pub message: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot read the sandbox status file {0}")]
    Status(String, #[source] std::io::Error),
}

pub const EXIT_NOT_ENFORCED: i32 = 125;
pub const EXIT_EXEC_FAILED: i32 = 127;

pub fn supervised_command(
    _self_exe: &Path,
    _policy: &Policy,
    _status_file: &Path,
    program: &OsStr,
    args: &[OsString],
) -> std::process::Command {
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    cmd
}

pub fn read_report(_status_file: &Path) -> Result<SandboxReport, SandboxError> {
    Ok(SandboxReport {
        status: EnforcementStatus::Off,
        abi: None,
        missing: Vec::new(),
        message: None,
    })
}

pub fn kernel_abi() -> Option<u32> {
    None
}

pub fn exec_main(_args: Vec<OsString>) -> i32 {
    2
}
