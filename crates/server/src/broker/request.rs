//! Requests for a secret (`request_secret`, `request_status`; README "Requests for a secret";
//! docs/request-format.md).
//!
//! An agent proposes a handle: its name, its kind and its binding (an http key's one
//! destination and how it is injected, a database URL's scope, or a plain secret), and names a
//! recipient from `[shares.recipients]`. The broker makes an intake link `{base}/r/{id}#{proof}`
//! with a fresh X25519 key for that request alone, and delivers it to the recipient, never to
//! the agent (which gets `{request_id, expires_at}`). The person's page shows the exact
//! binding (the `context`, which is also the ciphertext's associated data) and encrypts the
//! value to the request's key (HPKE). On submit the broker opens it, checks the format hints,
//! and stores it under the handle in one transaction with the link's burn. The grant the
//! request proposed applies when policy allows it (`resource.requested` in Cedar) or, failing
//! that, when an approver approves it through the approval flow.

use super::approval::{binding, call_hash, canonical_json, now_ms, CallKey};
use super::delivery::{channel_of, mail_body, Delivery, Purpose};
use super::audit::operator_record;
use super::revocation::{Revoked, Revoker};
use super::share::rfc3339;
use super::{Broker, BrokerError, Caller, Elicit};
use airlock_core::config::{parse_handle, Handle, HandleKind, SecretRef, ShareChannelConfig};
use airlock_core::{CallError, ErrorCode, HandleName, Tool};
use airlock_store::approvals::{ApprovalStatus, NewApproval};
use airlock_store::requests::{intake_seal_name, status, value_seal_name, CreateOutcome, LandOutcome, NewRequest, Request, LEGACY_VALUE_PREFIX};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

/// Longest description shown to the person.
const MAX_DESCRIPTION: usize = 500;

/// The kind of handle a request proposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// An API key for one HTTPS destination (`destination`, `inject`); used with http_request.
    Http,
    /// A PostgreSQL connection URL; used with query_db.
    Postgres,
    /// A MySQL or MariaDB connection URL; used with query_db.
    Mysql,
    /// A plain secret; it can be handed on with share_secret.
    Secret,
}

impl RequestKind {
    fn handle_kind(self) -> HandleKind {
        match self {
            RequestKind::Http => HandleKind::Http,
            RequestKind::Postgres => HandleKind::Postgres,
            RequestKind::Mysql => HandleKind::Mysql,
            RequestKind::Secret => HandleKind::Generic,
        }
    }

    /// The tool the landed handle is granted for.
    fn tool(self) -> Tool {
        match self {
            RequestKind::Http => Tool::HttpRequest,
            RequestKind::Postgres | RequestKind::Mysql => Tool::QueryDb,
            RequestKind::Secret => Tool::ShareSecret,
        }
    }
}

/// Where an http key goes in each request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RequestInjection {
    /// A header whose value is `format` with `{}` replaced by the key (default `Bearer {}`).
    Header {
        /// The header name, for example `Authorization` or `X-API-Key`.
        name: String,
        /// The value format, with exactly one `{}`.
        #[serde(default)]
        format: Option<String>,
    },
    /// A query parameter.
    Query {
        /// The parameter name.
        param: String,
    },
    /// HTTP basic authentication; the key is the password.
    Basic {
        /// The user name.
        username: String,
    },
}

/// What the value must look like; checked when it arrives, never shown to the agent again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FormatHints {
    /// The value starts with this text (for example `sk_live_`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// At least this many characters.
    #[serde(default)]
    pub min_length: Option<u32>,
    /// At most this many characters.
    #[serde(default)]
    pub max_length: Option<u32>,
    /// A regular expression (Rust `regex` syntax) the whole value must match.
    #[serde(default)]
    pub pattern: Option<String>,
}

