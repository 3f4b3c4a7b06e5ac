//! `[handles.NAME]`: each handle's kind, secret and description, the constraints of its kind,
//! and its lease, approval and results tables.

use super::approvals::ApprovalRule;
use super::aws::{AwsConstraints, RawAws};
use super::command::{CommandConstraints, RawCommand};
use super::database::DatabaseConstraints;
use super::http::{HttpConstraints, RawHttp};
use super::oauth::{OauthConstraints, RawOauth};
use super::leases::{LeasePolicy, LeaseTarget, LEASE_SUFFIX_LEN};
use super::problem::ProblemCode;
use super::results::ResultsPolicy;
use super::secret_ref::SecretRef;
use super::smtp::{RawSmtp, SmtpConstraints};
use super::source::{get, FieldPath, Report};
use super::vault::Vaults;
use crate::handle::HandleName;
use crate::kind::HandleKind;
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use toml::de::DeValue;
use toml::Spanned;

/// A handle's constraints, by kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Constraints {
    /// For postgres, mysql and sqlite handles.
    Database(DatabaseConstraints),
    /// For http handles.
    Http(HttpConstraints),
    /// For generic handles.
    None,
    /// For smtp handles.
    Smtp(SmtpConstraints),
    /// For command handles.
    Command(CommandConstraints),
    /// For aws handles.
    Aws(AwsConstraints),
    /// For oauth handles.
    Oauth(OauthConstraints),
}

/// A validated handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handle {
    /// Its name.
    pub name: HandleName,
    /// Its kind.
    pub kind: HandleKind,
    /// Where its secret lives.
    pub secret: SecretRef,
    /// What it is for, shown to agents in tool descriptions (never a value).
    pub description: String,
    /// Its constraints.
    pub constraints: Constraints,
}

impl Handle {
    /// The database constraints, if this is a database handle.
    pub fn database(&self) -> Option<&DatabaseConstraints> {
        match &self.constraints {
            Constraints::Database(d) => Some(d),
            _ => None,
        }
    }

    /// The SMTP constraints, if this is an SMTP handle.
    pub fn smtp(&self) -> Option<&SmtpConstraints> {
        match &self.constraints {
            Constraints::Smtp(s) => Some(s),
            _ => None,
        }
    }

    /// The command constraints, if this is a command handle.
    pub fn command(&self) -> Option<&CommandConstraints> {
        match &self.constraints {
            Constraints::Command(c) => Some(c),
            _ => None,
        }
    }

    /// The HTTP constraints, if this is an HTTP handle or an oauth handle (whose access token
    /// goes only to these destinations).
    pub fn http(&self) -> Option<&HttpConstraints> {
        match &self.constraints {
            Constraints::Http(h) => Some(h),
            Constraints::Oauth(o) => Some(&o.http),
            _ => None,
        }
    }

    /// The oauth constraints, if this is an oauth handle.
    pub fn oauth(&self) -> Option<&OauthConstraints> {
        match &self.constraints {
            Constraints::Oauth(o) => Some(o),
            _ => None,
        }
    }

    /// The AWS constraints, if this is an aws handle (or a lease of one).
    pub fn aws(&self) -> Option<&AwsConstraints> {
        match &self.constraints {
            Constraints::Aws(a) => Some(a),
            _ => None,
        }
    }
}

/// `[handles.NAME]` as written. Its tables are read one by one, so that a mistake in one does
/// not hide those in the others; they are named here so that any other key is refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "the table fields only name the keys; their values are read on their own")]
struct RawHandle {
    kind: HandleKind,
    secret: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    database: Option<IgnoredAny>,
    #[serde(default)]
    http: Option<IgnoredAny>,
    #[serde(default)]
    smtp: Option<IgnoredAny>,
    #[serde(default)]
    command: Option<IgnoredAny>,
    #[serde(default)]
    aws: Option<IgnoredAny>,
    #[serde(default)]
    oauth: Option<IgnoredAny>,
    #[serde(default)]
    lease: Option<IgnoredAny>,
    #[serde(default)]
    approval: Option<IgnoredAny>,
    #[serde(default)]
    results: Option<IgnoredAny>,
}

/// The tables of constraints: one per kind but for generic handles, which take none, and oauth
/// handles, which take `[oauth]` and `[http]`.
const CONSTRAINT_TABLES: [&str; 6] = ["database", "http", "smtp", "command", "aws", "oauth"];

/// The `[handles]` of a file.
#[derive(Default)]
pub(super) struct Handles {
    /// The valid handles, by name.
    pub(super) handles: BTreeMap<HandleName, Handle>,
    /// Lease policies of the handles that have one.
    pub(super) leases: BTreeMap<HandleName, LeasePolicy>,
    /// Approval rules of the handles that have one.
    pub(super) approvals: BTreeMap<HandleName, ApprovalRule>,
    /// Result policies of the handles that set one.
    pub(super) results: BTreeMap<HandleName, ResultsPolicy>,
    /// Every handle the file declares, valid or not, with its kind when that much is known: a
    /// grant naming one of them is not reported again as unknown.
    pub(super) declared: BTreeMap<String, Option<HandleKind>>,
}

