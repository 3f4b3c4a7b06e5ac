use super::*;
use std::path::Path;

const BASE: &str = r#"
[handles.DB_PROD]
kind = "postgres"
secret = "env:DB_URL"
[handles.DB_PROD.database]
scope = "read_only"

[handles.DB_RW]
kind = "mysql"
secret = "env:DB_RW"
[handles.DB_RW.database]
scope = "read_write"

[handles.API]
kind = "http"
secret = "local:API"
[handles.API.http]
destinations = [{ url = "https://api.example.com/v1/" }]
inject = { type = "header", name = "X-API-Key", format = "{}" }

[handles.SHARED]
kind = "generic"
secret = "env:SHARED"
"#;

const GRANTS: &str = r#"
[agents.support-bot]
grants = [{ handle = "DB_PROD", tools = ["query_db"] }, { handle = "API", tools = ["http_request"] }]

[agents.other]
grants = [{ handle = "DB_RW", tools = ["query_db"] }]
"#;

/// A config with `extra` appended, its policy files written into a temp dir.
struct Fixture {
    _dir: tempfile::TempDir,
    cfg: Config,
}

fn fixture(extra: &str, files: &[(&str, &str)]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let mut text = String::from(BASE);
    if !files.is_empty() {
        let names: Vec<String> = files.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        text = format!("[policy]\nfiles = [{}]\n{text}", names.join(", "));
    }
    text.push_str(extra);
    let cfg = Config::parse(&text, "airlock.toml", dir.path()).unwrap();
    Fixture { _dir: dir, cfg }
}

fn engine(f: &Fixture) -> PolicyEngine {
    PolicyEngine::from_config(&f.cfg).unwrap()
}

fn load_err(f: &Fixture) -> String {
    PolicyEngine::from_config(&f.cfg).unwrap_err().to_string()
}

fn h<'a>(f: &'a Fixture, name: &str) -> &'a Handle {
    &f.cfg.handles[&HandleName::parse(name).unwrap()]
}

fn names(v: Vec<HandleName>) -> Vec<String> {
    v.into_iter().map(|n| n.as_str().to_owned()).collect()
}

#[test]
fn engine_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<PolicyEngine>();
}

#[test]
fn schema_declares_an_action_per_tool() {
    let s = schema_text();
    for t in Tool::ALL {
        assert!(s.contains(&format!("\"{}\"", t.name())), "{s}");
    }
    let _ = Schema::from_cedarschema_str(&s).unwrap();
}

#[test]
fn default_deny_without_grants() {
    let f = fixture("", &[]);
    let e = engine(&f);
    assert_eq!(e.policy_count(), 0);
    assert_eq!(e.generated_policies(), "");
    for t in Tool::ALL {
        for name in ["DB_PROD", "DB_RW", "API", "SHARED"] {
            if !t.applies_to(h(&f, name).kind) {
                continue;
            }
            let d = e.decide("support-bot", *t, h(&f, name));
            assert_eq!(d, Decision { allowed: false, policies: vec![], errors: vec![] }, "{t:?} {name}");
        }
    }
}

#[test]
fn grant_allows_exactly_its_tools_and_handle() {
    let f = fixture(GRANTS, &[]);
    let e = engine(&f);
    assert_eq!(e.policy_count(), 3);
    let d = e.decide("support-bot", Tool::QueryDb, h(&f, "DB_PROD"));
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.policies, vec!["grant:support-bot:DB_PROD"]);
    assert!(d.errors.is_empty());
    assert!(e.decide("support-bot", Tool::HttpRequest, h(&f, "API")).allowed);
    // Not the other agent's handle, nor a tool on a handle it was not granted for.
    let d = e.decide("support-bot", Tool::QueryDb, h(&f, "DB_RW"));
    assert!(!d.allowed && d.policies.is_empty(), "{d:?}");
    assert!(!e.decide("support-bot", Tool::HttpRequest, h(&f, "DB_PROD")).allowed);
    assert!(!e.decide("support-bot", Tool::HttpRequest, h(&f, "SHARED")).allowed);
}

