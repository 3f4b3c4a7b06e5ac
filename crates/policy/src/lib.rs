//! Authorization for airlock: who may call which tool on which handle.
//!
//! This crate owns the Cedar side of airlock. The principal is the agent, the action is the tool,
//! the resource is the handle; everything is denied unless a `permit` matches and no `forbid`
//! does. The config's `[agents.NAME] grants` compile to `permit` policies, extra `.cedar` files
//! add to them (a `forbid` there beats any grant), and all of it is validated in strict mode
//! against [`schema_text`] at load time, with errors that name the file and line.
//!
//! Decisions evaluate only the calling agent's slice: the policies whose principal is
//! `== Airlock::Agent::"NAME"` plus the common ones (unconstrained, `in`, `is`), prebuilt per
//! agent, because Cedar's cost grows with each policy evaluated. The common ones are in every
//! agent's slice, so a decision still costs one evaluation of each of them (about 2 µs apiece here);
//! decisions are therefore kept (bounded, [`MEMO_MAX`]) by everything they depend on, and the
//! same call decided again costs a lookup.
#![forbid(unsafe_code)]

use airlock_core::config::{valid_agent_name, Config, Handle, Scope};
use airlock_core::{HandleName, Tool};
use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Policy, PolicyId,
    PolicySet, PrincipalConstraint, Request, RestrictedExpression, Schema, ValidationMode,
    Validator,
};
use miette::Diagnostic;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

/// The most decisions a [`PolicyEngine`] keeps; when it holds this many it forgets them all and
/// starts again.
pub const MEMO_MAX: usize = 65_536;

/// Everything a decision depends on besides the engine itself: the request and the attributes
/// its entities are built from (the handle's as given, so a requested handle proposed twice
/// under one name with other hosts is decided again).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct MemoKey {
    agent: String,
    tool: Tool,
    handle: String,
    kind: airlock_core::kind::HandleKind,
    scope: &'static str,
    hosts: Vec<String>,
    requested: bool,
}

/// The Cedar schema's entity types (namespace `Airlock`). The actions are not written here: they
/// are generated from [`Tool::ALL`] by [`schema_text`], so a new tool extends the schema.
///
/// `Agent.name` is the agent's config name. `Handle.kind` is the handle kind's wire name
/// (`postgres`, `mysql`, `sqlite`, `http`, `generic`); `Handle.scope` is `read_only` or
/// `read_write` for database handles and `""` otherwise; `Handle.hosts` are the hosts of an
/// http handle's destinations (empty otherwise); `Handle.requested` is true for a handle a
/// person's secret lands as (`request_secret`), false for a configured one.
pub const SCHEMA: &str = r#"namespace Airlock {
  entity Agent = { name: String };
  entity Handle = { kind: String, scope: String, hosts: Set<String>, requested: Bool };
"#;

/// The complete Cedar schema: [`SCHEMA`] plus one action per built-in tool, each applying to
/// an `Agent` principal and a `Handle` resource with an empty context.
pub fn schema_text() -> String {
    let actions: Vec<String> = Tool::ALL.iter().map(|t| format!("\"{}\"", t.name())).collect();
    format!(
        "{SCHEMA}  action {} appliesTo {{ principal: [Agent], resource: [Handle], context: {{}} }};\n}}\n",
        actions.join(", ")
    )
}

/// The label used as the file name of policies generated from the config's grants.
pub const GRANTS_SOURCE: &str = "<grants>";

