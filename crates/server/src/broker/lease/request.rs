//! `request_lease`: the agent's arguments checked against the base handle's lease policy and
//! the caller's chain. Nothing is created here.

use crate::broker::{Broker, Caller};
use airlock_core::executor::strip_serde_detail;
use airlock_core::config::{table_in, Handle, HandleKind, Scope, AWS_MIN_TTL_SECONDS};
use airlock_core::{CallError, ErrorCode};
use super::scope_str;
use airlock_store::leases::{stamp, NewLease};
use serde::Deserialize;
use serde_json::Value;

/// A database lease's lifetime when the request names none (`airlock lease issue` without
/// `--ttl`), within every handle's `max_ttl_seconds` by default.
fn default_lease_ttl() -> u64 {
    300
}

/// `request_lease` arguments on a database handle, as the agent sends them (besides
/// `credential_handle`).
///
/// The doc comments of the fields are the descriptions in the tool's JSON Schema (`schemars`).
/// A tool list with database and aws handles shows one schema for both types, so a field they
/// share says the same in both.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLeaseArgs {
    /// The lease's access: `read_only`, or `read_write` where the handle allows it.
    scope: Scope,
    /// Lifetime in seconds; the handle's policy caps it (aws handles: 900, STS's minimum and the
    /// default, or more).
    #[serde(default = "default_lease_ttl")]
    #[schemars(range(min = 1))]
    ttl_seconds: u64,
    /// Database handles: the tables the lease may touch (default: all of the handle's).
    #[serde(default)]
    tables: Option<Vec<String>>,
    /// A task from POST /v1/tasks; closing it revokes the lease.
    #[serde(default)]
    task_id: Option<String>,
}

impl LeaseRequest {
    /// The TTL asked for, in seconds.
    pub(crate) fn ttl(&self) -> u64 {
        self.ttl
    }
}

/// `request_lease` arguments on an aws handle (besides `credential_handle`).
///
/// The doc comments of the fields are the descriptions in the tool's JSON Schema, as for
/// [`RawLeaseArgs`].
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAwsLeaseArgs {
    /// The lease's access: `read_only`, or `read_write` where the handle allows it.
    scope: Scope,
    /// Lifetime in seconds; the handle's policy caps it (aws handles: 900, STS's minimum and the
    /// default, or more).
    #[serde(default)]
    #[schemars(range(min = AWS_MIN_TTL_SECONDS))]
    ttl_seconds: Option<u64>,
    /// aws handles: the buckets the lease may use with s3_object (default: all of the handle's).
    #[serde(default)]
    buckets: Option<Vec<String>>,
    /// A task from POST /v1/tasks; closing it revokes the lease.
    #[serde(default)]
    task_id: Option<String>,
}

/// A checked lease request: every value is within the handle's lease policy, and the tables
/// are in the configuration's spelling.
#[derive(Debug)]
pub(crate) struct LeaseRequest {
    /// Read-only or read-write.
    pub(super) scope: Scope,
    /// Seconds.
    pub(super) ttl: u64,
    /// The tables of a database lease.
    pub(super) tables: Option<Vec<String>>,
    /// The buckets of an aws lease (sorted, each one of the handle's).
    pub(super) buckets: Option<Vec<String>>,
    /// The task the lease ends with, if any.
    pub(super) task_id: Option<String>,
}

impl LeaseRequest {
    /// The record of a lease issued for this request (a role-less lease of the request's
    /// buckets; callers set `dynamic`, `role_name` and `buckets` where they differ).
    pub(super) fn record<'a>(&'a self, id: &'a str, handle: &'a str, base: &'a Handle, agent_id: &'a str, expires_at: &'a str) -> NewLease<'a> {
        NewLease {
            id,
            handle,
            base: base.name.as_str(),
            agent_id,
            scope: scope_str(self.scope),
            tables: self.tables.as_deref(),
            dynamic: false,
            role_name: None,
            buckets: self.buckets.as_deref(),
            task_id: self.task_id.as_deref(),
            expires_at,
        }
    }
}

/// Table names an agent may write when neither the handle nor its lease policy lists tables:
/// plain identifiers (`name` or `schema.name`), lower-cased, so that they can go into a GRANT.
fn identifier(t: &str) -> Option<String> {
    let ok = |p: &str| {
        let b = p.as_bytes();
        !b.is_empty() && b.len() <= 63 && (b[0].is_ascii_alphabetic() || b[0] == b'_') && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
    };
    let parts: Vec<&str> = t.split('.').collect();
    (parts.len() <= 2 && parts.iter().all(|p| ok(p))).then(|| t.to_ascii_lowercase())
}

