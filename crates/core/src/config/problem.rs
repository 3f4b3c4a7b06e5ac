//! What a configuration can get wrong: [`ConfigError`], the [`Problem`]s it lists and their
//! stable [`ProblemCode`]s.

use serde::Serialize;
use std::fmt;

/// A configuration that cannot be used.
///
/// Its `Display` lists every problem, one per line, each as
/// `FILE:LINE: FIELD: MESSAGE [CODE]` (`FILE: FIELD: ...` when the place is not known).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {message}")]
    Read {
        /// The configuration file.
        file: String,
        /// The I/O error.
        message: String,
    },
    /// The text holds one problem or more: TOML that does not parse, keys or values of the
    /// wrong shape, or settings that are not valid. Every problem found is listed, in file
    /// order.
    #[error("{}", list_problems(.file, .problems))]
    Invalid {
        /// The configuration file.
        file: String,
        /// Every problem found, in file order (those with no known place last).
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// Every problem found (none for [`ConfigError::Read`]).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            ConfigError::Read { .. } => &[],
        }
    }
}

fn list_problems(file: &str, problems: &[Problem]) -> String {
    problems.iter().map(|p| p.display_in(file).to_string()).collect::<Vec<_>>().join("\n")
}

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Problem {
    /// What kind of problem it is; stable, for scripts and documentation.
    pub code: ProblemCode,
    /// Dotted path of the setting, for example `handles.DB_PROD.database.scope` or
    /// `agents.bot.grants[0]`; empty for the document as a whole.
    pub field: String,
    /// What is wrong, on one line.
    pub message: String,
    /// Where in the file, when known.
    pub location: Option<Location>,
}

impl Problem {
    /// A problem; `message` is folded onto one line.
    pub fn new(code: ProblemCode, field: impl Into<String>, message: &str, location: Option<Location>) -> Self {
        let message = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ");
        Problem { code, field: field.into(), message, location }
    }

    /// The problem as one line naming `file`: `FILE:LINE: FIELD: MESSAGE [CODE]`.
    pub fn display_in<'a>(&'a self, file: &'a str) -> impl fmt::Display + 'a {
        InFile { file, problem: self }
    }
}

struct InFile<'a> {
    file: &'a str,
    problem: &'a Problem,
}

impl fmt::Display for InFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.problem;
        match p.location {
            Some(l) => write!(f, "{}:{}: ", self.file, l.line)?,
            None => write!(f, "{}: ", self.file)?,
        }
        if !p.field.is_empty() {
            write!(f, "{}: ", p.field)?;
        }
        write!(f, "{} [{}]", p.message, p.code)
    }
}

/// A place in the configuration text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