/// Why the policies could not be loaded. Every variant that concerns policy text names the file
/// and the 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A `.cedar` file could not be read.
    #[error("{file}: cannot read: {message}")]
    Read {
        /// The policy file.
        file: String,
        /// The I/O error.
        message: String,
    },
    /// A policy file (or the generated grants) is not valid Cedar syntax.
    #[error("{at}: {message}")]
    Parse {
        /// Where the (first) error is.
        at: Location,
        /// What the parser said.
        message: String,
    },
    /// A policy does not validate against the schema (strict mode): for example an unknown
    /// attribute, entity type or action.
    #[error("{at}: policy {policy}: {message}")]
    Validation {
        /// Where the error is.
        at: Location,
        /// The policy's id.
        policy: String,
        /// What the validator said.
        message: String,
    },
    /// A policy file holds a template (`?principal`/`?resource`); airlock links none, so it is
    /// refused rather than silently ignored.
    #[error("{at}: templates are not supported")]
    Template {
        /// Where the template is.
        at: Location,
    },
    /// Two policies have the same id (`@id` annotations, or an `@id` equal to a grant's id).
    #[error("{at}: duplicate policy id {id}")]
    DuplicateId {
        /// Where the second one is.
        at: Location,
        /// The id.
        id: String,
    },
    /// An agent named in the grants is not a valid agent name.
    #[error("{file}: agents.{agent}: not a valid agent name")]
    InvalidAgent {
        /// The config file.
        file: String,
        /// The name.
        agent: String,
    },
    /// The built-in schema or generated grants were refused by Cedar (a bug in this crate).
    #[error("internal policy error: {0}")]
    Internal(String),
}

/// A position in a policy source: file, 1-based line and column (0 when unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file (or [`GRANTS_SOURCE`]).
    pub file: String,
    /// 1-based line, 0 when Cedar gave no position.
    pub line: usize,
    /// 1-based column (in characters), 0 when unknown.
    pub column: usize,
}

impl Location {
    fn at(file: &str, text: &str, offset: Option<usize>) -> Location {
        match offset {
            Some(off) => {
                let (line, column) = line_col(text, off);
                Location { file: file.to_owned(), line, column }
            }
            None => Location { file: file.to_owned(), line: 0, column: 0 },
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.file)
        } else {
            write!(f, "{}:{}:{}", self.file, self.line, self.column)
        }
    }
}

/// 1-based line and column (in characters) of byte offset `off` in `text`.
fn line_col(text: &str, off: usize) -> (usize, usize) {
    let mut off = off.min(text.len());
    while !text.is_char_boundary(off) {
        off -= 1;
    }
    let before = &text[..off];
    let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The first labelled offset of a Cedar diagnostic.
fn first_offset(d: &dyn Diagnostic) -> Option<usize> {
    d.labels().and_then(|mut l| l.next()).map(|l| l.offset())
}

/// The outcome of one authorization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the call may proceed.
    pub allowed: bool,
    /// Ids of the policies that decided (permits that matched when allowed; forbids that
    /// matched, or empty for default deny).
    pub policies: Vec<String>,
    /// Errors during evaluation, if any (evaluation errors deny).
    pub errors: Vec<String>,
}

impl Decision {
    fn deny(error: impl Into<String>) -> Decision {
        Decision { allowed: false, policies: Vec::new(), errors: vec![error.into()] }
    }
}

/// Where one loaded policy came from, for error messages.
struct Source {
    file: String,
    text: String,
}

/// The compiled, validated and sliced policies of one configuration. Immutable; rebuild it when
/// the configuration changes.
pub struct PolicyEngine {
    schema: Schema,
    authorizer: Authorizer,
    /// Per named agent: the agent's own policies (`principal == Airlock::Agent::"name"`). They
    /// are evaluated next to the common slice, not copied into one set with it: a copy of the
    /// common slice per agent held about 67 KB per agent (6.7 GB for 100,000 agents).
    per_agent: HashMap<String, PolicySet>,
    /// Policies not tied to one agent: they apply to every agent.
    common: PolicySet,
    agent_type: EntityTypeName,
    handle_type: EntityTypeName,
    /// Action uid per tool, indexed like [`Tool::ALL`].
    actions: Vec<(Tool, EntityUid)>,
    generated: String,
    count: usize,
    version: String,
    /// Decisions made, by [`MemoKey`]. The engine is immutable and Cedar's evaluation is a pure
    /// function of the policies and the request's entities (no context, no clock), so a kept
    /// decision is the one evaluating again would give.
    memo: Mutex<HashMap<MemoKey, Decision>>,
}

