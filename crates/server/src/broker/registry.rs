//! The executors, and the one place the broker goes from a tool to its executor.
//!
//! Every tool but `request_lease` is an [`Executor`]: validate the arguments against the handle
//! (no secret), say what the call does ([`CallFacts`]), execute with the secret and return
//! [`Unscrubbed`] output. A lease is issued by the broker's lease component (it creates roles or
//! STS sessions with the *base* handle's secret, resolved only when needed), behind the same
//! three steps.
//!
//! Adding a tool: a variant of [`airlock_core::Tool`], an executor crate implementing
//! [`Executor`], a field of [`Executors`] and one arm in each `match` below.

use super::lease::request::LeaseRequest;
use super::oauth::{ConnectArgs, ConnectStatusArgs, Requester};
use super::share::ShareExecutor;
use super::{Broker, Caller};
use airlock_core::config::{Config, Handle};
use airlock_core::executor::parse_args;
use airlock_core::{CallError, CallFacts, Executor, Tool, Unscrubbed, ValidateCtx};
use airlock_exec_aws::AwsExecutor;
use airlock_exec_command::CommandExecutor;
use airlock_exec_email::EmailExecutor;
use airlock_exec_http::HttpExecutor;
use airlock_exec_sql::SqlExecutor;
use airlock_store::Store;
use serde_json::Value;

/// One executor per tool, built once.
pub(crate) struct Executors {
    pub(crate) sql: SqlExecutor,
    pub(crate) http: HttpExecutor,
    email: EmailExecutor,
    command: CommandExecutor,
    pub(crate) aws: AwsExecutor,
    pub(crate) share: ShareExecutor,
}

impl Executors {
    pub(crate) fn new(cfg: &Config, store: Store) -> Executors {
        Executors {
            sql: SqlExecutor::new(),
            http: HttpExecutor::new(),
            email: EmailExecutor::new(),
            command: CommandExecutor::new(airlock_exec_command::SandboxSettings::from_config(cfg)),
            aws: AwsExecutor::new(),
            share: ShareExecutor::new(store, cfg),
        }
    }
}

/// A validated call, ready to run once its secret is resolved.
pub(crate) enum Prepared {
    Sql(<SqlExecutor as Executor>::Prepared),
    Http(<HttpExecutor as Executor>::Prepared),
    Email(<EmailExecutor as Executor>::Prepared),
    Command(<CommandExecutor as Executor>::Prepared),
    Share(super::share::ValidatedShare),
    S3(<AwsExecutor as Executor>::Prepared),
    Lease(LeaseRequest),
    Connect(ConnectArgs),
    ConnectStatus(ConnectStatusArgs),
}

/// Parses `args` for executor `E` and validates them.
fn validate<E: Executor>(e: &E, handle: &Handle, args: &Value, ctx: &ValidateCtx<'_>) -> Result<E::Prepared, CallError> {
    e.validate(handle, parse_args(args)?, ctx)
}

impl Prepared {
    /// Checks `args` for `tool` on `handle`, before any secret is resolved.
    pub(crate) fn validate(broker: &Broker, caller: &Caller, tool: Tool, handle: &Handle, args: &Value) -> Result<Prepared, CallError> {
        let x = &broker.executors;
        let scrubber = broker.scrubber();
        let known = |t: &str| scrubber.contains_known_secret(t);
        let ctx = ValidateCtx { agent_id: &caller.agent.id, agent_name: &caller.agent.name, contains_known_secret: &known };
        Ok(match tool {
            Tool::QueryDb => Prepared::Sql(validate(&x.sql, handle, args, &ctx)?),
            Tool::HttpRequest => Prepared::Http(validate(&x.http, handle, args, &ctx)?),
            Tool::SendEmail => Prepared::Email(validate(&x.email, handle, args, &ctx)?),
            Tool::RunCommand => Prepared::Command(validate(&x.command, handle, args, &ctx)?),
            Tool::ShareSecret => Prepared::Share(x.share.validate(handle, parse_args(args)?, &ctx)?),
            Tool::S3Object => Prepared::S3(validate(&x.aws, handle, args, &ctx)?),
            Tool::RequestLease => Prepared::Lease(broker.validate_lease(caller, handle, args)?),
            Tool::ConnectAccount => Prepared::Connect(parse_args(args)?),
            Tool::ConnectStatus => Prepared::ConnectStatus(parse_args(args)?),
            // They name no configured handle and never reach this step (`invoke_request`).
            Tool::RequestSecret | Tool::RequestStatus => return Err(CallError::new(airlock_core::ErrorCode::UnknownTool)),
        })
    }

    /// What approval rules and the intent record look at.
    pub(crate) fn facts(&self, broker: &Broker, handle: &Handle) -> CallFacts {
        let x = &broker.executors;
        match self {
            Prepared::Sql(p) => x.sql.facts(handle, p),
            Prepared::Http(p) => x.http.facts(handle, p),
            Prepared::Email(p) => x.email.facts(handle, p),
            Prepared::Command(p) => x.command.facts(handle, p),
            Prepared::Share(p) => x.share.facts(handle, p),
            Prepared::S3(p) => x.aws.facts(handle, p),
            // A lease may create a database role or an STS session.
            Prepared::Lease(l) => CallFacts { side_effects: true, lease_ttl: Some(l.ttl()), ..CallFacts::default() },
            // A code is sent to the owner.
            Prepared::Connect(a) => CallFacts { side_effects: true, recipients: vec![a.owner.clone()], ..CallFacts::default() },
            Prepared::ConnectStatus(_) => CallFacts::default(),
        }
    }

    /// Runs the call: resolves the handle's secret and hands it to the executor. A lease
    /// resolves its base's secret only if it creates a role (in `issue_lease`).
    pub(crate) async fn run(&self, broker: &Broker, caller: &Caller, handle: &Handle) -> Result<Unscrubbed, CallError> {
        let x = &broker.executors;
        // `query_db` and `http_request` run in place; every other tool's future is boxed, so
        // that the call's future is as large as theirs only (`broker::call`, "Small futures").
        match self {
            Prepared::Sql(p) => Executor::execute(&x.sql, handle, p, &broker.resolve(handle).await?).await,
            // An oauth handle's secret is its client's: the request carries the account's token.
            Prepared::Http(p) if handle.oauth().is_some() => Box::pin(broker.oauth_http(handle, p)).await,
            Prepared::Http(p) => Executor::execute(&x.http, handle, p, &broker.resolve(handle).await?).await,
            Prepared::Email(p) => Box::pin(Executor::execute(&x.email, handle, p, &broker.resolve(handle).await?)).await,
            Prepared::Command(p) => Box::pin(Executor::execute(&x.command, handle, p, &broker.resolve(handle).await?)).await,
            // Made here, delivered by the broker, withdrawn if the delivery fails.
            Prepared::Share(p) => Box::pin(broker.share_secret(handle, p)).await,
            Prepared::S3(p) => Box::pin(Executor::execute(&x.aws, handle, p, &broker.resolve(handle).await?)).await,
            Prepared::Lease(req) => Box::pin(broker.issue_lease(caller, handle, req)).await.map(Unscrubbed::new),
            Prepared::Connect(a) => {
                let by = Requester { id: &caller.agent.id, name: &caller.agent.name };
                Box::pin(broker.connect_account(handle, a, by)).await.map(Unscrubbed::new)
            }
            Prepared::ConnectStatus(a) => Box::pin(broker.connect_status(handle, a, &caller.agent.id)).await.map(Unscrubbed::new),
        }
    }
}
