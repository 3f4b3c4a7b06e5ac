//! The `run_command` executor: `{args}` on a `command` handle.
//!
//! [`CommandExecutor::validate`] fills the handle's argument template from the agent's `args`
//! (an object of placeholder values), each value checked against its placeholder's anchored
//! regex or enum, with no secret and no I/O (`argument-not-allowed`). [`CommandExecutor::execute`]
//! runs the handle's program (an absolute path) in a per-call sandbox ([`sandbox`]: bubblewrap
//! namespaces, an unprivileged uid, no capabilities, an allow-listed filesystem, then
//! [`stage2`]: landlock, seccomp and rlimits) with:
//! - the secret on stdin, in a private file (mode 0400 in a 0700 directory on a tmpfs only this
//!   sandbox sees) or, only where the handle says so, in an environment variable; never in argv,
//!   never in bubblewrap's arguments: it crosses the stdin pipe in a control frame (T08);
//! - a clean environment: a minimal `PATH` and `LANG` plus what the handle declares;
//! - no network unless the handle allows it: an empty network namespace (T09);
//! - none of the broker's files, none of another call's processes, files or secrets (T23);
//! - a wall-clock timeout (`command-timeout`) and output caps (the result says `truncated`),
//!   both ending the whole PID namespace, background and `setsid` descendants included.
//!
//! The sandbox is checked once, lazily, by a probe run through it; when it cannot be built,
//! every call is refused with `sandbox-unavailable` and nothing runs. Only `[sandbox]
//! insecure_no_sandbox = true` runs commands unconfined, logged on every call and named in the
//! result. The result's `sandbox` member says what applied.
//!
//! A non-zero exit is a result, not an error (a program killed by signal N inside the sandbox
//! shows exit code 128+N, as from a shell); only a failure to start is `command-failed`. The
//! broker scrubs stdout and stderr afterwards.
#![forbid(unsafe_code)]

pub mod sandbox;
pub mod stage2;
mod tool;

use airlock_core::config::{ArgTemplate, CommandConstraints, Handle, SecretDelivery};
use airlock_core::{CallError, ErrorCode, Secret};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
pub use sandbox::{SandboxSettings, SandboxStatus};
use serde_json::{json, Value};
use stage2::{SecretSlot, Spec};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

/// `PATH` given to every child.
pub const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Makes this process non-dumpable (`PR_SET_DUMPABLE` 0): no core dumps, and other processes of
/// the same user without `CAP_SYS_PTRACE`, such as the children this executor starts, can read
/// neither its memory nor its `/proc/PID/environ` (T08). Call once at start-up.
pub fn make_non_dumpable() -> std::io::Result<()> {
    nix::sys::prctl::set_dumpable(false).map_err(std::io::Error::from)
}

/// True when this process is not dumpable.
pub fn is_non_dumpable() -> bool {
    matches!(nix::sys::prctl::get_dumpable(), Ok(false))
}

/// The arguments of `run_command` besides `credential_handle`.
///
/// The doc comment of the field is its description in the tool's JSON Schema (`schemars`).
#[derive(Clone, Debug, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandArgs {
    /// One value per placeholder of the handle's argument template, by name.
    #[serde(default)]
    pub args: BTreeMap<String, String>,
}

#[derive(Clone, Debug)]
enum Arg {
    Text(String),
    SecretFile,
}

/// A command line admitted against a handle's template. Holds no secret.
#[derive(Clone, Debug)]
pub struct ValidatedCommand {
    args: Vec<Arg>,
}

/// Runs `run_command` calls. Caches compiled placeholder regexes and the sandbox's preflight.
#[derive(Debug)]
pub struct CommandExecutor {
    regexes: Mutex<HashMap<String, Arc<regex::Regex>>>,
    sandbox: SandboxSettings,
    preflight: tokio::sync::OnceCell<Result<SandboxStatus, String>>,
}

fn not_allowed(msg: impl Into<String>) -> CallError {
    CallError::with_message(ErrorCode::ArgumentNotAllowed, msg)
}

fn constraints(handle: &Handle) -> Result<&CommandConstraints, CallError> {
    handle.command().ok_or_else(|| CallError::new(ErrorCode::HandleUnavailable))
}