impl fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("policies", &self.count)
            .field("agents", &self.per_agent.len())
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// Compiles the config's grants to Cedar `permit`s, loads every file in
    /// `cfg.policy.files`, validates all of it against the schema (strict mode), and indexes the
    /// policies per agent.
    pub fn from_config(cfg: &Config) -> Result<PolicyEngine, PolicyError> {
        let schema_src = schema_text();
        let (schema, _warnings) = Schema::from_cedarschema_str(&schema_src)
            .map_err(|e| PolicyError::Internal(format!("schema: {e}")))?;

        let generated = compile_grants(cfg)?;
        let mut sources = vec![Source { file: GRANTS_SOURCE.to_owned(), text: generated.clone() }];
        for path in &cfg.policy.files {
            let file = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| PolicyError::Read { file: file.clone(), message: e.to_string() })?;
            sources.push(Source { file, text });
        }

        // Parse every source, giving each policy its airlock id; remember where each came from.
        let mut all = PolicySet::new();
        let mut origin: HashMap<PolicyId, usize> = HashMap::new();
        for (si, src) in sources.iter().enumerate() {
            let set = PolicySet::from_str(&src.text).map_err(|e| PolicyError::Parse {
                at: Location::at(&src.file, &src.text, first_offset(&e)),
                message: e.to_string(),
            })?;
            if let Some(t) = set.templates().next() {
                return Err(PolicyError::Template { at: Location::at(&src.file, &src.text, policy_offset(&src.text, t.id())) });
            }
            // Cedar names parsed policies policy0, policy1, ... in source order.
            let mut parsed: Vec<&Policy> = set.policies().collect();
            parsed.sort_by_key(|p| policy_index(p.id()));
            for (i, p) in parsed.into_iter().enumerate() {
                let id = match p.annotation("id") {
                    Some(id) if !id.is_empty() => id.to_owned(),
                    _ => format!("{}#{i}", src.file),
                };
                let pid = PolicyId::new(&id);
                if origin.contains_key(&pid) {
                    return Err(PolicyError::DuplicateId {
                        at: Location::at(&src.file, &src.text, policy_offset(&src.text, p.id())),
                        id,
                    });
                }
                all.add(p.new_id(pid.clone())).map_err(|e| PolicyError::Internal(e.to_string()))?;
                origin.insert(pid, si);
            }
        }

        let result = Validator::new(schema.clone()).validate(&all, ValidationMode::Strict);
        if let Some(e) = result.validation_errors().next() {
            let (file, text) = match origin.get(e.policy_id()) {
                Some(si) => (sources[*si].file.as_str(), sources[*si].text.as_str()),
                None => ("<unknown>", ""),
            };
            let policy = e.policy_id().to_string();
            // Cedar repeats the id the variant already carries; keep the message short.
            let mut message = e.to_string();
            if let Some(rest) = message.strip_prefix(&format!("for policy `{policy}`, ")) {
                message = rest.to_owned();
            }
            if let Some(help) = e.help() {
                message = format!("{message} ({help})");
            }
            return Err(PolicyError::Validation { at: Location::at(file, text, first_offset(e)), policy, message });
        }

        let agent_type = EntityTypeName::from_str("Airlock::Agent").map_err(|e| PolicyError::Internal(e.to_string()))?;
        let handle_type = EntityTypeName::from_str("Airlock::Handle").map_err(|e| PolicyError::Internal(e.to_string()))?;
        let action_type = EntityTypeName::from_str("Airlock::Action").map_err(|e| PolicyError::Internal(e.to_string()))?;

        // Slice: `principal == Airlock::Agent::"X"` belongs to X; everything else is common.
        let mut own: BTreeMap<String, Vec<Policy>> = BTreeMap::new();
        let mut common = PolicySet::new();
        for p in all.policies() {
            match p.principal_constraint() {
                PrincipalConstraint::Eq(uid) if uid.type_name() == &agent_type => {
                    own.entry(uid.id().unescaped().to_owned()).or_default().push(p.clone());
                }
                _ => common.add(p.clone()).map_err(|e| PolicyError::Internal(e.to_string()))?,
            }
        }
        let mut per_agent = HashMap::with_capacity(own.len());
        for (agent, policies) in own {
            let mut set = PolicySet::new();
            for p in policies {
                set.add(p).map_err(|e| PolicyError::Internal(e.to_string()))?;
            }
            per_agent.insert(agent, set);
        }

        let actions = Tool::ALL
            .iter()
            .map(|t| (*t, EntityUid::from_type_name_and_id(action_type.clone(), EntityId::new(t.name()))))
            .collect();

        let version = digest(&schema_src, &sources);
        Ok(PolicyEngine {
            schema,
            authorizer: Authorizer::new(),
            per_agent,
            common,
            agent_type,
            handle_type,
            actions,
            generated,
            count: origin.len(),
            version,
            memo: Mutex::new(HashMap::new()),
        })
    }

    /// Is `agent` allowed to call `tool` on `handle`?
    ///
    /// Fails closed: an invalid agent name, a tool that does not apply to the handle's kind, or
    /// any evaluation error denies.
    pub fn decide(&self, agent: &str, tool: Tool, handle: &Handle) -> Decision {
        self.decide_on(agent, tool, handle, false)
    }

    /// [`PolicyEngine::decide`] on a handle a request for a secret proposes or made
    /// (`resource.requested` is true).
    pub fn decide_requested(&self, agent: &str, tool: Tool, handle: &Handle) -> Decision {
        self.decide_on(agent, tool, handle, true)
    }

    /// Whether any `permit` in `agent`'s slice could allow `tool` (its action constraint admits
    /// it): what lists a tool with no handle enum, such as `request_secret`. The call itself
    /// is decided by [`PolicyEngine::decide_requested`].
    pub fn may_permit(&self, agent: &str, tool: Tool) -> bool {
        if !valid_agent_name(agent) {
            return false;
        }
        let Some(action) = self.actions.iter().find(|(t, _)| *t == tool).map(|(_, a)| a) else { return false };
        let own = self.per_agent.get(agent).into_iter().flat_map(PolicySet::policies);
        self.common.policies().chain(own).any(|p| {
            p.effect() == cedar_policy::Effect::Permit
                && match p.action_constraint() {
                    cedar_policy::ActionConstraint::Any => true,
                    cedar_policy::ActionConstraint::Eq(a) => &a == action,
                    cedar_policy::ActionConstraint::In(v) => v.iter().any(|a| a == action),
                }
        })
    }

    fn decide_on(&self, agent: &str, tool: Tool, handle: &Handle, requested: bool) -> Decision {
        // Only exact, valid agent names reach Cedar, so a look-alike cannot fall into the
        // common slice and match `principal is Agent` policies meant for real agents (T16).
        if !valid_agent_name(agent) {
            return Decision::deny("invalid agent name");
        }
        if !tool.applies_to(handle.kind) {
            return Decision::deny("the tool does not apply to this kind of handle");
        }
        let key = MemoKey {
            agent: agent.to_owned(),
            tool,
            handle: handle.name.as_str().to_owned(),
            kind: handle.kind,
            scope: scope_of(handle),
            hosts: handle.http().map(|h| h.destinations.iter().map(|d| d.host.clone()).collect()).unwrap_or_default(),
            requested,
        };
        if let Some(d) = self.memo.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return d.clone();
        }
        let d = self.evaluate(agent, tool, handle, requested);
        let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        if memo.len() >= MEMO_MAX {
            memo.clear();
        }
        memo.insert(key, d.clone());
        d
    }

    /// How many decisions are kept now (at most [`MEMO_MAX`]).
    pub fn memo_len(&self) -> usize {
        self.memo.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The decision itself, by Cedar, on an agent name and a tool already checked.
    fn evaluate(&self, agent: &str, tool: Tool, handle: &Handle, requested: bool) -> Decision {
        let Some(action) = self.actions.iter().find(|(t, _)| *t == tool).map(|(_, a)| a.clone()) else {
            return Decision::deny("unknown tool");
        };
        let principal = EntityUid::from_type_name_and_id(self.agent_type.clone(), EntityId::new(agent));
        let resource = EntityUid::from_type_name_and_id(self.handle_type.clone(), EntityId::new(handle.name.as_str()));

        let entities = match self.request_entities(agent, &principal, (handle, requested), &resource) {
            Ok(e) => e,
            Err(e) => return Decision::deny(e),
        };
        let request = match Request::new(principal, action, resource, Context::empty(), Some(&self.schema)) {
            Ok(r) => r,
            Err(e) => return Decision::deny(e.to_string()),
        };
        // The agent's slice is the common policies and its own, evaluated as two sets and
        // combined as Cedar combines one set: any satisfied `forbid` denies, and then any
        // satisfied `permit` allows. A set's response names its satisfied forbids when it has
        // any (it denies), else its satisfied permits (it allows), else nothing; so the
        // forbids of both are known exactly, and when there are none, so are the permits.
        let slices = std::iter::once(&self.common).chain(self.per_agent.get(agent));
        let (mut forbids, mut permits, mut errors) = (Vec::new(), Vec::new(), Vec::new());
        for set in slices {
            let response = self.authorizer.is_authorized(&request, set, &entities);
            let diagnostics = response.diagnostics();
            errors.extend(diagnostics.errors().map(|e| e.to_string()));
            let reason = diagnostics.reason().map(|p| p.to_string());
            match response.decision() {
                cedar_policy::Decision::Allow => permits.extend(reason),
                cedar_policy::Decision::Deny => forbids.extend(reason),
            }
        }
        // Cedar skips a policy whose evaluation errors; that would let a broken `forbid` fall
        // away, so any error denies.
        let allowed = forbids.is_empty() && !permits.is_empty() && errors.is_empty();
        let mut policies = match (forbids.is_empty(), allowed) {
            (false, _) => forbids,
            (true, true) => permits,
            (true, false) => Vec::new(),
        };
        policies.sort();
        Decision { allowed, policies, errors }
    }

    fn request_entities(
        &self,
        agent: &str,
        principal: &EntityUid,
        (handle, requested): (&Handle, bool),
        resource: &EntityUid,
    ) -> Result<Entities, String> {
        let hosts: Vec<RestrictedExpression> = handle
            .http()
            .map(|h| h.destinations.iter().map(|d| RestrictedExpression::new_string(d.host.clone())).collect())
            .unwrap_or_default();
        let scope = scope_of(handle);
        let agent_e = Entity::new(
            principal.clone(),
            HashMap::from([("name".to_owned(), RestrictedExpression::new_string(agent.to_owned()))]),
            HashSet::new(),
        )
        .map_err(|e| e.to_string())?;
        let handle_e = Entity::new(
            resource.clone(),
            HashMap::from([
                ("kind".to_owned(), RestrictedExpression::new_string(handle.kind.as_str().to_owned())),
                ("scope".to_owned(), RestrictedExpression::new_string(scope.to_owned())),
                ("hosts".to_owned(), RestrictedExpression::new_set(hosts)),
                ("requested".to_owned(), RestrictedExpression::new_bool(requested)),
            ]),
            HashSet::new(),
        )
        .map_err(|e| e.to_string())?;
        Entities::from_entities([agent_e, handle_e], None).map_err(|e| e.to_string())
    }

    /// The handles (by name) `agent` may use with `tool`, in name order; only handles whose
    /// kind the tool applies to.
    pub fn allowed_handles(&self, agent: &str, tool: Tool, cfg: &Config) -> Vec<HandleName> {
        cfg.handles
            .values()
            // Evaluated, not kept: a listing over every handle must not push the decisions of
            // calls out of the memo.
            .filter(|h| tool.applies_to(h.kind) && valid_agent_name(agent) && self.evaluate(agent, tool, h, false).allowed)
            .map(|h| h.name.clone())
            .collect()
    }

    /// The Cedar text generated from the grants (for `airlock policy check --show`).
    pub fn generated_policies(&self) -> &str {
        &self.generated
    }

    /// Number of policies in total (generated and from files).
    pub fn policy_count(&self) -> usize {
        self.count
    }

    /// Hex SHA-256 over the schema and every policy text, identifying this policy version (for
    /// audit records and approvals).
    pub fn version(&self) -> &str {
        &self.version
    }
}