#[test]
fn another_agent_is_denied() {
    let f = fixture(GRANTS, &[]);
    let e = engine(&f);
    assert!(!e.decide("other", Tool::QueryDb, h(&f, "DB_PROD")).allowed);
    assert!(!e.decide("stranger", Tool::QueryDb, h(&f, "DB_PROD")).allowed);
    assert!(e.decide("other", Tool::QueryDb, h(&f, "DB_RW")).allowed);
}

#[test]
fn t16_name_tricks_are_denied() {
    let f = fixture(
        GRANTS,
        &[("all.cedar", "@id(\"any-agent-reads-api\")\npermit (principal is Airlock::Agent, action, resource == Airlock::Handle::\"API\");\n")],
    );
    let e = engine(&f);
    assert!(e.decide("support-bot", Tool::QueryDb, h(&f, "DB_PROD")).allowed);
    for agent in ["Support-bot", "SUPPORT-BOT", "support-bot ", " support-bot", "support-bot\n", "support\u{2010}bot", "supp\u{043E}rt-bot", "", "*"] {
        let d = e.decide(agent, Tool::QueryDb, h(&f, "DB_PROD"));
        assert!(!d.allowed, "{agent:?}");
        // Even a policy meant for every agent does not admit a name outside the grammar.
        assert!(!e.decide(agent, Tool::HttpRequest, h(&f, "API")).allowed, "{agent:?}");
    }
    // A handle spelled differently is a different resource: `db_prod` cannot even be a handle,
    // and a lookalike handle built elsewhere with a valid but different name never matches.
    assert!(HandleName::parse("db_prod").is_err());
    assert!(HandleName::parse("DB_PROD ").is_err());
    let mut other = h(&f, "DB_PROD").clone();
    other.name = HandleName::parse("DB_PROD_").unwrap();
    assert!(!e.decide("support-bot", Tool::QueryDb, &other).allowed);
}

#[test]
fn a_forbid_in_a_file_beats_a_grant() {
    let f = fixture(
        GRANTS,
        &[("deny.cedar", "// no writes from anyone\n@id(\"no-prod\")\nforbid (principal, action, resource == Airlock::Handle::\"DB_PROD\");\n")],
    );
    let e = engine(&f);
    let d = e.decide("support-bot", Tool::QueryDb, h(&f, "DB_PROD"));
    assert_eq!(d, Decision { allowed: false, policies: vec!["no-prod".into()], errors: vec![] });
    assert!(e.decide("support-bot", Tool::HttpRequest, h(&f, "API")).allowed);
}

#[test]
fn a_forbid_on_an_attribute_beats_a_grant() {
    let f = fixture(
        GRANTS,
        &[("rw.cedar", "forbid (principal, action == Airlock::Action::\"query_db\", resource) when { resource.scope == \"read_write\" };\n")],
    );
    let e = engine(&f);
    let d = e.decide("other", Tool::QueryDb, h(&f, "DB_RW"));
    assert!(!d.allowed);
    assert!(d.policies[0].ends_with("rw.cedar#0"), "{d:?}");
    assert!(e.decide("support-bot", Tool::QueryDb, h(&f, "DB_PROD")).allowed);
}

#[test]
fn an_evaluation_error_denies_even_in_a_forbid() {
    // Overflow passes strict validation but errors at run time. Cedar alone would skip the
    // broken forbid and allow; airlock must not.
    let f = fixture(
        GRANTS,
        &[("broken.cedar", "forbid (principal, action, resource) when { 9223372036854775807 + 1 > 0 };\n")],
    );
    let e = engine(&f);
    let d = e.decide("support-bot", Tool::QueryDb, h(&f, "DB_PROD"));
    assert!(!d.allowed, "{d:?}");
    assert!(d.policies.is_empty(), "{d:?}");
    assert_eq!(d.errors.len(), 1, "{d:?}");
    assert!(d.errors[0].contains("broken.cedar#0"), "{d:?}");
}