/// Arguments of `request_secret`. The doc comments are the descriptions in the tool's schema.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestArgs {
    /// The new handle's name: an upper-case letter, then upper-case letters, digits and `_`.
    pub handle: String,
    /// What the secret is for, shown to the person (at most 500 characters).
    pub description: String,
    /// `http` (an API key bound to `destination`), `postgres` or `mysql` (the value is a
    /// connection URL), or `secret` (a plain secret).
    pub kind: RequestKind,
    /// Who is asked: a recipient of `[shares.recipients]`.
    pub recipient: String,
    /// http: the HTTPS URL prefix the key may be sent to, and nowhere else.
    #[serde(default)]
    pub destination: Option<String>,
    /// http: the methods allowed there; default `["GET"]`.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// http: where the key goes in each request; default the `Authorization: Bearer` header.
    #[serde(default)]
    pub inject: Option<RequestInjection>,
    /// postgres, mysql: `read_only` (default) or `read_write`.
    #[serde(default)]
    pub scope: Option<airlock_core::config::Scope>,
    /// What the value must look like.
    #[serde(default)]
    pub format: Option<FormatHints>,
    /// Seconds until the link expires; default 3600.
    #[serde(default)]
    #[schemars(range(min = 60))]
    pub expires_in: Option<u64>,
}

/// Arguments of `request_status`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestStatusArgs {
    /// The id `request_secret` returned.
    pub request_id: String,
}

/// A request checked against the configuration and the policy, before anything is stored.
struct Proposal {
    name: HandleName,
    kind: RequestKind,
    handle: Handle,
    definition: String,
    binding: Value,
    format: FormatHints,
    expires_in: u64,
    recipient: String,
}

/// `rest` is a random id: 16 bytes, base64url (22 characters).
pub fn valid_request_id(id: &str) -> bool {
    id.len() == 22 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn random<const N: usize>() -> [u8; N] {
    use rand::RngCore;
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

fn sha256(b: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, b).as_ref().to_vec()
}

/// Parses the submit proof (base64url of 32 bytes) and returns its SHA-256.
pub fn proof_hash(proof: &str) -> Option<Vec<u8>> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(proof).ok()?;
    (raw.len() == 32).then(|| sha256(&raw))
}

fn invalid(msg: impl Into<String>) -> CallError {
    CallError::with_message(ErrorCode::InvalidArguments, msg)
}

impl FormatHints {
    fn check_shape(&self, max_value: usize) -> Result<(), CallError> {
        if let Some(p) = &self.prefix {
            if p.is_empty() || p.len() > 64 || p.chars().any(char::is_control) {
                return Err(invalid("format.prefix is 1 to 64 printable characters"));
            }
        }
        let (min, max) = (self.min_length.unwrap_or(1) as usize, self.max_length.map_or(max_value, |m| m as usize));
        if min == 0 || min > max || max > max_value {
            return Err(invalid(format!("format lengths are 1 to {max_value}, min_length at most max_length")));
        }
        if let Some(re) = &self.pattern {
            if re.len() > 256 || airlock_share::hints::compile(re).is_none() {
                return Err(invalid("format.pattern is not a regular expression of at most 256 characters"));
            }
        }
        Ok(())
    }

    /// The hints as the intake side checks them on the plaintext.
    fn hints(&self) -> airlock_share::hints::Hints {
        airlock_share::hints::Hints {
            prefix: self.prefix.clone(),
            min_length: self.min_length.map(|m| m as usize),
            max_length: self.max_length.map(|m| m as usize),
            pattern: self.pattern.clone(),
        }
    }
}