/// A handle's `scope` attribute: `read_only` or `read_write` for a database, `""` otherwise.
fn scope_of(handle: &Handle) -> &'static str {
    match handle.database().map(|d| d.scope) {
        Some(Scope::ReadOnly) => "read_only",
        Some(Scope::ReadWrite) => "read_write",
        None => "",
    }
}

/// One `permit` per (agent, handle), `action in [...]` over the granted tools, annotated
/// `@id("grant:AGENT:HANDLE")`. Agent names are checked here too because they are spliced into
/// Cedar text; handle names are grammar-checked by their type.
fn compile_grants(cfg: &Config) -> Result<String, PolicyError> {
    let mut out = String::new();
    for (agent, ac) in &cfg.agents {
        if !valid_agent_name(agent) {
            return Err(PolicyError::InvalidAgent { file: cfg.source.clone(), agent: agent.clone() });
        }
        // Several grants of one handle merge, so each (agent, handle) has one id.
        let mut by_handle: BTreeMap<&HandleName, BTreeSet<Tool>> = BTreeMap::new();
        for g in &ac.grants {
            by_handle.entry(&g.handle).or_default().extend(g.tools.iter().copied());
        }
        for (handle, tools) in by_handle {
            if tools.is_empty() {
                continue;
            }
            let actions: Vec<String> =
                tools.iter().map(|t| format!("Airlock::Action::\"{}\"", t.name())).collect();
            out.push_str(&format!(
                "@id(\"grant:{agent}:{handle}\")\npermit (\n  principal == Airlock::Agent::\"{agent}\",\n  action in [{}],\n  resource == Airlock::Handle::\"{handle}\"\n);\n",
                actions.join(", ")
            ));
        }
    }
    Ok(out)
}

