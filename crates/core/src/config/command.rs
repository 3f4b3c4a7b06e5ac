//! `[handles.X.command]`: the program of a command handle, its argument template and how it
//! receives the secret.

use super::problem::ProblemCode;
use super::source::{FieldPath, Report};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// How a command receives its secret. Never through argv.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretDelivery {
    /// Written to the child's stdin, which is then closed (the default).
    Stdin,
    /// A private temporary file (mode 0400 in a 0700 directory, removed afterwards) whose path is
    /// in the environment variable `secret_env` and available as the `{secret_file}` argument.
    File,
    /// The environment variable `secret_env`. Only when the handle says so: a child can print
    /// its environment.
    Env,
}

/// What an agent-supplied argument may be.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placeholder {
    /// A regular expression the whole value must match (anchored by airlock; linear time).
    #[serde(default)]
    pub regex: Option<String>,
    /// The values allowed, exactly.
    #[serde(default, rename = "enum")]
    pub one_of: Option<Vec<String>>,
    /// Largest value in bytes.
    #[serde(default = "default_max_arg_bytes")]
    pub max_bytes: usize,
}

/// One element of a command's argument template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgTemplate {
    /// A fixed argument.
    Fixed(String),
    /// `{name}`: the agent's value for the placeholder `name`.
    Placeholder(String),
    /// `{secret_file}`: the path of the private secret file (not the secret).
    SecretFile,
}

/// Constraints of a `command` handle. None of them comes from the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandConstraints {
    /// Absolute path of the program.
    pub program: PathBuf,
    /// The argument template: fixed strings and whole-argument placeholders.
    pub args: Vec<ArgTemplate>,
    /// The placeholders the agent fills, by name.
    pub placeholders: BTreeMap<String, Placeholder>,
    /// How the secret reaches the child.
    pub secret_via: SecretDelivery,
    /// The variable that holds the secret (`env`) or the secret file's path (`file`).
    pub secret_env: String,
    /// Extra environment variables (besides a minimal `PATH` and `LANG`).
    pub env: BTreeMap<String, String>,
    /// Let the child use the network. Off by default: the child runs in an empty network
    /// namespace (T09).
    pub network: bool,
    /// Wall-clock limit; the whole process group is killed when it passes.
    pub timeout_ms: u64,
    /// Bytes kept of stdout and of stderr each; more is cut and the result says `truncated`.
    pub max_output_bytes: usize,
    /// Working directory (default `/`).
    pub workdir: PathBuf,
}

/// `[handles.X.command]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCommand {
    program: PathBuf,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    placeholders: BTreeMap<String, Placeholder>,
    #[serde(default = "default_secret_via")]
    secret_via: SecretDelivery,
    #[serde(default)]
    secret_env: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    network: bool,
    #[serde(default = "default_command_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_max_output_bytes")]
    max_output_bytes: usize,
    #[serde(default)]
    workdir: Option<PathBuf>,
}