impl CommandExecutor {
    /// A new executor confining its children as `sandbox` says. With `insecure_no_sandbox`
    /// it says so, loudly, now and on every call.
    pub fn new(sandbox: SandboxSettings) -> Self {
        if sandbox.insecure_no_sandbox {
            tracing::warn!("[sandbox] insecure_no_sandbox is set: run_command children run WITHOUT a sandbox (T23)");
        }
        CommandExecutor { regexes: Mutex::new(HashMap::new()), sandbox, preflight: tokio::sync::OnceCell::new() }
    }

    /// The sandbox's preflight, run once on first use: `Ok` with what it found, or the reason
    /// it cannot be built.
    pub async fn preflight(&self) -> Result<SandboxStatus, String> {
        self.preflight
            .get_or_init(|| async {
                let r = self.sandbox.probe().await;
                match &r {
                    Ok(s) => tracing::info!(landlock = %s.landlock, "run_command sandbox ready (bubblewrap, seccomp, rlimits)"),
                    Err(e) => tracing::warn!(reason = %e, "run_command sandbox unavailable: commands will be refused"),
                }
                r
            })
            .await
            .clone()
    }

    fn regex(&self, pattern: &str) -> Result<Arc<regex::Regex>, CallError> {
        let mut cache = self.regexes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = cache.get(pattern) {
            return Ok(r.clone());
        }
        // Anchored here so a template's author cannot forget it; the regex crate is linear-time.
        let r = regex::Regex::new(&format!(r"\A(?:{pattern})\z"))
            .map_err(|e| CallError::new(ErrorCode::Internal).detail(format!("placeholder regex: {e}")))?;
        let r = Arc::new(r);
        cache.insert(pattern.to_owned(), r.clone());
        Ok(r)
    }

    /// Fills the template with the agent's values. Every placeholder must be given, no other
    /// name may be, and every value must match its placeholder. Messages name the template's
    /// placeholders, never repeat the agent's values.
    pub fn validate(&self, handle: &Handle, args: &CommandArgs) -> Result<ValidatedCommand, CallError> {
        let c = constraints(handle)?;
        if args.args.keys().any(|k| !c.placeholders.contains_key(k)) {
            return Err(not_allowed("an argument name is not a placeholder of this handle's template"));
        }
        let mut out = Vec::with_capacity(c.args.len());
        for t in &c.args {
            match t {
                ArgTemplate::Fixed(s) => out.push(Arg::Text(s.clone())),
                ArgTemplate::SecretFile => out.push(Arg::SecretFile),
                ArgTemplate::Placeholder(name) => {
                    let p = &c.placeholders[name];
                    let v = args.args.get(name).ok_or_else(|| not_allowed(format!("missing argument '{name}'")))?;
                    if v.len() > p.max_bytes {
                        return Err(not_allowed(format!("argument '{name}' is longer than {} bytes", p.max_bytes)));
                    }
                    let ok = !v.contains('\0')
                        && match (&p.regex, &p.one_of) {
                            (Some(re), _) => self.regex(re)?.is_match(v),
                            (None, Some(allowed)) => allowed.iter().any(|a| a == v),
                            (None, None) => false,
                        };
                    if !ok {
                        return Err(not_allowed(format!("argument '{name}' is not allowed by this handle's template")));
                    }
                    out.push(Arg::Text(v.clone()));
                }
            }
        }
        Ok(ValidatedCommand { args: out })
    }

    /// Runs a validated command with the handle's secret, under the sandbox.
    pub async fn execute(&self, handle: &Handle, cmd: &ValidatedCommand, secret: &Secret) -> Result<Value, CallError> {
        let c = constraints(handle)?;
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            CallError::new(ErrorCode::CommandFailed).detail(format!("handle {}: {what}: {e}", handle.name))
        };
        // Checked here because, behind the sandbox launcher, a missing program would look like
        // the launcher's own failure.
        if !is_executable(&c.program) {
            return Err(failed("program", &"not an executable file"));
        }
        if self.sandbox.insecure_no_sandbox {
            tracing::warn!(handle = %handle.name, "run_command WITHOUT a sandbox: [sandbox] insecure_no_sandbox is set");
            return self.execute_unsandboxed(handle, c, cmd, secret).await;
        }
        let status = self.preflight().await.map_err(|reason| {
            CallError::with_message(ErrorCode::SandboxUnavailable, sandbox::unavailable_message(&self.sandbox.bwrap, &reason))
        })?;