/// Checks every `[handles.NAME]` table.
pub(super) fn check_all<'s, 't>(
    r: &mut Report<'s, 't>,
    section: Option<&'s Spanned<DeValue<'t>>>,
    vaults: &Vaults,
    base: &Path,
) -> Handles {
    let at = FieldPath::root().key("handles");
    let mut out = Handles::default();
    for (name, value) in r.entries(&at, section) {
        let at = at.key(name);
        let before = r.count();
        let hname = HandleName::parse(name).map_err(|e| r.problem(&at, ProblemCode::BadHandleName, e.to_string())).ok();
        let Some(raw) = r.de_lenient::<RawHandle>(&at, value) else {
            out.declared.insert(name.to_owned(), None);
            continue;
        };
        out.declared.insert(name.to_owned(), Some(raw.kind));
        let parts = check_parts(r, &at, value.get_ref(), &raw, &HandleCtx { name, vaults, base });
        let (Some(hname), Some(secret), Some(constraints)) = (hname, parts.secret, parts.constraints) else { continue };
        if r.count() != before {
            continue;
        }
        if let Some(lp) = parts.lease {
            out.leases.insert(hname.clone(), lp);
        }
        if let Some(ar) = parts.approval {
            out.approvals.insert(hname.clone(), ar);
        }
        if let Some(rp) = parts.results {
            out.results.insert(hname.clone(), rp);
        }
        let handle = Handle { name: hname.clone(), kind: raw.kind, secret, description: raw.description, constraints };
        out.handles.insert(hname, handle);
    }
    out
}

/// What a handle's table is checked with besides its own text.
struct HandleCtx<'a> {
    /// The handle's name as written.
    name: &'a str,
    /// The file's vaults.
    vaults: &'a Vaults,
    /// The directory relative paths start from.
    base: &'a Path,
}

/// What came out of a handle's table; `None` where it was not valid.
struct HandleParts {
    secret: Option<SecretRef>,
    constraints: Option<Constraints>,
    lease: Option<LeasePolicy>,
    approval: Option<ApprovalRule>,
    results: Option<ResultsPolicy>,
}

/// Checks the secret, the constraints and the lease, approval and results tables of one handle.
fn check_parts<'s, 't>(r: &mut Report<'s, 't>, at: &FieldPath, value: &'s DeValue<'t>, raw: &RawHandle, ctx: &HandleCtx<'_>) -> HandleParts {
    let kind = raw.kind;
    let secret = check_secret(r, &at.join("secret"), &raw.secret, ctx.vaults, ctx.base);
    let constraints = check_constraints(r, at, ctx, value, kind);
    let db = match &constraints {
        Some(Constraints::Database(db)) => Some(db),
        _ => None,
    };
    let lease = sub_table::<LeasePolicy>(r, at, value, "lease");
    if let Some(lp) = &lease {
        // Without valid database constraints, only what does not depend on them is checked.
        lp.check(r, &at.join("lease"), &LeaseTarget { name: ctx.name, kind, db, vaults: ctx.vaults });
    }
    let approval = sub_table::<ApprovalRule>(r, at, value, "approval");
    if let Some(ar) = &approval {
        // A lease table in error was reported already: no second problem for the rule.
        ar.check(r, &at.join("approval"), kind, raw.lease.is_some());
    }
    let results = sub_table::<ResultsPolicy>(r, at, value, "results");
    HandleParts { secret, constraints, lease, approval, results }
}

/// The secret reference, and the vault it names (if any) defined.
fn check_secret(r: &mut Report<'_, '_>, at: &FieldPath, s: &str, vaults: &Vaults, base: &Path) -> Option<SecretRef> {
    match SecretRef::parse(s, base) {
        Ok(secret) => {
            if let SecretRef::Remote(remote) = &secret {
                vaults.check_defined(r, at, &remote.vault);
            }
            Some(secret)
        }
        Err(m) => {
            r.problem(at, ProblemCode::BadSecretRef, m);
            None
        }
    }
}