impl RawCommand {
    /// Checks the program, the argument template against the placeholders, the environment
    /// and the limits.
    pub(super) fn check(self, r: &mut Report<'_, '_>, at: &FieldPath) -> Option<CommandConstraints> {
        let before = r.count();
        if !self.program.is_absolute() {
            r.problem(&at.join("program"), ProblemCode::RelativePath, "must be an absolute path");
        }
        let (args, used) = self.check_args(r, &at.join("args"));
        self.check_placeholders(r, &at.join("placeholders"), &used);
        let secret_env = self.secret_env.clone().unwrap_or_else(|| match self.secret_via {
            SecretDelivery::File => "AIRLOCK_SECRET_FILE".into(),
            _ => "AIRLOCK_SECRET".into(),
        });
        if !valid_env_name(&secret_env) {
            r.problem(&at.join("secret_env"), ProblemCode::BadEnvName, "not an environment variable name");
        }
        for k in self.env.keys() {
            if !valid_env_name(k) || *k == secret_env {
                r.problem(&at.join("env"), ProblemCode::BadEnvName, format!("'{k}' is not a usable environment variable name"));
            }
        }
        if self.env.values().any(|v| v.contains('\0')) {
            r.problem(&at.join("env"), ProblemCode::BadValue, "a value cannot contain NUL");
        }
        for (field, value) in [("timeout_ms", self.timeout_ms), ("max_output_bytes", self.max_output_bytes as u64)] {
            if value == 0 {
                r.problem(&at.join(field), ProblemCode::OutOfRange, "must be at least 1");
            }
        }
        let workdir = self.workdir.unwrap_or_else(|| PathBuf::from("/"));
        if !workdir.is_absolute() {
            r.problem(&at.join("workdir"), ProblemCode::RelativePath, "must be an absolute path");
        }
        (r.count() == before).then_some(CommandConstraints {
            program: self.program,
            args,
            placeholders: self.placeholders,
            secret_via: self.secret_via,
            secret_env,
            env: self.env,
            network: self.network,
            timeout_ms: self.timeout_ms,
            max_output_bytes: self.max_output_bytes,
            workdir,
        })
    }

    /// The argument template, and the placeholders it uses.
    fn check_args(&self, r: &mut Report<'_, '_>, at: &FieldPath) -> (Vec<ArgTemplate>, BTreeSet<String>) {
        let mut args = Vec::new();
        let mut used = BTreeSet::new();
        for a in &self.args {
            if a.contains('\0') {
                r.problem(at, ProblemCode::BadValue, "an argument cannot contain NUL");
                continue;
            }
            match a.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
                Some("secret_file") => {
                    if self.secret_via != SecretDelivery::File {
                        r.problem(at, ProblemCode::BadTemplate, "{secret_file} needs secret_via = \"file\"");
                    }
                    args.push(ArgTemplate::SecretFile);
                }
                Some(name) if !name.contains(['{', '}']) => {
                    if !self.placeholders.contains_key(name) {
                        r.problem(at, ProblemCode::BadTemplate, format!("placeholder {{{name}}} is not declared in [placeholders]"));
                    }
                    used.insert(name.to_owned());
                    args.push(ArgTemplate::Placeholder(name.to_owned()));
                }
                _ => {
                    if a.contains(['{', '}']) {
                        r.problem(
                            at,
                            ProblemCode::BadTemplate,
                            format!("'{a}': a placeholder is a whole argument, {{name}}; braces are not allowed elsewhere"),
                        );
                    }
                    args.push(ArgTemplate::Fixed(a.clone()));
                }
            }
        }
        (args, used)
    }

    /// Each placeholder: used, and exactly one of a valid regex or a non-empty enum.
    fn check_placeholders(&self, r: &mut Report<'_, '_>, at: &FieldPath, used: &BTreeSet<String>) {
        for (name, p) in &self.placeholders {
            if !used.contains(name) {
                r.problem(at, ProblemCode::BadPlaceholder, format!("placeholder '{name}' is not used in args"));
            }
            match (&p.regex, &p.one_of) {
                (Some(re), None) => {
                    if let Err(e) = regex::Regex::new(re) {
                        r.problem(at, ProblemCode::BadPlaceholder, format!("'{name}': bad regex: {e}"));
                    }
                }
                (None, Some(v)) if !v.is_empty() => {}
                _ => r.problem(at, ProblemCode::BadPlaceholder, format!("'{name}' needs exactly one of regex or a non-empty enum")),
            }
            if p.max_bytes == 0 {
                r.problem(at, ProblemCode::OutOfRange, format!("'{name}': max_bytes must be at least 1"));
            }
        }
    }
}

fn valid_env_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty() && !b[0].is_ascii_digit() && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

fn default_secret_via() -> SecretDelivery {
    SecretDelivery::Stdin
}
fn default_command_timeout_ms() -> u64 {
    30_000
}
fn default_max_output_bytes() -> usize {
    64 * 1024
}
fn default_max_arg_bytes() -> usize {
    4096
}