#[test]
fn a_syntax_error_names_file_and_line() {
    let f = fixture(GRANTS, &[("bad.cedar", "// fine so far\npermit (principal, action, resource);\n\npermit (principal, action resource);\n")]);
    let e = load_err(&f);
    assert!(e.contains("bad.cedar:4:"), "{e}");
    let PolicyError::Parse { at, .. } = PolicyEngine::from_config(&f.cfg).unwrap_err() else { panic!() };
    assert_eq!((at.line, at.column), (4, 27), "{at}");
}

#[test]
fn an_unknown_attribute_fails_validation_with_file_and_line() {
    let f = fixture(
        GRANTS,
        &[("typo.cedar", "permit (principal, action, resource);\n@id(\"typo\")\npermit (principal, action, resource)\n  when { resource.kindd == \"http\" };\n")],
    );
    let err = PolicyEngine::from_config(&f.cfg).unwrap_err();
    let s = err.to_string();
    assert!(s.contains("typo.cedar:4:"), "{s}");
    assert!(s.contains("kindd"), "{s}");
    assert!(matches!(err, PolicyError::Validation { ref policy, .. } if policy == "typo"), "{err:?}");
}

#[test]
fn an_unknown_action_or_type_fails_validation() {
    for (text, word) in [
        ("permit (principal, action == Airlock::Action::\"query_dbx\", resource);\n", "query_dbx"),
        ("permit (principal == Airlock::Agnt::\"a\", action, resource);\n", "Agnt"),
        // Strict mode: comparing a string to a number is a type error.
        ("permit (principal, action, resource) when { resource.kind == 1 };\n", ""),
    ] {
        let f = fixture("", &[("x.cedar", text)]);
        let e = load_err(&f);
        assert!(e.starts_with(&format!("{}:1:", f.cfg.policy.files[0].display())), "{e}");
        assert!(e.contains(word), "{e}");
    }
}

#[test]
fn unread_file_and_templates_and_duplicate_ids_are_refused() {
    let mut f = fixture("", &[]);
    f.cfg.policy.files.push(f._dir.path().join("missing.cedar"));
    assert!(load_err(&f).contains("missing.cedar: cannot read"));

    let f = fixture("", &[("t.cedar", "permit (principal, action, resource);\n\npermit (principal == ?principal, action, resource);\n")]);
    let e = load_err(&f);
    assert!(e.contains("t.cedar:3:1: templates"), "{e}");

    let f = fixture(GRANTS, &[("d.cedar", "@id(\"grant:other:DB_RW\")\nforbid (principal, action, resource);\n")]);
    let e = load_err(&f);
    assert!(e.contains("d.cedar:1:1: duplicate policy id grant:other:DB_RW"), "{e}");
}

#[test]
fn handles_unknown_to_the_config_are_fine_in_files() {
    let f = fixture(GRANTS, &[("x.cedar", "permit (principal, action, resource == Airlock::Handle::\"NOPE\");\n")]);
    let e = engine(&f);
    assert!(!e.decide("other", Tool::QueryDb, h(&f, "DB_PROD")).allowed);
}

#[test]
fn unconstrained_or_group_principals_apply_to_every_agent() {
    let f = fixture(
        GRANTS,
        &[(
            "common.cedar",
            "@id(\"all-read-api\")\npermit (principal, action == Airlock::Action::\"http_request\", resource == Airlock::Handle::\"API\");\n\
             @id(\"typed-ro\")\npermit (principal is Airlock::Agent, action == Airlock::Action::\"query_db\", resource) when { resource.scope == \"read_only\" };\n\
             @id(\"solo\")\npermit (principal == Airlock::Agent::\"newbie\", action, resource == Airlock::Handle::\"DB_RW\");\n",
        )],
    );
    let e = engine(&f);
    // `other` has a slice of its own; `stranger` is named nowhere and gets the common slice.
    for agent in ["other", "stranger", "newbie"] {
        let d = e.decide(agent, Tool::HttpRequest, h(&f, "API"));
        assert_eq!(d.policies, vec!["all-read-api"], "{agent}");
    }
    let d = e.decide("support-bot", Tool::HttpRequest, h(&f, "API"));
    assert_eq!(d.policies, vec!["all-read-api", "grant:support-bot:API"]);
    for agent in ["other", "stranger", "support-bot", "newbie"] {
        let d = e.decide(agent, Tool::QueryDb, h(&f, "DB_PROD"));
        assert!(d.allowed && d.policies.contains(&"typed-ro".to_owned()), "{agent} {d:?}");
    }
    assert!(e.decide("newbie", Tool::QueryDb, h(&f, "DB_RW")).allowed);
    assert!(!e.decide("stranger", Tool::QueryDb, h(&f, "DB_RW")).allowed);
    assert!(!e.decide("support-bot", Tool::QueryDb, h(&f, "DB_RW")).allowed);
    // Slices: the 2 config agents plus `newbie`, each with its own policies only; the common
    // ones are held once.
    assert_eq!(e.per_agent.len(), 3);
    assert_eq!(e.common.policies().count(), 2);
    assert_eq!(e.per_agent["newbie"].policies().count(), 1);
}