/// The `[handles.NAME]` table of the proposed handle, as TOML, and the binding shown to the
/// person. The table is checked by the configuration's own checker (`parse_handle`), so a
/// requested handle can be nothing a configured one could not.
fn definition(name: &HandleName, a: &RequestArgs) -> Result<(String, Value), CallError> {
    let mut table = toml::Table::new();
    table.insert("kind".into(), a.kind.handle_kind().as_str().into());
    // Replaced by the request's own storage name once parsed.
    table.insert("secret".into(), format!("local:{name}").into());
    table.insert("description".into(), a.description.clone().into());
    let binding = match a.kind {
        RequestKind::Http => {
            let url = a.destination.as_deref().ok_or_else(|| invalid("an http request names its destination"))?;
            if !secure_destination(url) {
                return Err(invalid("the destination of a requested key is an https URL (http only to a loopback address)"));
            }
            let methods = a.methods.clone().unwrap_or_else(|| vec!["GET".into()]);
            let inject = a.inject.clone().unwrap_or(RequestInjection::Header { name: "Authorization".into(), format: None });
            let inject_v = match &inject {
                RequestInjection::Header { name, format } => {
                    json!({"type": "header", "name": name, "format": format.clone().unwrap_or_else(|| "Bearer {}".into())})
                }
                RequestInjection::Query { param } => json!({"type": "query", "param": param}),
                RequestInjection::Basic { username } => json!({"type": "basic", "username": username}),
            };
            let http: toml::Table = toml::from_str(&format!(
                "destinations = [{{ url = {}, methods = {} }}]\ninject = {}",
                toml::Value::from(url),
                toml::Value::try_from(&methods).map_err(|_| invalid("bad methods"))?,
                toml::Value::try_from(&inject_v).map_err(|_| invalid("bad inject"))?,
            ))
            .map_err(|_| invalid("the destination or injection cannot be written as a handle"))?;
            table.insert("http".into(), toml::Value::Table(http));
            json!({"destination": url, "methods": methods, "inject": inject_v})
        }
        RequestKind::Postgres | RequestKind::Mysql => {
            if a.destination.is_some() || a.methods.is_some() || a.inject.is_some() {
                return Err(invalid("destination, methods and inject are for http requests"));
            }
            let scope = match a.scope.unwrap_or(airlock_core::config::Scope::ReadOnly) {
                airlock_core::config::Scope::ReadOnly => "read_only",
                airlock_core::config::Scope::ReadWrite => "read_write",
            };
            let mut db = toml::Table::new();
            db.insert("scope".into(), scope.into());
            table.insert("database".into(), toml::Value::Table(db));
            json!({"scope": scope})
        }
        RequestKind::Secret => {
            if a.destination.is_some() || a.methods.is_some() || a.inject.is_some() || a.scope.is_some() {
                return Err(invalid("a plain secret takes no destination, methods, inject or scope"));
            }
            json!({})
        }
    };
    let mut handles = toml::Table::new();
    handles.insert(name.to_string(), toml::Value::Table(table));
    let mut doc = toml::Table::new();
    doc.insert("handles".into(), toml::Value::Table(handles));
    let text = toml::to_string(&doc).map_err(|_| invalid("the request cannot be written as a handle"))?;
    Ok((text, binding))
}

/// A person's key goes only over TLS, or to this machine.
fn secure_destination(url: &str) -> bool {
    match reqwest::Url::parse(url) {
        Ok(u) if u.scheme() == "https" => true,
        Ok(u) if u.scheme() == "http" => match u.host() {
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            None => false,
        },
        _ => false,
    }
}

/// The handle a stored definition makes, its secret in the request's own storage.
pub(crate) fn landed_handle(r: &Request) -> Option<Handle> {
    let name = HandleName::parse(&r.handle).ok()?;
    let mut h = parse_handle(&r.definition, &name).ok()?;
    h.secret = SecretRef::Local(value_seal_name(&r.handle));
    Some(h)
}

/// What a request row says the person will see and the ciphertext is bound to.
fn context(r: &Request) -> &str {
    &r.context
}