impl Broker {
    /// Checks a `request_lease` call against the base handle's lease policy. Nothing is created
    /// here; a refusal leaves no trace but its audit record.
    pub(crate) fn validate_lease(&self, caller: &Caller, base: &Handle, args: &Value) -> Result<LeaseRequest, CallError> {
        if base.kind == HandleKind::Aws {
            return self.validate_aws_lease(caller, base, args);
        }
        let a: RawLeaseArgs = serde_json::from_value(args.clone()).map_err(|e| {
            CallError::with_message(ErrorCode::InvalidArguments, format!("invalid arguments: {}", strip_serde_detail(&e)))
        })?;
        let cfg = self.cfg();
        let policy = cfg.leases.get(&base.name).ok_or_else(|| CallError::new(ErrorCode::LeaseNotAllowed))?;
        let db = base.database().ok_or_else(|| CallError::new(ErrorCode::LeaseNotAllowed))?;
        // The per-agent limit of the agent and of every ancestor: a child never outlives what
        // its parents could lease.
        let max = std::iter::once(caller.agent.name.as_str())
            .chain(caller.parents.iter().map(String::as_str))
            .map(|n| policy.max_ttl_for(n))
            .min()
            .unwrap_or(policy.max_ttl_seconds);
        if a.ttl_seconds == 0 || a.ttl_seconds > max {
            return Err(CallError::with_message(
                ErrorCode::LeaseNotAllowed,
                format!("ttl_seconds must be between 1 and {max} for this handle"),
            ));
        }
        if let Some(exp) = &caller.agent.expires_at {
            let until = chrono::Utc::now() + chrono::Duration::seconds(a.ttl_seconds as i64);
            if stamp(until).as_str() > exp.as_str() {
                return Err(CallError::with_message(ErrorCode::LeaseNotAllowed, "the lease would outlive the agent"));
            }
        }
        if !policy.scopes.contains(&a.scope) || (db.scope == Scope::ReadOnly && a.scope == Scope::ReadWrite) {
            return Err(CallError::with_message(ErrorCode::LeaseNotAllowed, "this scope is not allowed for leases of this handle"));
        }
        let allowed = policy.tables.as_ref().or(db.tables.as_ref());
        let tables = match (&a.tables, allowed) {
            (None, allowed) => allowed.cloned(),
            (Some(ts), _) if ts.is_empty() => {
                return Err(CallError::with_message(ErrorCode::InvalidArguments, "tables, when given, names at least one table"))
            }
            (Some(ts), Some(allowed)) => {
                let mut out = Vec::new();
                for t in ts {
                    match table_in(t, allowed) {
                        Some(c) => out.push(c),
                        None => return Err(CallError::new(ErrorCode::TableNotAllowed)),
                    }
                }
                Some(out)
            }
            (Some(ts), None) => {
                let mut out = Vec::new();
                for t in ts {
                    out.push(identifier(t).ok_or_else(|| CallError::new(ErrorCode::TableNotAllowed))?);
                }
                Some(out)
            }
        };
        let tables = tables.map(|mut t| {
            t.sort();
            t.dedup();
            t
        });
        Ok(LeaseRequest { scope: a.scope, ttl: a.ttl_seconds, tables, buckets: None, task_id: a.task_id })
    }

    /// [`Broker::validate_lease`] for an aws handle: a duration from 900 seconds (STS's
    /// minimum, the default) to the handle's `max_ttl_seconds`, a scope and buckets the handle
    /// allows. Nothing is asked of STS here.
    fn validate_aws_lease(&self, caller: &Caller, base: &Handle, args: &Value) -> Result<LeaseRequest, CallError> {
        let a: RawAwsLeaseArgs = serde_json::from_value(args.clone()).map_err(|e| {
            CallError::with_message(ErrorCode::InvalidArguments, format!("invalid arguments: {}", strip_serde_detail(&e)))
        })?;
        let aws = base.aws().ok_or_else(|| CallError::new(ErrorCode::LeaseNotAllowed))?;
        let ttl = a.ttl_seconds.unwrap_or(AWS_MIN_TTL_SECONDS);
        if ttl < AWS_MIN_TTL_SECONDS || ttl > aws.max_ttl_seconds {
            return Err(CallError::with_message(
                ErrorCode::LeaseNotAllowed,
                format!("ttl_seconds must be between {AWS_MIN_TTL_SECONDS} (STS's minimum) and {} for this handle", aws.max_ttl_seconds),
            ));
        }
        if let Some(exp) = &caller.agent.expires_at {
            let until = chrono::Utc::now() + chrono::Duration::seconds(ttl as i64);
            if stamp(until).as_str() > exp.as_str() {
                return Err(CallError::with_message(ErrorCode::LeaseNotAllowed, "the lease would outlive the agent"));
            }
        }
        if !aws.scopes.contains(&a.scope) {
            return Err(CallError::with_message(ErrorCode::LeaseNotAllowed, "this scope is not allowed for leases of this handle"));
        }
        let mut buckets = match a.buckets {
            None => aws.buckets.clone(),
            Some(b) if b.is_empty() => {
                return Err(CallError::with_message(ErrorCode::InvalidArguments, "buckets, when given, names at least one bucket"))
            }
            Some(b) => {
                if let Some(x) = b.iter().find(|x| !aws.buckets.contains(x)) {
                    let shown: String = x.chars().take(63).collect();
                    return Err(CallError::with_message(ErrorCode::BucketNotAllowed, format!("bucket '{}' is not one of this handle's", shown.escape_debug())));
                }
                b
            }
        };
        buckets.sort();
        buckets.dedup();
        Ok(LeaseRequest { scope: a.scope, ttl, tables: None, buckets: Some(buckets), task_id: a.task_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_written_table_names_are_plain_identifiers() {
        assert_eq!(identifier("Orders").as_deref(), Some("orders"));
        assert_eq!(identifier("sales.items").as_deref(), Some("sales.items"));
        for bad in ["", "a;b", "a.b.c", "1x", "a b", "x\"y", "t'--", "\u{0430}"] {
            assert_eq!(identifier(bad), None, "{bad}");
        }
    }
}