#[test]
fn a_file_permit_for_a_tool_that_does_not_apply_is_denied() {
    let f = fixture("", &[("x.cedar", "permit (principal, action, resource);\n")]);
    let e = engine(&f);
    let d = e.decide("a", Tool::HttpRequest, h(&f, "DB_PROD"));
    assert!(!d.allowed && !d.errors.is_empty(), "{d:?}");
    assert!(!e.decide("a", Tool::QueryDb, h(&f, "SHARED")).allowed);
    assert!(e.decide("a", Tool::QueryDb, h(&f, "DB_PROD")).allowed);
}

#[test]
fn allowed_handles_lists_exactly_the_permitted_ones() {
    let f = fixture(
        &format!("{GRANTS}\n[agents.multi]\ngrants = [{{ handle = \"DB_RW\", tools = [\"query_db\"] }}, {{ handle = \"DB_PROD\", tools = [\"query_db\"] }}, {{ handle = \"API\", tools = [\"http_request\"] }}]\n"),
        &[("deny.cedar", "forbid (principal == Airlock::Agent::\"multi\", action, resource) when { resource.scope == \"read_write\" };\n")],
    );
    let e = engine(&f);
    assert_eq!(names(e.allowed_handles("support-bot", Tool::QueryDb, &f.cfg)), ["DB_PROD"]);
    assert_eq!(names(e.allowed_handles("support-bot", Tool::HttpRequest, &f.cfg)), ["API"]);
    assert_eq!(names(e.allowed_handles("other", Tool::QueryDb, &f.cfg)), ["DB_RW"]);
    assert_eq!(names(e.allowed_handles("multi", Tool::QueryDb, &f.cfg)), ["DB_PROD"]);
    assert!(e.allowed_handles("other", Tool::HttpRequest, &f.cfg).is_empty());
    assert!(e.allowed_handles("stranger", Tool::QueryDb, &f.cfg).is_empty());
    assert!(e.allowed_handles("Support-bot", Tool::QueryDb, &f.cfg).is_empty());
}

#[test]
fn generated_policies_show_one_permit_per_agent_and_handle() {
    let f = fixture(
        "\n[agents.dup]\ngrants = [{ handle = \"API\", tools = [\"http_request\"] }, { handle = \"API\", tools = [\"http_request\"] }]\n",
        &[],
    );
    let e = engine(&f);
    assert_eq!(e.policy_count(), 1);
    let g = e.generated_policies();
    assert!(g.starts_with("@id(\"grant:dup:API\")\npermit (\n  principal == Airlock::Agent::\"dup\""), "{g}");
    assert!(g.contains("action in [Airlock::Action::\"http_request\"]"), "{g}");
}

#[test]
fn invalid_agent_name_in_grants_is_refused() {
    let mut f = fixture(GRANTS, &[]);
    let ac = f.cfg.agents["other"].clone();
    f.cfg.agents.insert("x\") ; permit (principal, action, resource); //".into(), ac);
    assert!(matches!(PolicyEngine::from_config(&f.cfg), Err(PolicyError::InvalidAgent { .. })));
}