impl Broker {
    /// Checks a `request_secret` call: the arguments, the proposed handle (through the
    /// configuration's checker), the recipient and the policy on the proposed handle.
    fn propose(&self, caller: &Caller, a: &RequestArgs) -> Result<Proposal, CallError> {
        let cfg = &self.cfg().requests;
        let name = HandleName::parse(&a.handle).map_err(|e| invalid(format!("handle: {e}")))?;
        // `__L` names a lease of a configured handle.
        if name.as_str().contains("__L") {
            return Err(invalid("handle: a name containing __L is a lease's"));
        }
        if a.description.trim().is_empty() || a.description.chars().count() > MAX_DESCRIPTION || a.description.chars().any(|c| c.is_control() && c != '\n') {
            return Err(invalid(format!("description is 1 to {MAX_DESCRIPTION} printable characters")));
        }
        if !self.cfg().shares.recipients.contains_key(&a.recipient) {
            return Err(CallError::new(ErrorCode::RecipientNotAllowed));
        }
        let expires_in = a.expires_in.unwrap_or(3600);
        if !(60..=cfg.max_expiry_seconds).contains(&expires_in) {
            return Err(invalid(format!("expires_in is 60 to {} seconds", cfg.max_expiry_seconds)));
        }
        let format = a.format.clone().unwrap_or_default();
        format.check_shape(cfg.max_value_bytes)?;
        let (definition, binding) = definition(&name, a)?;
        let mut handle = parse_handle(&definition, &name).map_err(|e| match e {
            airlock_core::config::ConfigError::Invalid { problems, .. } => {
                invalid(problems.iter().map(|p| format!("{}: {}", p.field, p.message)).collect::<Vec<_>>().join("; "))
            }
            other => invalid(other.to_string()),
        })?;
        handle.secret = SecretRef::Local(value_seal_name(name.as_str()));
        // Policy on the handle as proposed: who may ask, for which kinds and hosts.
        let d = self.decide_requested(caller, Tool::RequestSecret, &handle);
        if !d.allowed {
            return Err(CallError::new(ErrorCode::HandleUnavailable));
        }
        if self.cfg().handles.contains_key(&name) {
            return Err(CallError::new(ErrorCode::HandleExists));
        }
        Ok(Proposal { name, kind: a.kind, handle, definition, binding, format, expires_in, recipient: a.recipient.clone() })
    }

    /// The checks of a `request_secret` call before anything is written; the policies that
    /// allowed it.
    pub(crate) fn check_request(&self, caller: &Caller, args: &Value) -> Result<Vec<String>, CallError> {
        let a: RequestArgs = airlock_core::executor::parse_args(args)?;
        let p = self.propose(caller, &a)?;
        Ok(self.decide_requested(caller, Tool::RequestSecret, &p.handle).policies)
    }