        let slot = match c.secret_via {
            SecretDelivery::Stdin => SecretSlot::Stdin,
            SecretDelivery::Env => SecretSlot::Env { name: c.secret_env.clone() },
            SecretDelivery::File => SecretSlot::File,
        };
        let mut env = base_env(c);
        if slot == SecretSlot::File {
            env.push((c.secret_env.clone(), stage2::SECRET_FILE.into()));
        }
        let args = cmd
            .args
            .iter()
            .map(|a| match a {
                Arg::Text(s) => s.clone(),
                // The in-sandbox path, which is not secret.
                Arg::SecretFile => stage2::SECRET_FILE.into(),
            })
            .collect();
        let plan = sandbox::Plan {
            program: &c.program,
            workdir: &c.workdir,
            network: c.network,
            spec: Spec {
                program: c.program.clone(),
                args,
                env,
                paths: self.sandbox.landlock_paths(&c.workdir, &c.program, slot == SecretSlot::File),
                secret: slot.clone(),
                limits: self.sandbox.limits(c.timeout_ms),
            },
            probe: false,
        };
        let command = self.sandbox.command(&plan).map_err(|e| failed("sandbox", &e))?;
        // The secret crosses the stdin pipe only: in the frame for env and file delivery, after
        // an empty frame for stdin delivery, so the rest of the pipe is the program's stdin.
        let input = match slot {
            SecretSlot::Stdin => {
                let mut v = stage2::encode_frame(b"");
                v.extend_from_slice(secret.expose_secret());
                v
            }
            _ => stage2::encode_frame(secret.expose_secret()),
        };
        let out = run_child(command, Some(input), Duration::from_millis(c.timeout_ms), c.max_output_bytes)
            .await
            .map_err(|e| match e {
                RunError::Timeout => CallError::new(ErrorCode::CommandTimeout),
                e => failed("spawn (sandbox)", &e),
            })?;
        // A setup failure of stage 2 or of bubblewrap itself: the program did not run. The line
        // is not cut here: a program can write it too, secret included, and the broker bounds
        // and scrubs every detail together, so that a cut leaves no prefix of a secret (T24).
        let first_err_line = || String::from_utf8_lossy(&out.stderr).lines().next().unwrap_or("").to_owned();
        if out.status.code() == Some(stage2::EXIT_SETUP_FAILED.into()) && out.stderr.starts_with(stage2::ERROR_PREFIX.as_bytes()) {
            return Err(failed("sandbox", &first_err_line()));
        }
        if out.status.code() == Some(1) && out.stderr.starts_with(b"bwrap: ") {
            return Err(failed("sandbox", &first_err_line()));
        }
        Ok(result_json(&out, status.to_json(c.network)))
    }

    /// The old way, kept only behind `insecure_no_sandbox`: the program runs directly in its
    /// own process group, with the clean environment but no confinement at all.
    async fn execute_unsandboxed(
        &self,
        handle: &Handle,
        c: &CommandConstraints,
        cmd: &ValidatedCommand,
        secret: &Secret,
    ) -> Result<Value, CallError> {
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            CallError::new(ErrorCode::CommandFailed).detail(format!("handle {}: {what}: {e}", handle.name))
        };
        // The private file lives in a fresh 0700 directory; both go when `_dir` drops.
        let (_dir, secret_file) = match c.secret_via {
            SecretDelivery::File => {
                let dir = tempfile::Builder::new()
                    .prefix("airlock-secret-")
                    .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
                    .tempdir()
                    .map_err(|e| failed("temp dir", &e))?;
                let path = dir.path().join("secret");
                write_private(&path, secret.expose_secret()).map_err(|e| failed("secret file", &e))?;
                (Some(dir), Some(path))
            }
            _ => (None, None),
        };
        let args: Vec<OsString> = cmd
            .args
            .iter()
            .map(|a| match a {
                Arg::Text(s) => OsString::from(s),
                Arg::SecretFile => secret_file.clone().map(PathBuf::into_os_string).unwrap_or_default(),
            })
            .collect();
        let mut command = tokio::process::Command::new(&c.program);
        command.args(&args).env_clear().envs(base_env(c)).current_dir(&c.workdir);
        match c.secret_via {
            SecretDelivery::Env => {
                command.env(&c.secret_env, std::ffi::OsStr::from_bytes(secret.expose_secret()));
            }
            SecretDelivery::File => {
                if let Some(p) = &secret_file {
                    command.env(&c.secret_env, p);
                }
            }
            SecretDelivery::Stdin => {}
        }
        let input = (c.secret_via == SecretDelivery::Stdin).then(|| Zeroizing::new(secret.expose_secret().to_vec()));
        let out = run_child(command, input, Duration::from_millis(c.timeout_ms), c.max_output_bytes)
            .await
            .map_err(|e| match e {
                RunError::Timeout => CallError::new(ErrorCode::CommandTimeout),
                e => failed("spawn", &e),
            })?;
        Ok(result_json(&out, sandbox::unsandboxed_json()))
    }
}