#[test]
fn version_changes_when_a_policy_changes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.cedar");
    let cfg_text = format!("[policy]\nfiles = [\"p.cedar\"]\n{BASE}{GRANTS}");
    let cfg = Config::parse(&cfg_text, "airlock.toml", dir.path()).unwrap();
    let load = |text: &str| {
        std::fs::write(&file, text).unwrap();
        PolicyEngine::from_config(&cfg).unwrap().version().to_owned()
    };
    let v1 = load("forbid (principal, action, resource == Airlock::Handle::\"API\");\n");
    assert_eq!(v1.len(), 64);
    assert!(v1.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(v1, load("forbid (principal, action, resource == Airlock::Handle::\"API\");\n"));
    let v2 = load("forbid (principal, action, resource == Airlock::Handle::\"DB_PROD\");\n");
    assert_ne!(v1, v2);
    // A grant change moves it too.
    let cfg2 = Config::parse(&cfg_text.replace("DB_RW\", tools", "DB_PROD\", tools"), "airlock.toml", dir.path()).unwrap();
    assert_ne!(PolicyEngine::from_config(&cfg2).unwrap().version(), v2);
}

#[test]
fn line_col_counts_characters() {
    assert_eq!(line_col("ab\ncd", 0), (1, 1));
    assert_eq!(line_col("ab\ncd", 4), (2, 2));
    assert_eq!(line_col("é\nxé!", 6), (2, 3));
    assert_eq!(line_col("x", 99), (1, 2));
    assert_eq!(statement_starts("// a;\n@id(\"x;y\")\npermit();\n  forbid();"), vec![6, 29]);
}

#[test]
fn config_path_is_used_for_files() {
    // Policy files are reported by the absolute path the config resolved.
    let f = fixture("", &[("x.cedar", "permit (principal, action, resource")]);
    let e = load_err(&f);
    assert!(Path::new(e.split(':').next().unwrap()).is_absolute(), "{e}");
}

#[test]
fn a_decision_made_again_is_the_kept_one() {
    let f = fixture(
        GRANTS,
        &[("rw.cedar", "forbid (principal, action == Airlock::Action::\"query_db\", resource) when { resource.scope == \"read_write\" };\n")],
    );
    let e = engine(&f);
    let first = e.decide("support-bot", Tool::QueryDb, h(&f, "DB_PROD"));
    assert!(first.allowed, "{first:?}");
    assert_eq!(e.memo_len(), 1);
    assert_eq!(e.decide("support-bot", Tool::QueryDb, h(&f, "DB_PROD")), first);
    assert_eq!(e.memo_len(), 1);
    // Another agent, tool or handle is another decision, with its own outcome.
    assert!(!e.decide("other", Tool::QueryDb, h(&f, "DB_RW")).allowed);
    assert!(!e.decide("support-bot", Tool::QueryDb, h(&f, "DB_RW")).allowed);
    assert!(e.decide("support-bot", Tool::HttpRequest, h(&f, "API")).allowed);
    assert_eq!(e.memo_len(), 4);
    // Refusals before Cedar are not kept.
    assert!(!e.decide("Support-bot", Tool::QueryDb, h(&f, "DB_PROD")).allowed);
    assert!(!e.decide("support-bot", Tool::HttpRequest, h(&f, "DB_PROD")).allowed);
    assert_eq!(e.memo_len(), 4);
    // A listing over every handle evaluates without filling the memo.
    assert_eq!(names(e.allowed_handles("support-bot", Tool::QueryDb, &f.cfg)), ["DB_PROD"]);
    assert_eq!(e.memo_len(), 4);
}