    /// `request_secret`: stores the request with its own sealed key, delivers the link to the
    /// recipient, and returns only the id and the expiry.
    pub(crate) async fn request_secret(&self, caller: &Caller, args: &Value) -> Result<(Value, Option<Elicit>), CallError> {
        let a: RequestArgs = airlock_core::executor::parse_args(args)?;
        let p = self.propose(caller, &a)?;
        let cfg = &self.cfg().requests;
        // A recipient reached by elicitation is the person at this very client: only a client
        // that can be sent there.
        let by_elicitation = matches!(channel_of(&self.cfg().shares, &p.recipient), Some(ShareChannelConfig::Elicitation {}));
        if by_elicitation && !caller.elicit_url {
            return Err(CallError::with_message(
                ErrorCode::RecipientNotAllowed,
                "this recipient is the person at an MCP client with URL-mode elicitation; this client does not offer it",
            ));
        }
        if !self.limits.requests.check(&caller.agent.id, cfg.create_per_minute) {
            return Err(CallError::with_message(ErrorCode::RateLimited, "too many requests for secrets; retry later"));
        }
        let id = b64(&random::<16>());
        let proof = b64(&random::<32>());
        let proof_hash = proof_hash(&proof).expect("32 random bytes");
        let expires_at = chrono::Utc::now().timestamp() + p.expires_in as i64;
        let ctx = json!({
            "v": 1,
            "request_id": id,
            "handle": p.name.as_str(),
            "kind": a.kind,
            "description": a.description,
            "from_agent": caller.agent.name,
            "binding": p.binding,
            "grant": [p.kind.tool().name()],
            "format": {"prefix": p.format.prefix, "min_length": p.format.min_length, "max_length": p.format.max_length, "pattern": p.format.pattern},
            "max_value_bytes": cfg.max_value_bytes,
            "expires_at": expires_at,
        });
        let context = canonical_json(&ctx);
        let key = airlock_share::intake::IntakeKey::generate();
        let key_secret = key.to_secret();
        let tools = p.kind.tool().name();
        let kind = p.handle.kind.as_str();
        let max_open = i64::from(cfg.max_open_per_agent);
        let rec = NewRequest {
            id: &id,
            agent_id: &caller.agent.id,
            agent_name: &caller.agent.name,
            handle: p.name.as_str(),
            kind,
            context: &context,
            definition: &p.definition,
            tools,
            recipient: &p.recipient,
            proof_hash: &proof_hash,
            intake_key: &[],
            expires_at,
        };
        let (rec, store) = (&rec, self.store());
        let outcome = self
            .vault()
            .seal_into(&intake_seal_name(&id), &key_secret, move |sealed| async move {
                store.create_request(&NewRequest { intake_key: &sealed, ..rec.clone() }, max_open).await
            })
            .await
            .map_err(|e| CallError::new(ErrorCode::Internal).detail(e.to_string()))?;
        match outcome {
            CreateOutcome::Created => {}
            CreateOutcome::TooMany => {
                return Err(CallError::with_message(
                    ErrorCode::LimitExceeded,
                    format!("at most {} requests may wait for a person at once", cfg.max_open_per_agent),
                ))
            }
            CreateOutcome::HandleTaken => return Err(CallError::new(ErrorCode::HandleExists)),
        }
        let link = format!("{}/r/{id}#{proof}", self.share_base_url());
        let payload = json!({
            "recipient": p.recipient,
            "link": link,
            "request_id": id,
            "handle": p.name.as_str(),
            "description": a.description,
            "expires_at": rfc3339(expires_at),
            "from_agent": caller.agent.name,
        });
        let result = json!({"request_id": id, "handle": p.name.as_str(), "expires_at": rfc3339(expires_at), "recipient": p.recipient, "status": status::PENDING});
        if by_elicitation {
            let message = format!("{} asks you for a secret ({}): {}. Open the link to see where it will be used and send it encrypted.", caller.agent.name, p.name, a.description);
            return Ok((result, Some(Elicit { url: link, id: id.clone(), message })));
        }
        let subject = format!("{} asks you for a secret: {}", caller.agent.name, p.name);
        let intro = format!(
            "The agent {} asks you for a secret through airlock, for: {}\n\nOpen this one-time link to see exactly where it will be used, and send it encrypted:",
            caller.agent.name, a.description
        );
        let body = mail_body(&intro, &link, &format!("The link expires at {}. Nobody else can read what you send, the agent included.", rfc3339(expires_at)));
        let message = Delivery { purpose: Purpose::Request, json: &payload, subject: &subject, body: &body };
        if let Err(e) = self.deliver(&p.recipient, &message).await {
            // A link nobody received must not stay usable.
            let _ = self.store().delete_request(&id).await;
            return Err(CallError::with_message(ErrorCode::UpstreamUnavailable, "the link could not be delivered to the recipient").detail(e));
        }
        Ok((result, None))
    }

    /// `request_status`: the caller's own request, settled first (an approver's decision
    /// applied). Another agent's request is `request-unavailable`, as an unknown one.
    pub(crate) async fn request_status(&self, caller: &Caller, args: &Value) -> Result<Value, CallError> {
        let a: RequestStatusArgs = airlock_core::executor::parse_args(args)?;
        if !valid_request_id(&a.request_id) {
            return Err(CallError::new(ErrorCode::RequestUnavailable));
        }
        let ie = |e: airlock_store::StoreError| CallError::new(ErrorCode::Internal).detail(e.to_string());
        let r = self.store().request(&a.request_id).await.map_err(ie)?;
        let Some(r) = r.filter(|r| r.agent_id == caller.agent.id) else {
            return Err(CallError::new(ErrorCode::RequestUnavailable));
        };
        let r = self.settle(r).await?;
        let now = chrono::Utc::now().timestamp();
        let mut out = json!({"request_id": r.id, "handle": r.handle, "status": r.status_at(now), "expires_at": rfc3339(r.expires_at)});
        if r.status == status::RECEIVED {
            if let Some(id) = &r.approval_id {
                out["approval"] = json!({"id": id, "url": self.approval_url(id)});
            }
        }
        Ok(out)
    }

    /// An operator's revocation of request `id`: a pending link stops opening; a received or
    /// approved value is deleted and its handle stops resolving on every replica (each checks
    /// the request on every call); the name is free again. Audited as
    /// `secret_request_revoked` by `by`. False when no live request has that id.
    pub async fn revoke_request(&self, id: &str, by: &str) -> Result<bool, BrokerError> {
        let Some(r) = self.store().revoke_request(id).await? else { return Ok(false) };
        if let Ok(name) = HandleName::parse(&r.handle) {
            self.executors.sql.forget(&name).await;
        }
        self.audit_request_event(by, "secret_request_revoked", &r, None).await;
        let _ = self.leases.tool_changes.send(r.agent_id.clone());
        Ok(true)
    }