/// `PATH`, `LANG` and the handle's variables: the whole environment besides the secret.
fn base_env(c: &CommandConstraints) -> Vec<(String, String)> {
    let mut v = vec![("PATH".to_owned(), CHILD_PATH.to_owned()), ("LANG".to_owned(), "C.UTF-8".to_owned())];
    v.extend(c.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    v
}

fn result_json(out: &ChildOutput, sandbox: Value) -> Value {
    json!({
        "exit_code": out.status.code(),
        "signal": out.status.signal(),
        "stdout": String::from_utf8_lossy(&out.stdout),
        "stderr": String::from_utf8_lossy(&out.stderr),
        "truncated": out.truncated,
        "sandbox": sandbox,
    })
}

/// What a finished child left.
#[derive(Debug)]
pub(crate) struct ChildOutput {
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    pub(crate) truncated: bool,
    pub(crate) status: ExitStatus,
}

/// Why a child gave no output.
#[derive(Debug)]
pub(crate) enum RunError {
    /// It could not be started.
    Spawn(std::io::Error),
    /// Waiting for it failed.
    Wait(std::io::Error),
    /// It ran past its time and was killed.
    Timeout,
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Spawn(e) => write!(f, "{e}"),
            RunError::Wait(e) => write!(f, "wait: {e}"),
            RunError::Timeout => f.write_str("timed out"),
        }
    }
}

/// Runs `command` in its own process group with `input` on stdin (then closed; stdin is
/// /dev/null without input), keeping up to `cap` bytes of stdout and of stderr. The group is
/// killed on timeout, on reaching a cap, and after the exit; for bubblewrap, killing it ends
/// the sandbox's whole PID namespace (`--die-with-parent`).
pub(crate) async fn run_child(
    mut command: tokio::process::Command,
    input: Option<Zeroizing<Vec<u8>>>,
    timeout: Duration,
    cap: usize,
) -> Result<ChildOutput, RunError> {
    command
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills every process it started.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(RunError::Spawn)?;
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    let kill_group = move || {
        if let Some(g) = pgid {
            let _ = killpg(g, Signal::SIGKILL);
        }
    };
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let feed = async {
        if let (Some(mut w), Some(data)) = (stdin, input) {
            // A child that does not read its stdin closes the pipe; that is not an error.
            let _ = w.write_all(&data).await;
            let _ = w.shutdown().await;
        }
    };
    let run = async {
        let ((), (out, t1), (err, t2)) =
            tokio::join!(feed, read_capped(stdout, cap, &kill_group), read_capped(stderr, cap, &kill_group));
        let status = child.wait().await;
        (out, err, t1 || t2, status)
    };
    let (stdout, stderr, truncated, status) = match tokio::time::timeout(timeout, run).await {
        Ok(v) => v,
        Err(_) => {
            kill_group();
            let _ = child.wait().await;
            return Err(RunError::Timeout);
        }
    };
    // Anything the child left behind in its group goes too.
    kill_group();
    let status = status.map_err(RunError::Wait)?;
    Ok(ChildOutput { stdout, stderr, truncated, status })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o400).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Reads up to `cap` bytes; on more, kills the process group and reports truncation.
