//! The `run_command` executor: `{args}` on a `command` handle.
//!
//! [`CommandExecutor::validate`] fills the handle's argument template from the agent's `args`
//! (an object of placeholder values), each value checked against its placeholder's anchored
//! regex or enum, with no secret and no I/O (`argument-not-allowed`). [`CommandExecutor::execute`]
//! runs the handle's program (an absolute path) with:
//! - the secret on stdin, in a private file (mode 0400 in a 0700 directory, removed afterwards)
//!   or, only where the handle says so, in an environment variable; never in argv (T08);
//! - a clean environment: a minimal `PATH` and `LANG` plus what the handle declares;
//! - no network unless the handle allows it: an empty network namespace (`unshare --net`), and
//!   when the broker runs as root, no capabilities (`setpriv`), so the child cannot read the
//!   non-dumpable broker's `/proc/PID/environ` or memory (T08, T09);
//! - its own process group, killed as a whole on timeout (`command-timeout`) or when an output
//!   cap is reached (the result says `truncated`).
//!
//! A non-zero exit is a result, not an error; only a failure to start is `command-failed`. The
//! broker scrubs stdout and stderr afterwards.
#![forbid(unsafe_code)]

use airlock_core::config::{ArgTemplate, CommandConstraints, Handle, SecretDelivery};
use airlock_core::{CallError, ErrorCode, Secret};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

/// `PATH` given to every child.
pub const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// util-linux `unshare`, used to give the child an empty network namespace.
pub const UNSHARE: &str = "/usr/bin/unshare";
/// util-linux `setpriv`, used to drop capabilities and set no_new_privs.
pub const SETPRIV: &str = "/usr/bin/setpriv";

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
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandArgs {
    /// One value per placeholder of the handle's template, by name.
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

/// Runs `run_command` calls. Caches compiled placeholder regexes.
#[derive(Debug, Default)]
pub struct CommandExecutor {
    regexes: Mutex<HashMap<String, Arc<regex::Regex>>>,
}

fn not_allowed(msg: impl Into<String>) -> CallError {
    CallError::with_message(ErrorCode::ArgumentNotAllowed, msg)
}

fn constraints(handle: &Handle) -> Result<&CommandConstraints, CallError> {
    handle.command().ok_or_else(|| CallError::new(ErrorCode::HandleUnavailable))
}

impl CommandExecutor {
    /// A new executor.
    pub fn new() -> Self {
        Self::default()
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
        // the launcher's own exit code.
        if !is_executable(&c.program) {
            return Err(failed("program", &"not an executable file"));
        }
        // The private file lives in a fresh 0700 directory; both go when `_dir` drops.
        let (_dir, secret_file) = match c.secret_via {
            SecretDelivery::File => {
                let dir = tempfile::Builder::new()
                    .prefix("airlock-secret-")
                    .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
                    .tempdir().map_err(|e| failed("temp dir", &e))?;
                let path = dir.path().join("secret");
                write_private(&path, secret.expose_secret()).map_err(|e| failed("secret file", &e))?;
                (Some(dir), Some(path))
            }
            _ => (None, None),
        };

        let mut argv: Vec<OsString> = sandbox_prefix(c.network);
        let program_index = argv.len();
        argv.push(c.program.clone().into_os_string());
        for a in &cmd.args {
            argv.push(match a {
                Arg::Text(s) => OsString::from(s),
                Arg::SecretFile => secret_file.clone().map(PathBuf::into_os_string).unwrap_or_default(),
            });
        }
        let mut command = tokio::process::Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .env_clear()
            .env("PATH", CHILD_PATH)
            .env("LANG", "C.UTF-8")
            .envs(&c.env)
            .current_dir(&c.workdir)
            .stdin(if c.secret_via == SecretDelivery::Stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout kills every process it started.
            .process_group(0)
            .kill_on_drop(true);
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
        let mut child = command.spawn().map_err(|e| {
            let what = if program_index > 0 { "spawn (sandbox)" } else { "spawn" };
            failed(what, &e)
        })?;
        let pgid = child.id().map(|id| Pid::from_raw(id as i32));
        let kill_group = move || {
            if let Some(g) = pgid {
                let _ = killpg(g, Signal::SIGKILL);
            }
        };

        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let cap = c.max_output_bytes;
        let feed = async {
            if let Some(mut w) = stdin {
                let data = Zeroizing::new(secret.expose_secret().to_vec());
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
        let (out, err, truncated, status) = match tokio::time::timeout(Duration::from_millis(c.timeout_ms), run).await {
            Ok(v) => v,
            Err(_) => {
                kill_group();
                let _ = child.wait().await;
                return Err(CallError::new(ErrorCode::CommandTimeout));
            }
        };
        // Anything the child left behind in its group goes too.
        kill_group();
        let status = status.map_err(|e| failed("wait", &e))?;
        Ok(json!({
            "exit_code": status.code(),
            "signal": status.signal(),
            "stdout": String::from_utf8_lossy(&out),
            "stderr": String::from_utf8_lossy(&err),
            "truncated": truncated,
        }))
    }
}

/// The launcher put before the program: an empty network namespace unless `network`, and, when
/// running as root, no capabilities in the child (so it cannot ptrace or read the non-dumpable
/// broker), and no_new_privs always.
pub fn sandbox_prefix(network: bool) -> Vec<OsString> {
    let root = nix::unistd::geteuid().is_root();
    let mut v: Vec<OsString> = Vec::new();
    if !network {
        v.push(UNSHARE.into());
        if !root {
            // An unprivileged broker needs a user namespace to create a network namespace.
            v.push("--user".into());
            v.push("--map-root-user".into());
        }
        v.push("--net".into());
        v.push("--".into());
    }
    v.push(SETPRIV.into());
    v.push("--no-new-privs".into());
    if root || !network {
        v.push("--inh-caps=-all".into());
        v.push("--bounding-set=-all".into());
    }
    v.push("--".into());
    v
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
        let ex = CommandExecutor::new();
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
    fn t09_no_network_means_an_empty_network_namespace() {
        let p = sandbox_prefix(false);
        assert_eq!(p[0], UNSHARE);
        assert!(p.iter().any(|a| a == "--net"));
        assert!(p.iter().any(|a| a == "--no-new-privs"));
        assert!(!sandbox_prefix(true).iter().any(|a| a == UNSHARE || a == "--net"));
    }
}