    /// The live request (pending, received or approved) that names `handle`: its id.
    pub async fn live_request_for(&self, handle: &str) -> Result<Option<String>, BrokerError> {
        Ok(self.store().request_for_handle(handle).await?.map(|r| r.id))
    }

    /// Applies an approver's decision to a received request: approved (or used) → approved;
    /// denied or expired → rejected, and the value deleted.
    async fn settle(&self, r: Request) -> Result<Request, CallError> {
        let ie = |e: airlock_store::StoreError| CallError::new(ErrorCode::Internal).detail(e.to_string());
        if r.status != status::RECEIVED {
            return Ok(r);
        }
        let Some(aid) = r.approval_id.clone() else { return Ok(r) };
        let Some(ap) = self.store().approval(&aid, now_ms()).await.map_err(ie)? else { return Ok(r) };
        let changed = match ap.status {
            ApprovalStatus::Pending => false,
            ApprovalStatus::Approved => {
                let ok = self.store().consume_approval(&aid, &ap.binding, now_ms()).await.map_err(ie)?;
                ok && self.store().approve_request(&r.id).await.map_err(ie)?
            }
            ApprovalStatus::Used => self.store().approve_request(&r.id).await.map_err(ie)?,
            ApprovalStatus::Denied | ApprovalStatus::Expired => self.store().reject_request(&r.id).await.map_err(ie)?,
        };
        if changed {
            let after = self.store().request(&r.id).await.map_err(ie)?.unwrap_or(r);
            let event = if after.status == status::APPROVED { "secret_request_approved" } else { "secret_request_rejected" };
            self.audit_request_event(&format!("approver:{}", ap.approver.as_deref().unwrap_or("-")), event, &after, None).await;
            if after.status == status::APPROVED {
                let _ = self.leases.tool_changes.send(after.agent_id.clone());
            }
            return Ok(after);
        }
        Ok(r)
    }

    /// The handle `name` if it landed from a request of `caller`, is approved and grants
    /// `tool`; with the decision to record.
    pub(crate) async fn requested_for(&self, caller: &Caller, name: &HandleName, tool: Tool) -> Option<(Handle, airlock_policy::Decision)> {
        let r = self.store().request_for_handle(name.as_str()).await.ok().flatten()?;
        if r.agent_id != caller.agent.id || !r.tools.split(',').any(|t| t == tool.name()) {
            return None;
        }
        let r = self.settle(r).await.ok()?;
        if r.status != status::APPROVED {
            return None;
        }
        let h = landed_handle(&r)?;
        Some((h, airlock_policy::Decision { allowed: true, policies: vec![format!("request:{}", r.id)], errors: vec![] }))
    }

    /// The approved requested handles of `caller`, with the tool each grants.
    pub(crate) async fn requested_handles(&self, caller: &Caller) -> Vec<(Handle, Tool)> {
        let rows = self.store().approved_requests(&caller.agent.id).await.unwrap_or_default();
        rows.iter()
            .filter_map(|r| {
                let tool = Tool::parse(r.tools.split(',').next()?)?;
                Some((landed_handle(r)?, tool))
            })
            .collect()
    }

    /// The page's view of a pending request: its context (what the person is shown, the AAD)
    /// and its public key. Only with the right proof.
    pub async fn open_request(&self, id: &str, proof: &str, client: &str) -> Result<Value, CallError> {
        let r = self.pending_request(id, proof, client).await?;
        let key = self.intake_key(&r).await?;
        Ok(json!({"request_id": r.id, "context": context(&r), "public_key": key.public_b64()}))
    }