#[test]
fn a_handle_of_the_same_name_with_other_attributes_is_decided_again() {
    // A requested handle is proposed by an agent: the same name may come back with another
    // host, and must not get the decision kept for the first one.
    let policy = "permit (principal, action == Airlock::Action::\"http_request\", resource) when { resource.requested };\n\
                  forbid (principal, action, resource) when { resource.hosts.contains(\"evil.example.net\") };\n";
    let f = fixture(
        &format!("{GRANTS}\n[handles.EVIL]\nkind = \"http\"\nsecret = \"local:EVIL\"\n[handles.EVIL.http]\ndestinations = [{{ url = \"https://evil.example.net/\" }}]\ninject = {{ type = \"header\", name = \"X-API-Key\", format = \"{{}}\" }}\n"),
        &[("req.cedar", policy)],
    );
    let e = engine(&f);
    let good = h(&f, "API");
    let mut evil = h(&f, "EVIL").clone();
    evil.name = good.name.clone();
    let evil = &evil;
    assert_eq!(good.name, evil.name);
    assert!(e.decide_requested("other", Tool::HttpRequest, good).allowed);
    assert!(!e.decide_requested("other", Tool::HttpRequest, evil).allowed);
    assert!(e.decide_requested("other", Tool::HttpRequest, good).allowed);
    assert_eq!(e.memo_len(), 2);
}

/// Kept decisions never stand in for another request: every agent (configured, unknown, a
/// look-alike), every tool, every handle, plain and requested, and each handle again under every
/// other handle's name (a requested handle may reuse a name with other attributes), decided by
/// two engines walking the whole catalogue in opposite orders, twice. A key that two different
/// requests shared would make the engine that saw the other one first answer differently.
#[test]
fn kept_decisions_agree_whatever_order_the_catalogue_is_walked_in() {
    let policies = "forbid (principal, action, resource) when { resource.scope == \"read_write\" && principal.name == \"other\" };\n\
                    permit (principal, action == Airlock::Action::\"http_request\", resource) when { resource.requested };\n\
                    forbid (principal, action, resource) when { resource.hosts.contains(\"evil.example.net\") };\n";
    let f = fixture(
        &format!("{GRANTS}\n[handles.EVIL]\nkind = \"http\"\nsecret = \"local:EVIL\"\n[handles.EVIL.http]\ndestinations = [{{ url = \"https://evil.example.net/\" }}]\ninject = {{ type = \"header\", name = \"X-API-Key\", format = \"{{}}\" }}\n"),
        &[("walk.cedar", policies)],
    );
    let mut handles: Vec<Handle> = Vec::new();
    for a in f.cfg.handles.values() {
        for b in f.cfg.handles.values() {
            let mut x = a.clone();
            x.name = b.name.clone();
            handles.push(x);
        }
    }
    let mut requests = Vec::new();
    for agent in ["support-bot", "other", "nobody", "Support-bot"] {
        for tool in Tool::ALL {
            for (i, _) in handles.iter().enumerate() {
                for requested in [false, true] {
                    requests.push((agent, *tool, i, requested));
                }
            }
        }
    }
    let decide = |e: &PolicyEngine, (agent, tool, i, requested): (&str, Tool, usize, bool)| {
        if requested {
            e.decide_requested(agent, tool, &handles[i])
        } else {
            e.decide(agent, tool, &handles[i])
        }
    };
    let (forward, backward) = (engine(&f), engine(&f));
    let first: Vec<Decision> = requests.iter().map(|r| decide(&forward, *r)).collect();
    let second: Vec<Decision> = requests.iter().rev().map(|r| decide(&backward, *r)).collect();
    let allowed = first.iter().filter(|d| d.allowed).count();
    assert!(allowed > 0 && allowed < first.len(), "the walk decides both ways: {allowed} of {}", first.len());
    for (k, r) in requests.iter().enumerate() {
        let d = &first[k];
        assert_eq!(d, &second[requests.len() - 1 - k], "{r:?}");
        assert_eq!(&decide(&forward, *r), d, "{r:?} again");
        assert_eq!(&decide(&backward, *r), d, "{r:?} again");
    }
    assert!(forward.memo_len() > 0);
}