/// `policyN` → N, for restoring source order.
fn policy_index(id: &PolicyId) -> usize {
    id.to_string().strip_prefix("policy").and_then(|n| n.parse().ok()).unwrap_or(usize::MAX)
}

/// Where the policy with Cedar's default id `policyN` starts in `text`: the start of the N-th
/// `;`-terminated statement (Cedar's public API exposes no policy position). Used only to locate
/// template and duplicate-id errors, in text that has already parsed.
fn policy_offset(text: &str, id: &PolicyId) -> Option<usize> {
    let n = policy_index(id);
    if n == usize::MAX {
        return None;
    }
    statement_starts(text).get(n).copied()
}

/// Byte offsets of the first non-blank, non-comment character of each `;`-terminated
/// statement, skipping string literals and `//` comments.
fn statement_starts(text: &str) -> Vec<usize> {
    let b = text.as_bytes();
    let mut starts = Vec::new();
    let mut in_stmt = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' => {
                if !in_stmt {
                    starts.push(i);
                    in_stmt = true;
                }
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b';' => in_stmt = false,
            c if c.is_ascii_whitespace() => {}
            _ => {
                if !in_stmt {
                    starts.push(i);
                    in_stmt = true;
                }
            }
        }
        i += 1;
    }
    starts
}

/// Hex SHA-256 over the schema and each source's name and text, length-prefixed so that no two
/// different inputs hash alike.
fn digest(schema: &str, sources: &[Source]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut put = |s: &str| {
        ctx.update(&(s.len() as u64).to_be_bytes());
        ctx.update(s.as_bytes());
    };
    put(schema);
    for s in sources {
        put(&s.file);
        put(&s.text);
    }
    hex::encode(ctx.finish().as_ref())
}

#[cfg(test)]
mod tests;