/// The table of constraints of the handle's kind, and no other.
fn check_constraints<'s, 't>(r: &mut Report<'s, 't>, at: &FieldPath, ctx: &HandleCtx<'_>, value: &'s DeValue<'t>, kind: HandleKind) -> Option<Constraints> {
    let name = ctx.name;
    let own = match kind {
        HandleKind::Postgres | HandleKind::Mysql | HandleKind::Sqlite => "database",
        HandleKind::Http => "http",
        HandleKind::Smtp => "smtp",
        HandleKind::Command => "command",
        HandleKind::Aws => "aws",
        HandleKind::Oauth => "oauth",
        HandleKind::Generic => "",
    };
    let owns = |t: &str| t == own || (kind == HandleKind::Oauth && t == "http");
    for table in CONSTRAINT_TABLES.into_iter().filter(|t| !owns(t) && get(value, t).is_some()) {
        let msg = if own.is_empty() {
            "generic handles take no constraints".to_owned()
        } else {
            format!("a {} handle takes [{own}] constraints, not [{table}]", kind.as_str())
        };
        r.problem(&at.join(table), ProblemCode::WrongConstraints, msg);
        if let Some(v) = get(value, table) {
            check_shape(r, &at.join(table), table, v);
        }
    }
    let sub = at.join(own);
    let needs = |r: &mut Report<'_, '_>, what: &str| {
        r.problem(&sub, ProblemCode::MissingConstraints, what);
        None
    };
    match kind {
        HandleKind::Generic => Some(Constraints::None),
        HandleKind::Postgres | HandleKind::Mysql | HandleKind::Sqlite => match get(value, "database") {
            None => Some(Constraints::Database(DatabaseConstraints::default())),
            Some(v) => {
                let d = r.de::<DatabaseConstraints>(&sub, v)?;
                let before = r.count();
                d.check(r, &sub);
                if d.query_role.is_some() && kind != HandleKind::Postgres {
                    // MariaDB's SET ROLE adds a role's privileges to the user's own instead of
                    // replacing them, and SQLite has no roles: neither can narrow a credential.
                    let msg = "PostgreSQL only (a MariaDB role adds to the user's privileges; use a least-privilege user or a lease)";
                    r.problem(&sub.join("query_role"), ProblemCode::BadValue, msg);
                }
                (r.count() == before).then_some(Constraints::Database(d))
            }
        },
        HandleKind::Http => match get(value, "http") {
            None => needs(r, "an http handle needs [http] destinations and inject"),
            Some(v) => r.de::<RawHttp>(&sub, v)?.check(r, &sub, false).map(Constraints::Http),
        },
        HandleKind::Smtp => match get(value, "smtp") {
            None => needs(r, "an smtp handle needs [smtp] host, username, from and allowed_recipients"),
            Some(v) => r.de::<RawSmtp>(&sub, v)?.check(r, &sub).map(Constraints::Smtp),
        },
        HandleKind::Command => match get(value, "command") {
            None => needs(r, "a command handle needs [command] program"),
            Some(v) => r.de::<RawCommand>(&sub, v)?.check(r, &sub).map(Constraints::Command),
        },
        HandleKind::Oauth => {
            let http_at = at.join("http");
            let (Some(o), Some(h)) = (get(value, "oauth"), get(value, "http")) else {
                return needs(r, "an oauth handle needs [oauth] (provider, client_id, owners) and [http] destinations");
            };
            let provider = r.de::<RawOauth>(&sub, o).and_then(|raw| raw.check(r, &sub, ctx.base));
            let http = r.de::<RawHttp>(&http_at, h).and_then(|raw| raw.check(r, &http_at, true));
            Some(Constraints::Oauth(OauthConstraints { http: http?, provider: provider? }))
        }
        HandleKind::Aws => {
            if name.len() + LEASE_SUFFIX_LEN > 64 {
                r.problem(at, ProblemCode::NameTooLong, "an aws handle's name is at most 55 characters (its leases add 9)");
            }
            match get(value, "aws") {
                None => needs(r, "an aws handle needs [aws] region, role_arn and buckets"),
                Some(v) => r.de::<RawAws>(&sub, v)?.check(r, &sub).map(Constraints::Aws),
            }
        }
    }
}

/// Reports the shape problems (unknown keys, wrong types) of a table of constraints that does
/// not belong to the handle's kind, as for one that does.
fn check_shape<'s, 't>(r: &mut Report<'s, 't>, at: &FieldPath, table: &str, value: &'s Spanned<DeValue<'t>>) {
    match table {
        "database" => r.de::<DatabaseConstraints>(at, value).map(drop),
        "http" => r.de::<RawHttp>(at, value).map(drop),
        "smtp" => r.de::<RawSmtp>(at, value).map(drop),
        "command" => r.de::<RawCommand>(at, value).map(drop),
        "aws" => r.de::<RawAws>(at, value).map(drop),
        "oauth" => r.de::<RawOauth>(at, value).map(drop),
        _ => None,
    };
}

/// The handle's table `name`, deserialized, when it is there and of the right shape.
fn sub_table<'s, 't, T: serde::de::DeserializeOwned>(r: &mut Report<'s, 't>, at: &FieldPath, value: &'s DeValue<'t>, name: &str) -> Option<T> {
    get(value, name).and_then(|v| r.de::<T>(&at.join(name), v))
}