    async fn pending_request(&self, id: &str, proof: &str, client: &str) -> Result<Request, CallError> {
        let unavailable = || CallError::new(ErrorCode::RequestUnavailable);
        let (Some(hash), true) = (proof_hash(proof), valid_request_id(id)) else { return Err(unavailable()) };
        let per_minute = self.cfg().requests.failed_per_minute;
        let gate = self.limits.request_failed.available(id, per_minute) && self.limits.request_failed.available(client, per_minute * 10);
        let r = self.store().request_proof_matches(id, &hash).await.map_err(|e| CallError::new(ErrorCode::Internal).detail(e.to_string()))?;
        match r {
            Some(r) => Ok(r),
            None => {
                self.request_failed(id, client);
                Err(if gate { unavailable() } else { CallError::new(ErrorCode::RateLimited) })
            }
        }
    }

    fn request_failed(&self, id: &str, client: &str) {
        let per_minute = self.cfg().requests.failed_per_minute;
        self.limits.request_failed.check(id, per_minute);
        self.limits.request_failed.check(client, per_minute * 10);
    }

    async fn intake_key(&self, r: &Request) -> Result<airlock_share::intake::IntakeKey, CallError> {
        let internal = |e: String| CallError::new(ErrorCode::Internal).detail(e);
        let sealed = r.intake_key.as_deref().ok_or_else(|| CallError::new(ErrorCode::RequestUnavailable))?;
        let secret = self.vault().open_value(&intake_seal_name(&r.id), sealed).await.map_err(|e| internal(e.to_string()))?;
        airlock_share::intake::IntakeKey::from_secret(&secret).map_err(|e| internal(e.to_string()))
    }

    /// A person's submission: opens the value with the request's key and its context as AAD,
    /// checks the format, lands it (one transaction with the link's burn), then applies the
    /// grant by policy or asks an approver. The answer names the status, never the value.
    pub async fn submit_request(&self, id: &str, proof: &str, enc: &[u8], ciphertext: &[u8], client: &str) -> Result<Value, CallError> {
        let r = self.pending_request(id, proof, client).await?;
        let key = self.intake_key(&r).await?;
        let max = self.cfg().requests.max_value_bytes;
        let value = match airlock_share::intake::open(&key, enc, ciphertext, r.context.as_bytes(), max) {
            Ok(v) => v,
            Err(airlock_share::intake::IntakeError::TooLarge) => {
                self.request_failed(id, client);
                return Err(CallError::new(ErrorCode::LimitExceeded));
            }
            Err(_) => {
                self.request_failed(id, client);
                return Err(CallError::new(ErrorCode::InvalidSubmission));
            }
        };
        let hints: FormatHints = serde_json::from_value(
            serde_json::from_str::<Value>(&r.context).ok().and_then(|c| c.get("format").cloned()).unwrap_or(Value::Null),
        )
        .unwrap_or_default();
        if !hints.hints().matches(&value) {
            self.request_failed(id, client);
            return Err(CallError::new(ErrorCode::ValueRejected));
        }
        let Some(handle) = landed_handle(&r) else {
            return Err(CallError::new(ErrorCode::Internal).detail("stored definition does not parse"));
        };
        let proof_hash = proof_hash(proof).expect("checked");
        let landed = self
            .vault()
            .seal_into(&value_seal_name(&r.handle), &value, |sealed| {
                let (store, id, proof_hash, handle) = (self.store().clone(), r.id.clone(), proof_hash.clone(), r.handle.clone());
                async move { store.land_request(&id, &proof_hash, &handle, &sealed).await }
            })
            .await
            .map_err(|e| CallError::new(ErrorCode::Internal).detail(e.to_string()))?;
        if landed == LandOutcome::Unavailable {
            return Err(CallError::new(ErrorCode::RequestUnavailable));
        }
        // Known to the scrubber before anything can return it.
        if let Err(e) = self.cover(&value_seal_name(&r.handle), handle.name.clone(), value).await {
            tracing::error!(error = %e, "covering a landed value in the scrubber failed");
        }
        self.audit_request_event(&format!("person:{}", r.recipient), "secret_request_received", &r, None).await;
        let status = self.grant_landed(&r, &handle).await?;
        Ok(json!({"ok": true, "request_id": r.id, "handle": r.handle, "status": status}))
    }