/// The decision on one set holding the common slice and the agent's own policies together, as
/// Cedar makes it: the reference the two-set evaluation must equal.
fn one_set_decision(e: &PolicyEngine, agent: &str, tool: Tool, handle: &Handle) -> Decision {
    let mut set = e.common.clone();
    for p in e.per_agent.get(agent).into_iter().flat_map(PolicySet::policies) {
        set.add(p.clone()).unwrap();
    }
    let action = e.actions.iter().find(|(t, _)| *t == tool).map(|(_, a)| a.clone()).unwrap();
    let principal = EntityUid::from_type_name_and_id(e.agent_type.clone(), EntityId::new(agent));
    let resource = EntityUid::from_type_name_and_id(e.handle_type.clone(), EntityId::new(handle.name.as_str()));
    let entities = e.request_entities(agent, &principal, (handle, false), &resource).unwrap();
    let request = Request::new(principal, action, resource, Context::empty(), Some(&e.schema)).unwrap();
    let response = e.authorizer.is_authorized(&request, &set, &entities);
    let errors: Vec<String> = response.diagnostics().errors().map(|e| e.to_string()).collect();
    let mut policies: Vec<String> = response.diagnostics().reason().map(|p| p.to_string()).collect();
    policies.sort();
    let allowed = response.decision() == cedar_policy::Decision::Allow && errors.is_empty();
    if !allowed && response.decision() == cedar_policy::Decision::Allow {
        policies.clear();
    }
    Decision { allowed, policies, errors }
}

/// Agents' own policies are evaluated next to the common slice, not in one set with it: over
/// generated policy files (permits and forbids, for one agent, for every agent or for typed
/// agents, on one tool or any, one handle or any, with conditions on the handle's attributes),
/// every decision for every agent (with grants, named only in a file, named nowhere), tool and
/// handle equals Cedar's on the one set, the policies it names included.
#[test]
fn two_slices_decide_as_one_set_over_generated_policies() {
    let agents = ["support-bot", "other", "newbie", "stranger"];
    let principals = ["principal", "principal is Airlock::Agent", "principal == Airlock::Agent::\"support-bot\"", "principal == Airlock::Agent::\"other\"", "principal == Airlock::Agent::\"newbie\""];
    let actions = ["action", "action == Airlock::Action::\"query_db\"", "action == Airlock::Action::\"http_request\"", "action in [Airlock::Action::\"query_db\", Airlock::Action::\"share_secret\"]"];
    let resources = ["resource", "resource == Airlock::Handle::\"DB_PROD\"", "resource == Airlock::Handle::\"API\"", "resource == Airlock::Handle::\"DB_RW\""];
    let conditions = ["", " when { resource.scope == \"read_only\" }", " when { resource.kind == \"http\" }", " unless { resource.scope == \"read_write\" }", " when { principal.name == \"newbie\" }"];
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut pick = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    let (mut walked, mut allowed, mut forbidden) = (0, 0, 0);
    for round in 0..60 {
        let mut text = String::new();
        for i in 0..1 + pick(8) {
            let effect = if pick(3) == 0 { "forbid" } else { "permit" };
            text.push_str(&format!(
                "@id(\"p{round}-{i}\")\n{effect} ({}, {}, {}){};\n",
                principals[pick(principals.len())],
                actions[pick(actions.len())],
                resources[pick(resources.len())],
                conditions[pick(conditions.len())]
            ));
        }
        let f = fixture(GRANTS, &[("gen.cedar", &text)]);
        let e = engine(&f);
        for agent in agents {
            for tool in Tool::ALL {
                for handle in f.cfg.handles.values().filter(|h| tool.applies_to(h.kind)) {
                    let want = one_set_decision(&e, agent, *tool, handle);
                    let got = e.evaluate(agent, *tool, handle, false);
                    assert_eq!(got.allowed, want.allowed, "{agent} {tool:?} {}\n{text}", handle.name.as_str());
                    assert_eq!(got.policies, want.policies, "{agent} {tool:?} {}\n{text}", handle.name.as_str());
                    assert_eq!(got.errors.len(), want.errors.len(), "{agent} {tool:?}\n{text}");
                    walked += 1;
                    allowed += usize::from(got.allowed);
                    forbidden += usize::from(!got.allowed && !got.policies.is_empty());
                }
            }
        }
    }
    // The walk meets all three outcomes often.
    assert!(allowed * 10 > walked && forbidden * 20 > walked, "{allowed} allowed, {forbidden} forbidden of {walked}");
}