async fn read_capped<R: AsyncRead + Unpin>(r: Option<R>, cap: usize, kill: &impl Fn()) -> (Vec<u8>, bool) {
    let Some(mut r) = r else { return (Vec::new(), false) };
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return (buf, false),
            Ok(n) => {
                if buf.len() + n > cap {
                    let keep = cap - buf.len();
                    buf.extend_from_slice(&chunk[..keep]);
                    kill();
                    return (buf, true);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_core::config::Config;

    fn handle() -> Handle {
        let cfg = Config::parse(
            r#"
[handles.RUN]
kind = "command"
secret = "env:X"
[handles.RUN.command]
program = "/bin/echo"
args = ["--env", "{target}", "{tag}"]
placeholders = { target = { enum = ["staging", "prod"] }, tag = { regex = 'v[0-9]+', max_bytes = 8 } }
"#,
            "t.toml",
            Path::new("."),
        )
        .unwrap();
        cfg.handles.into_values().next().unwrap()
    }

    fn args(pairs: &[(&str, &str)]) -> CommandArgs {
        CommandArgs { args: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }
    }

    #[test]
    fn t08_template_admits_only_matching_values() {
        let ex = CommandExecutor::new(SandboxSettings::default());
        let h = handle();
        let ok = ex.validate(&h, &args(&[("target", "prod"), ("tag", "v12")])).unwrap();
        assert_eq!(ok.args.len(), 3);
        for bad in [
            args(&[("target", "dev"), ("tag", "v1")]),
            args(&[("target", "prod"), ("tag", "v1 x")]),
            args(&[("target", "prod"), ("tag", "xv1")]),
            args(&[("target", "prod"), ("tag", "v1\n")]),
            args(&[("target", "prod"), ("tag", "v12345678")]),
            args(&[("target", "prod")]),
            args(&[("target", "prod"), ("tag", "v1"), ("more", "x")]),
        ] {
            let e = ex.validate(&h, &bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::ArgumentNotAllowed, "{bad:?}");
        }
    }

    #[test]
    fn t23_sandbox_table_is_parsed_and_checked() {
        let base = "[sandbox]\n";
        let cfg = Config::parse(base, "t.toml", Path::new("/cfg")).unwrap();
        assert_eq!(cfg.sandbox, airlock_core::config::SandboxConfig::default());
        assert_eq!(cfg.sandbox.bwrap, Path::new("/usr/bin/bwrap"));
        let cfg = Config::parse("[sandbox]\nstage2 = \"bin/airlock\"\ntmp_size_mb = 8\nmemory_mb = 256\nmax_processes = 16\n", "t.toml", Path::new("/cfg")).unwrap();
        assert_eq!(cfg.sandbox.stage2.as_deref(), Some(Path::new("/cfg/bin/airlock")));
        let s = SandboxSettings::from_config(&cfg);
        assert_eq!((s.tmp_size_mb, s.memory_mb, s.max_processes), (8, 256, 16));
        assert!(s.hidden.contains(&PathBuf::from("/cfg/airlock-data")), "{:?}", s.hidden);
        for (bad, field) in [
            ("bwrap = \"bwrap\"", "sandbox.bwrap"),
            ("tmp_size_mb = 0", "sandbox.tmp_size_mb"),
            ("memory_mb = 1", "sandbox.memory_mb"),
            ("max_processes = 0", "sandbox.max_processes"),
        ] {
            let e = Config::parse(&format!("[sandbox]\n{bad}\n"), "t.toml", Path::new("/cfg")).unwrap_err().to_string();
            assert!(e.contains(field), "{bad}: {e}");
        }
        assert!(Config::parse("[sandbox]\nnope = 1\n", "t.toml", Path::new("/cfg")).is_err());
    }

    #[tokio::test]
    async fn t23_a_missing_bwrap_refuses_the_call_and_runs_nothing() {
        let ex = CommandExecutor::new(SandboxSettings { bwrap: "/nonexistent/bwrap".into(), ..Default::default() });
        let h = handle();
        let v = ex.validate(&h, &args(&[("target", "prod"), ("tag", "v1")])).unwrap();
        let e = ex.execute(&h, &v, &Secret::from_str_value("x")).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::SandboxUnavailable);
        assert!(e.message.contains("/nonexistent/bwrap does not exist") && e.message.contains("apparmor"), "{}", e.message);
    }

    #[tokio::test]
    async fn t23_insecure_no_sandbox_runs_unconfined_and_says_so() {
        let ex = CommandExecutor::new(SandboxSettings {
            bwrap: "/nonexistent/bwrap".into(),
            insecure_no_sandbox: true,
            ..Default::default()
        });
        let h = handle();
        let v = ex.validate(&h, &args(&[("target", "prod"), ("tag", "v1")])).unwrap();
        let r = ex.execute(&h, &v, &Secret::from_str_value("x")).await.unwrap();
        assert_eq!(r["stdout"], "--env prod v1\n");
        assert_eq!(r["sandbox"], json!({"mode": "none", "insecure_no_sandbox": true}));
    }
}
