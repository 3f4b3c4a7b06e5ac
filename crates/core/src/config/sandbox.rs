//! `[sandbox]`: how `run_command` children are confined (T23).

use super::problem::ProblemCode;
use super::source::{FieldPath, Report};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `[sandbox]`: how `run_command` children are confined (T23). Every call runs in a fresh
/// bubblewrap sandbox whose second stage is this same `airlock` binary; when that sandbox cannot
/// be built, calls are refused (`sandbox-unavailable`) unless `insecure_no_sandbox` says otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// The bubblewrap binary; default `/usr/bin/bwrap`.
    #[serde(default = "SandboxConfig::default_bwrap")]
    pub bwrap: PathBuf,
    /// The `airlock` binary run as the sandbox's second stage (it applies landlock, seccomp and
    /// rlimits, then runs the program). Default: the running executable. Relative to the config.
    #[serde(default)]
    pub stage2: Option<PathBuf>,
    /// Run commands without any sandbox. Only for hosts where user namespaces cannot be had and
    /// the commands are trusted; logged loudly at start-up and on every call.
    #[serde(default)]
    pub insecure_no_sandbox: bool,
    /// Size of each call's private `/tmp` (and `/dev/shm`), in MiB; default 64.
    #[serde(default = "SandboxConfig::default_tmp_size_mb")]
    pub tmp_size_mb: u64,
    /// Address space of each process of a call, in MiB (`RLIMIT_AS`); default 2048.
    #[serde(default = "SandboxConfig::default_memory_mb")]
    pub memory_mb: u64,
    /// Processes (and threads) a call may run at once (`RLIMIT_NPROC`); default 128.
    #[serde(default = "SandboxConfig::default_max_processes")]
    pub max_processes: u64,
}

impl SandboxConfig {
    fn default_bwrap() -> PathBuf {
        PathBuf::from("/usr/bin/bwrap")
    }
    fn default_tmp_size_mb() -> u64 {
        64
    }
    fn default_memory_mb() -> u64 {
        2048
    }
    fn default_max_processes() -> u64 {
        128
    }

    /// Checks the values and makes `stage2` absolute.
    pub(super) fn checked(mut self, r: &mut Report<'_, '_>, at: &FieldPath, base: &Path) -> SandboxConfig {
        if !self.bwrap.is_absolute() {
            r.problem(&at.join("bwrap"), ProblemCode::RelativePath, "must be an absolute path");
        }
        self.stage2 = self.stage2.map(|p| base.join(p));
        let ranges = [
            ("tmp_size_mb", self.tmp_size_mb, 1, 65536),
            ("memory_mb", self.memory_mb, 16, 1 << 20),
            ("max_processes", self.max_processes, 1, 65536),
        ];
        for (field, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                r.problem(&at.join(field), ProblemCode::OutOfRange, format!("must be {min} to {max}"));
            }
        }
        self
    }
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            bwrap: SandboxConfig::default_bwrap(),
            stage2: None,
            insecure_no_sandbox: false,
            tmp_size_mb: SandboxConfig::default_tmp_size_mb(),
            memory_mb: SandboxConfig::default_memory_mb(),
            max_processes: SandboxConfig::default_max_processes(),
        }
    }
}