    /// Applies the proposed grant of a received request: at once when policy allows it for
    /// the asking agent, else through an approval an approver decides.
    async fn grant_landed(&self, r: &Request, handle: &Handle) -> Result<&'static str, CallError> {
        let ie = |e: airlock_store::StoreError| CallError::new(ErrorCode::Internal).detail(e.to_string());
        let tool = r.tools.split(',').next().and_then(Tool::parse).ok_or_else(|| CallError::new(ErrorCode::Internal))?;
        let agent = self.store().live_agent_named(&r.agent_name).await.map_err(ie)?;
        let allowed = agent.as_ref().is_some_and(|a| a.id == r.agent_id && self.policy().decide_requested(&a.name, tool, handle).allowed);
        if allowed {
            self.store().approve_request(&r.id).await.map_err(ie)?;
            let policies = self.policy().decide_requested(&r.agent_name, tool, handle).policies;
            self.audit_request_event("policy", "secret_request_approved", r, Some(policies)).await;
            let _ = self.leases.tool_changes.send(r.agent_id.clone());
            return Ok(status::APPROVED);
        }
        let now = now_ms();
        let aid = hex::encode(random::<16>());
        let args = json!({"request_id": r.id, "handle": r.handle, "grant": [tool.name()], "context": serde_json::from_str::<Value>(&r.context).unwrap_or(Value::Null)});
        let key = CallKey { agent_id: &r.agent_id, agent_name: &r.agent_name, parents: &[], tool: Tool::RequestSecret.name(), handle: &r.handle, args: &args };
        let version = self.policy_version();
        let hash = call_hash(&key, &version);
        let expires_at = now + self.cfg().requests.approval_expires_in_seconds as i64 * 1000;
        let b = binding(&aid, &hash, expires_at);
        let rec = NewApproval {
            id: &aid,
            call_hash: &hash,
            binding: &b,
            agent_id: &r.agent_id,
            agent_name: &r.agent_name,
            parent_chain: &[],
            tool: Tool::RequestSecret.name(),
            handle: &r.handle,
            arguments: &args,
            reason: "a person sent a secret this agent asked for; grant it the handle?",
            policy_version: &version,
            created_at: now,
            expires_at,
        };
        self.store().create_approval(&rec).await.map_err(ie)?;
        self.store().set_request_approval(&r.id, &aid).await.map_err(ie)?;
        Ok(status::RECEIVED)
    }

    /// Moves values landed under the legacy NUL-separated names (which only a SQLite store can
    /// hold) to their current names, sealed again for them; run once when the broker opens,
    /// before the scrubber is built. Returns how many moved.
    #[doc(hidden)]
    pub async fn move_legacy_request_values(&self) -> Result<usize, BrokerError> {
        let mut moved = 0;
        for (old, sealed) in self.store().legacy_request_values().await? {
            let handle = &old[LEGACY_VALUE_PREFIX.len()..];
            let new = value_seal_name(handle);
            let value = self.vault().open_value(&old, &sealed).await?;
            let store = self.store();
            let (old_name, new_name) = (old.as_str(), new.as_str());
            if self.vault().seal_into(&new, &value, |sealed| async move { store.rename_sealed(old_name, new_name, &sealed).await }).await? {
                moved += 1;
            }
        }
        if moved > 0 {
            tracing::info!(moved, "requested values moved to their current storage names");
        }
        Ok(moved)
    }

    /// One audit record of a request's life (never the value, never the link).
    async fn audit_request_event(&self, by: &str, event: &str, r: &Request, policies: Option<Vec<String>>) {
        let who = Revoker { by, chain: &[], reason: "" };
        let target = json!({"request_id": r.id, "for_agent": r.agent_name, "kind": r.kind, "grant": r.tools, "recipient": r.recipient});
        let mut rec = operator_record(&who, Revoked { event, handle: Some(&r.handle), target, code: None });
        if let Some(m) = rec.arguments.as_object_mut() {
            m.remove("reason");
            m.remove("revoked_by");
        }
        rec.policies = policies.unwrap_or_default();
        rec.approval = r.approval_id.clone();
        self.scrubber().scrub_json(&mut rec.arguments);
        if let Err(e) = self.audit.append(rec).await {
            tracing::error!(event, error = %e, "request event not audited");
        }
    }
}