/// The stable, kebab-case code of a [`Problem`]. The wire form is [`ProblemCode::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, strum::IntoStaticStr, strum::VariantArray)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
#[non_exhaustive]
pub enum ProblemCode {
    /// The text is not valid TOML.
    TomlSyntax,
    /// A key or table is defined twice.
    DuplicateKey,
    /// A key the table does not have (a misspelling, or a setting of another table).
    UnknownKey,
    /// A required key is absent.
    MissingKey,
    /// A value of the wrong TOML type (a string where a number goes, ...).
    WrongType,
    /// A value of the right type that the setting does not accept (an unknown variant, an
    /// address that does not parse, a character that is not allowed).
    BadValue,
    /// A handle name outside `[A-Z][A-Z0-9_]{0,63}` (T16).
    BadHandleName,
    /// An agent name outside `[a-z][a-z0-9_-]{0,63}`.
    BadAgentName,
    /// A vault name outside `[a-z][a-z0-9_-]{0,63}`.
    BadVaultName,
    /// A secret reference that is not `local:`, `env:`, `file:` or `openbao:`/`vault:` of the
    /// right grammar.
    BadSecretRef,
    /// A vault login credential written in the configuration instead of an `env:` or `file:`
    /// reference.
    SecretInConfig,
    /// A `[vaults.NAME]` that is named but not defined.
    UnknownVault,
    /// A grant names a handle that is not defined.
    UnknownHandle,
    /// A share recipient names a channel that is not defined.
    UnknownChannel,
    /// A setting names a handle of a kind it cannot use (a share channel's handle that is not
    /// smtp).
    WrongHandleKind,
    /// An address the handle it goes through may not send to (a share channel's `to` outside
    /// its smtp handle's `allowed_recipients`).
    RecipientNotAllowed,
    /// An issuer's subject rule names an agent that is not an `[agents]` entry.
    UnknownAgent,
    /// A handle carries a table of constraints of another kind.
    WrongConstraints,
    /// A handle lacks the table of constraints its kind needs.
    MissingConstraints,
    /// A name too long for what is built from it (a lease adds 9 characters).
    NameTooLong,
    /// A number outside the range the setting allows.
    OutOfRange,
    /// A list that must name at least one thing is empty.
    EmptyList,
    /// A URL that does not parse, or has a scheme or parts the setting does not allow.
    BadUrl,
    /// A connection that would carry a credential in clear to a host that is not loopback.
    InsecureTransport,
    /// A base URL for links people open (one-time shares, approval pages) that is http to a
    /// host that is not loopback: the link, and a share's key with it, would cross the network in
    /// clear.
    InsecureLink,
    /// A connection URL that carries a password, which belongs in the secret.
    PasswordInUrl,
    /// An http destination that is not a bare http(s) URL with a host.
    BadDestination,
    /// An HTTP method outside GET, HEAD, POST, PUT, PATCH, DELETE and OPTIONS.
    BadMethod,
    /// A credential injection (header name, format, user name, parameter) that is not valid.
    BadInjection,
    /// A host that is not a host name or an IP address.
    BadHost,
    /// An e-mail address or `@domain` that is not a bare, plausible one.
    BadAddress,
    /// A table name that is not `name` or `schema.name`.
    BadTableName,
    /// A column name of a table's column rule that is not one identifier.
    BadColumnName,
    /// An `allow_functions` entry that is not `name` or `schema.name`.
    BadFunctionName,
    /// A bucket name outside S3's naming rules.
    BadBucketName,
    /// An AWS region name that is not one.
    BadRegion,
    /// An IAM role ARN that is not one.
    BadRoleArn,
    /// A path that must be absolute is relative.
    RelativePath,
    /// A command's argument template, or a lease's statement template, that is not valid.
    BadTemplate,
    /// A command placeholder that is unused, or not exactly one of a valid regex or a
    /// non-empty enum.
    BadPlaceholder,
    /// An environment variable name that is not one, or that would clash with the secret's.
    BadEnvName,
    /// A mount or role that is not one path segment.
    BadPathSegment,
    /// A lease on a handle that cannot be leased that way.
    NotLeasable,
    /// A lease policy wider than its handle (a scope or a table the handle does not allow).
    LeaseWiderThanHandle,
    /// Lease settings of one credential provider given with the other.
    ProviderMismatch,
    /// An approval condition given for a handle it does not apply to.
    NotApplicable,
    /// An approval rule with no condition.
    MissingCondition,
    /// A grant of a tool that does not apply to the handle's kind.
    ToolNotApplicable,
    /// Socket permission bits that would let others connect or lock the owner out.
    UnsafePermissions,
}

impl ProblemCode {
    /// Every code, in declaration order, for documentation and uniqueness tests.
    pub const ALL: &'static [ProblemCode] = <ProblemCode as strum::VariantArray>::VARIANTS;

    /// The wire name, kebab-case.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The code of a problem that serde or the TOML parser reported, from its message.
    pub(crate) fn of_parser_message(message: &str) -> ProblemCode {
        let m = message.trim_start();
        if m.starts_with("unknown field") || m.starts_with("unexpected keys") {
            ProblemCode::UnknownKey
        } else if m.starts_with("missing field") {
            ProblemCode::MissingKey
        } else if m.starts_with("invalid type") || m.starts_with("invalid length") || m.starts_with("wanted ") {
            ProblemCode::WrongType
        } else if m.starts_with("duplicate") {
            ProblemCode::DuplicateKey
        } else {
            ProblemCode::BadValue
        }
    }
}

impl fmt::Display for ProblemCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
