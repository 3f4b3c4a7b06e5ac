//! Loading: good configurations load to the values they say, and every problem of a bad one is
//! reported at once, with its code, field and place.

use super::*;
use crate::tool::Tool;

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:9000"

[handles.DB_PROD]
kind = "postgres"
secret = "env:DB_URL"
description = "orders"
[handles.DB_PROD.database]
scope = "read_only"
tables = ["orders", "public.customers"]

[handles.API]
kind = "http"
secret = "local:API"
[handles.API.http]
destinations = [{ url = "https://api.example.com/v1/", methods = ["get", "POST"] }]
inject = { type = "header", name = "X-API-Key", format = "{}" }

[agents.support-bot]
grants = [{ handle = "DB_PROD", tools = ["query_db"] }, { handle = "API", tools = ["http_request"] }]
"#;

#[test]
fn parses_a_good_config() {
    let c = Config::parse(GOOD, "airlock.toml", Path::new("/etc/airlock")).unwrap();
    assert_eq!(c.server.listen.port(), 9000);
    assert_eq!(c.store.data_dir, Path::new("/etc/airlock/airlock-data"));
    let api = &c.handles[&HandleName::parse("API").unwrap()];
    let h = api.http().unwrap();
    assert_eq!(h.destinations[0].host, "api.example.com");
    assert_eq!(h.destinations[0].port, 443);
    assert_eq!(h.destinations[0].path_prefix, "/v1/");
    assert_eq!(h.destinations[0].methods, vec!["GET", "POST"]);
    assert_eq!(c.agents["support-bot"].grants.len(), 2);
}

fn err(text: &str) -> String {
    Config::parse(text, "airlock.toml", Path::new(".")).unwrap_err().to_string()
}

#[test]
fn errors_name_file_line_and_field() {
    let e = err(&GOOD.replace("scope = \"read_only\"", "scope = \"everything\""));
    assert!(e.starts_with("airlock.toml:10:"), "{e}");
    assert!(e.contains("everything"), "{e}");

    let e = err(&GOOD.replace("handles.API", "handles.api"));
    assert!(e.starts_with("airlock.toml:13: handles.api:"), "{e}");

    let e = err(&GOOD.replace("env:DB_URL", "vault:x"));
    assert!(e.contains("airlock.toml:7: handles.DB_PROD.secret"), "{e}");

    let e = err(&GOOD.replace("tools = [\"query_db\"]", "tools = [\"http_request\"]"));
    assert!(e.contains("agents.support-bot.grants[0]"), "{e}");
    assert!(e.contains("does not apply"), "{e}");

    let e = err(&format!("{GOOD}\n[handles.X]\nkind = \"http\"\nsecret = \"env:X\"\nbogus = 1\n"));
    assert!(e.contains("bogus"), "{e}");

    let e = err(&GOOD.replace("format = \"{}\"", "format = \"Bearer\""));
    assert!(e.contains("handles.API.http.inject.format"), "{e}");
}

const MAIL_AND_CMD: &str = r#"
[handles.MAIL]
kind = "smtp"
secret = "env:MAIL_PW"
[handles.MAIL.smtp]
host = "smtp.example.com"
username = "bot@example.com"
from = "bot@example.com"
allowed_recipients = ["Ops@Example.com", "@team.example.com"]

[handles.RUN]
kind = "command"
secret = "env:RUN_TOKEN"
[handles.RUN.command]
program = "/usr/bin/deploy"
args = ["--env", "{target}", "{tag}"]
placeholders = { target = { enum = ["staging", "prod"] }, tag = { regex = 'v[0-9]+' } }

[agents.ops]
grants = [{ handle = "MAIL", tools = ["send_email"] }, { handle = "RUN", tools = ["run_command"] }]
"#;

#[test]
fn approval_rules_are_validated_with_file_line_and_field() {
    let ok = format!("{MAIL_AND_CMD}\n[handles.MAIL.approval]\nrecipients_outside = [\"@example.com\"]\nwait_seconds = 5\n");
    let c = Config::parse(&ok, "airlock.toml", Path::new(".")).unwrap();
    let r = &c.approvals[&HandleName::parse("MAIL").unwrap()];
    assert_eq!((r.expires_in_seconds, r.wait_seconds), (900, 5));
    assert!(r.recipient_outside("a@elsewhere.org"));
    assert!(!r.recipient_outside("A@Example.COM"));
    let e = err(&format!("{MAIL_AND_CMD}\n[handles.RUN.approval]\nwrites = true\n"));
    // The line of the `writes` key itself, below the table's header.
    assert!(e.contains("airlock.toml:23: handles.RUN.approval.writes: applies to database and http"), "{e}");
    let e = err(&format!("{MAIL_AND_CMD}\n[handles.RUN.approval]\nwait_seconds = 3\n"));
    assert!(e.contains("handles.RUN.approval: name at least one condition"), "{e}");
    let e = err(&format!("{MAIL_AND_CMD}\n[handles.RUN.approval]\nalways = true\nexpires_in_seconds = 1\n"));
    assert!(e.contains("handles.RUN.approval.expires_in_seconds"), "{e}");
    let e = err(&format!("{MAIL_AND_CMD}\n[handles.RUN.approval]\nalways = true\nwebhook = \"ftp://x\"\n"));
    assert!(e.contains("handles.RUN.approval.webhook"), "{e}");
    let e = err(&format!("{MAIL_AND_CMD}\n[handles.MAIL.approval]\nrecipients_outside = [\"nobody\"]\n"));
    assert!(e.contains("handles.MAIL.approval.recipients_outside"), "{e}");
    let e = err(&format!("{MAIL_AND_CMD}\n[handles.RUN.approval]\nlease_ttl_over_seconds = 60\n"));
    assert!(e.contains("no [lease] policy"), "{e}");
    let e = err(&format!("{MAIL_AND_CMD}\n[handles.RUN.approval]\nalways = true\nbogus = 1\n"));
    assert!(e.contains("bogus"), "{e}");
}

#[test]
fn parses_smtp_and_command_handles() {
    let c = Config::parse(MAIL_AND_CMD, "airlock.toml", Path::new(".")).unwrap();
    let m = c.handles[&HandleName::parse("MAIL").unwrap()].smtp().unwrap();
    assert_eq!((m.port, m.tls), (587, SmtpTls::Starttls));
    assert_eq!(m.allowed_recipients, ["ops@example.com", "@team.example.com"]);
    let r = c.handles[&HandleName::parse("RUN").unwrap()].command().unwrap();
    assert_eq!(r.secret_via, SecretDelivery::Stdin);
    assert!(!r.network);
    assert_eq!(
        r.args,
        [
            ArgTemplate::Fixed("--env".into()),
            ArgTemplate::Placeholder("target".into()),
            ArgTemplate::Placeholder("tag".into())
        ]
    );
}

#[test]
fn t10_t08_unsafe_smtp_and_command_settings_are_refused() {
    let e = err(&MAIL_AND_CMD.replace("username = \"bot@example.com\"", "username = \"bot@example.com\"\ntls = \"none\""));
    assert!(e.contains("handles.MAIL.smtp.tls") && e.contains("loopback"), "{e}");
    let e = err(&MAIL_AND_CMD.replace("\"@team.example.com\"", "\"@\""));
    assert!(e.contains("allowed_recipients"), "{e}");
    let e = err(&MAIL_AND_CMD.replace("/usr/bin/deploy", "deploy"));
    assert!(e.contains("handles.RUN.command.program"), "{e}");
    let e = err(&MAIL_AND_CMD.replace("\"{tag}\"", "\"--tag={tag}\""));
    assert!(e.contains("whole argument"), "{e}");
    let e = err(&MAIL_AND_CMD.replace("\"{tag}\"", "\"{other}\""));
    assert!(e.contains("not declared"), "{e}");
    let e = err(&MAIL_AND_CMD.replace("\"{tag}\"", "\"{secret_file}\""));
    assert!(e.contains("secret_via"), "{e}");
    let e = err(&MAIL_AND_CMD.replace("tools = [\"send_email\"]", "tools = [\"run_command\"]"));
    assert!(e.contains("does not apply"), "{e}");
    let e = err(&MAIL_AND_CMD.replace("[handles.RUN.command]", "[handles.RUN.smtp]"));
    assert!(e.contains("unknown field"), "{e}");
}

#[test]
fn t15_a_lease_policy_never_widens_its_handle() {
    let with = |lease: &str| format!("{GOOD}\n[handles.DB_PROD.lease]\n{lease}\n");
    let c = Config::parse(&with("dynamic = true\nmax_ttl_seconds = 600\nagent_max_ttl_seconds = { support-bot = 60 }\ntables = [\"ORDERS\"]"), "airlock.toml", Path::new(".")).unwrap();
    let lp = &c.leases[&HandleName::parse("DB_PROD").unwrap()];
    assert_eq!((lp.max_ttl_for("support-bot"), lp.max_ttl_for("other")), (60, 600));
    assert_eq!(lp.scopes, vec![Scope::ReadOnly]);
    for (lease, needle) in [
        ("scopes = [\"read_write\"]", "read_write is wider"),
        ("tables = [\"secrets\"]", "'secrets' is not among the handle's tables"),
        ("tables = [\"orders; drop\"]", "is not a table name"),
        ("max_ttl_seconds = 0", "must be at least 1"),
        ("creation_statements = [\"CREATE ROLE x\"]", "{{password}}"),
        ("agent_max_ttl_seconds = { Bad = 1 }", "not an agent name"),
        ("bogus = 1", "bogus"),
    ] {
        let e = err(&with(lease));
        assert!(e.contains("handles.DB_PROD.lease") || e.contains("bogus"), "{lease}: {e}");
        assert!(e.contains(needle), "{lease}: {e}");
    }
    let e = err(&format!("{GOOD}\n[handles.API.lease]\n"));
    assert!(e.contains("only database and aws handles can be leased"), "{e}");
    let e = err(&format!("{GOOD}\n[handles.LITE]\nkind = \"sqlite\"\nsecret = \"env:X\"\n[handles.LITE.lease]\ndynamic = true\n"));
    assert!(e.contains("dynamic leases need a postgres or mysql handle"), "{e}");
}

const AWS: &str = r#"
[handles.S3]
kind = "aws"
secret = "env:AWS_KEYS"
[handles.S3.aws]
region = "eu-west-1"
endpoint = "http://127.0.0.1:5000/"
role_arn = "arn:aws:iam::123456789012:role/agents"
buckets = ["reports", "exports.2026", "reports"]

[agents.bot]
grants = [{ handle = "S3", tools = ["request_lease"] }]
"#;

#[test]
fn parses_an_aws_handle_with_sts_defaults() {
    let c = Config::parse(AWS, "airlock.toml", Path::new(".")).unwrap();
    let a = c.handles[&HandleName::parse("S3").unwrap()].aws().unwrap();
    assert_eq!(a.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
    assert_eq!(a.buckets, ["reports", "exports.2026"]);
    assert_eq!((a.max_ttl_seconds, a.scopes.as_slice()), (900, &[Scope::ReadOnly][..]));
    assert!(Tool::RequestLease.applies_to(HandleKind::Aws) && !Tool::QueryDb.applies_to(HandleKind::Aws));
}

#[test]
fn t15_bad_aws_settings_are_refused_with_file_line_and_field() {
    for (from, to, needle) in [
        ("buckets = [", "max_ttl_seconds = 899\nbuckets = [", "handles.S3.aws.max_ttl_seconds"),
        ("buckets = [", "max_ttl_seconds = 43201\nbuckets = [", "between 900"),
        ("\"reports\", \"exports", "\"Reports\", \"exports", "'Reports' is not an S3 bucket name"),
        ("\"reports\", \"exports", "\"a*\", \"exports", "not an S3 bucket name"),
        ("role/agents", "user/agents", "handles.S3.aws.role_arn"),
        ("123456789012", "12345", "role_arn"),
        ("5000/", "5000/path", "handles.S3.aws.endpoint"),
        ("http://127.0.0.1", "ftp://127.0.0.1", "scheme"),
        ("eu-west-1", "EU WEST", "region"),
        ("region = ", "scopes = []\nregion = ", "name at least one scope"),
        ("region = ", "bogus = 1\nregion = ", "bogus"),
    ] {
        let e = err(&AWS.replace(from, to));
        assert!(e.starts_with("airlock.toml:"), "{e}");
        assert!(e.contains(needle), "{to}: {e}");
    }
    let e = err(&AWS.replace("tools = [\"request_lease\"]", "tools = [\"s3_object\"]"));
    assert!(e.contains("agents.bot.grants[0]") && e.contains("grant request_lease"), "{e}");
    let e = err(&format!("{AWS}\n[handles.S3.lease]\nmax_ttl_seconds = 900\n"));
    assert!(e.contains("handles.S3.lease") && e.contains("[aws] table"), "{e}");
    let e = err("[handles.S3]\nkind = \"aws\"\nsecret = \"env:X\"\n");
    assert!(e.contains("handles.S3.aws") && e.contains("role_arn"), "{e}");
}

#[test]
fn t16_unknown_handle_in_grant_is_refused() {
    let e = err(&GOOD.replace("handle = \"DB_PROD\"", "handle = \"DB_PRO\u{041E}\""));
    assert!(e.starts_with("airlock.toml:21:") && e.contains("a handle is"), "{e}");
    let e = err(&GOOD.replace("handle = \"DB_PROD\"", "handle = \"DB_PRODX\""));
    assert!(e.contains("agents.support-bot.grants[0]: unknown handle DB_PRODX"), "{e}");
}

const VAULTS: &str = r#"
[vaults.corp]
kind = "openbao"
addr = "https://bao.example:8200"
ca_cert = "ca.pem"
namespace = "team"
auth = { method = "approle", role_id = "env:ROLE", secret_id = "file:sid" }

[vaults.local-bao]
kind = "vault"
addr = "http://127.0.0.1:8200"
auth = { method = "token", token = "env:BAO_TOKEN" }

[handles.PG]
kind = "postgres"
secret = "openbao:corp/secret/app/db#password@3"
[handles.PG.database]
url = "postgres://app@db.example/app"
[handles.PG.lease]
provider = "openbao"
vault = "local-bao"
role = "readonly"

[handles.API]
kind = "generic"
secret = "vault:local-bao/kv/a/b/c#api-key"
"#;

#[test]
fn parses_vaults_remote_refs_and_openbao_leases() {
    let c = Config::parse(VAULTS, "airlock.toml", Path::new("/etc/airlock")).unwrap();
    let corp = &c.vaults["corp"];
    assert_eq!(corp.kind, RemoteVaultKind::Openbao);
    assert_eq!(corp.ca_cert.as_deref(), Some(Path::new("/etc/airlock/ca.pem")));
    assert_eq!(corp.cache_ttl_seconds, 30);
    assert_eq!(corp.namespace.as_deref(), Some("team"));
    assert!(matches!(&corp.auth, RemoteAuth::AppRole { mount, secret_id: SecretRef::File(p), .. } if mount == "approle" && p == Path::new("/etc/airlock/sid")));
    let pg = &c.handles[&HandleName::parse("PG").unwrap()];
    assert_eq!(
        pg.secret,
        SecretRef::Remote(RemoteRef {
            vault: "corp".into(),
            mount: "secret".into(),
            path: "app/db".into(),
            field: Some("password".into()),
            version: Some(3)
        })
    );
    let SecretRef::Remote(api) = &c.handles[&HandleName::parse("API").unwrap()].secret else { panic!() };
    assert_eq!((api.mount.as_str(), api.path.as_str(), api.field.as_deref(), api.version), ("kv", "a/b/c", Some("api-key"), None));
    assert_eq!(api.to_string(), "openbao:local-bao/kv/a/b/c#api-key");
    let lp = &c.leases[&HandleName::parse("PG").unwrap()];
    assert_eq!((lp.provider, lp.vault.as_deref(), lp.role.as_deref()), (LeaseProvider::Openbao, Some("local-bao"), Some("readonly")));
}

#[test]
fn remote_refs_are_validated_at_load() {
    for (bad, what) in [
        ("openbao:corp/secret/app", "field is missing"),
        ("openbao:corp/secret#f", "a vault name, a mount and a path"),
        ("openbao:corp//app#f", "not a valid path segment"),
        ("openbao:corp/secret/../x#f", "not a valid path segment"),
        ("openbao:corp/secret/a?b#f", "not a valid path segment"),
        ("openbao:corp/secret/app#", "field is empty"),
        ("openbao:corp/secret/app#f@x", "not a positive integer"),
        ("openbao:corp/secret/app#f@0", "versions start at 1"),
        ("openbao:Corp/secret/app#f", "not a vault name"),
        ("local:request:STRIPE", "airlock's own"),
        ("local:API\u{0}x", "airlock's own"),
    ] {
        let e = SecretRef::parse(bad, Path::new(".")).unwrap_err();
        assert!(e.contains(what), "{bad}: {e}");
    }
    let text = VAULTS.replace("openbao:corp/secret/app/db#password@3", "openbao:nope/secret/app/db#password");
    let e = Config::parse(&text, "a.toml", Path::new(".")).unwrap_err().to_string();
    assert!(e.contains("handles.PG.secret") && e.contains("no [vaults.nope]") && e.starts_with("a.toml:16:"), "{e}");
}

#[test]
fn vault_tables_are_validated() {
    let cases = [
        ("auth = { method = \"token\", token = \"env:BAO_TOKEN\" }", "auth = { method = \"token\", token = \"s.abcdef\" }", "vaults.local-bao.auth.token"),
        ("auth = { method = \"token\", token = \"env:BAO_TOKEN\" }", "auth = { method = \"token\", token = \"local:X\" }", "env:VAR or file:PATH"),
        ("addr = \"http://127.0.0.1:8200\"", "addr = \"http://bao.example:8200\"", "only for a loopback"),
        ("addr = \"http://127.0.0.1:8200\"", "addr = \"https://bao.example:8200/v1\"", "no path"),
        ("role = \"readonly\"", "", "lease.role"),
        ("vault = \"local-bao\"", "vault = \"other\"", "no [vaults.other]"),
        ("url = \"postgres://app@db.example/app\"", "", "needs database.url"),
        ("provider = \"openbao\"", "provider = \"airlock\"", "go with provider"),
    ];
    for (from, to, what) in cases {
        let text = VAULTS.replace(from, to);
        assert_ne!(text, VAULTS, "{from}");
        let e = Config::parse(&text, "a.toml", Path::new(".")).unwrap_err().to_string();
        assert!(e.contains(what), "{to}: {e}");
    }
    let e = Config::parse(&VAULTS.replace("[vaults.corp]", "[vaults.Corp]").replace("openbao:corp/", "openbao:x/"), "a.toml", Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(e.contains("vaults.Corp"), "{e}");
}

fn problems_of(text: &str) -> Vec<Problem> {
    let e = Config::parse(text, "airlock.toml", Path::new(".")).unwrap_err();
    assert!(matches!(e, ConfigError::Invalid { .. }), "{e:?}");
    e.problems().to_vec()
}

/// Code, field and line of each problem.
fn summary(problems: &[Problem]) -> Vec<(ProblemCode, &str, usize)> {
    problems.iter().map(|p| (p.code, p.field.as_str(), p.location.map_or(0, |l| l.line))).collect()
}

const THREE_PROBLEMS: &str = r#"[server]
socket_mode = 0o666

[handles.DB]
kind = "sqlite"
secret = "env:DB"
[handles.DB.database]
max_rows = 0

[agents.bot]
grants = [{ handle = "NOPE", tools = ["query_db"] }]
"#;

#[test]
fn three_independent_problems_are_all_reported_with_code_field_and_line() {
    let e = Config::parse(THREE_PROBLEMS, "airlock.toml", Path::new(".")).unwrap_err();
    assert_eq!(
        summary(e.problems()),
        [
            (ProblemCode::UnsafePermissions, "server.socket_mode", 2),
            (ProblemCode::OutOfRange, "handles.DB.database.max_rows", 8),
            (ProblemCode::UnknownHandle, "agents.bot.grants[0]", 11),
        ]
    );
    // Columns point at the key, or at the array element.
    let columns: Vec<usize> = e.problems().iter().map(|p| p.location.unwrap().column).collect();
    assert_eq!(columns, [1, 1, 11]);
    // One line per problem, each starting with the place and ending with the code.
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("airlock.toml:2: server.socket_mode: 0o666: the owner needs"), "{text}");
    assert!(lines[0].ends_with(" [unsafe-permissions]"), "{text}");
    assert_eq!(lines[1], "airlock.toml:8: handles.DB.database.max_rows: must be at least 1 [out-of-range]");
    assert_eq!(lines[2], "airlock.toml:11: agents.bot.grants[0]: unknown handle NOPE [unknown-handle]");
}

#[test]
fn every_shape_problem_of_a_table_is_reported_in_one_pass() {
    let p = problems_of("[limits]\nrate = 1\nburst = 2\nrate_per_minute = \"many\"\n\n[server]\nlisten = 5\n[bogus]\n");
    assert_eq!(
        summary(&p),
        [
            (ProblemCode::UnknownKey, "limits.rate", 2),
            (ProblemCode::UnknownKey, "limits.burst", 3),
            (ProblemCode::WrongType, "limits.rate_per_minute", 4),
            (ProblemCode::WrongType, "server.listen", 7),
            (ProblemCode::UnknownKey, "bogus", 8),
        ]
    );
    assert!(p[0].message.contains("unknown field `rate`"), "{p:?}");
}

#[test]
fn a_problem_is_reported_where_it_is_not_again_where_it_is_used() {
    // The http table and the kind are wrong; the grants naming those handles are not reported
    // as unknown handles, nor the http handle as lacking its table.
    let text = r#"[handles.API]
kind = "http"
secret = "env:API"
[handles.API.http]
destinations = [{ url = "https://api.example", verbs = ["GET"] }]
inject = { type = "query", param = "k" }

[handles.ODD]
kind = "oracle"
secret = "env:ODD"

[vaults.Bad]
kind = "openbao"
addr = "https://bao.example"
auth = { method = "token", token = "env:T" }

[handles.REMOTE]
kind = "generic"
secret = "openbao:Bad/kv/x#y"

[agents.bot]
grants = [{ handle = "API", tools = ["http_request"] }, { handle = "ODD", tools = ["query_db"] }]
"#;
    let p = problems_of(text);
    assert_eq!(
        summary(&p),
        [
            (ProblemCode::UnknownKey, "handles.API.http.destinations[0].verbs", 5),
            (ProblemCode::BadValue, "handles.ODD.kind", 9),
            (ProblemCode::BadVaultName, "vaults.Bad", 12),
            (ProblemCode::BadSecretRef, "handles.REMOTE.secret", 19),
        ],
        "{p:#?}"
    );
}

#[test]
fn syntax_errors_are_reported_with_their_line() {
    let p = problems_of("[server]\nlisten = \"127.0.0.1:1\"\n\n[limits\nrate_per_minute = 1\n");
    assert!(!p.is_empty());
    assert!(p.iter().all(|p| p.code == ProblemCode::TomlSyntax), "{p:?}");
    assert_eq!(p[0].location.map(|l| l.line), Some(4), "{p:?}");
    let p = problems_of("[server]\nlisten = \"127.0.0.1:1\"\n[server]\n");
    assert_eq!(summary(&p), [(ProblemCode::DuplicateKey, "", 3)]);
}

#[test]
fn a_file_that_cannot_be_read_names_itself() {
    let e = Config::load(Path::new("/nonexistent/airlock.toml")).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(e.problems().is_empty());
    assert!(e.to_string().starts_with("/nonexistent/airlock.toml: cannot read:"), "{e}");
}

#[derive(serde::Deserialize)]
struct Vectors {
    case: Vec<Vector>,
}

#[derive(serde::Deserialize)]
struct Vector {
    replace: String,
    with: String,
    expect: Vec<String>,
}

#[test]
fn negative_vectors_report_exactly_their_problems_and_reach_every_code() {
    let full = include_str!("testdata/full.toml");
    let vectors: Vectors = toml::from_str(include_str!("testdata/problems.toml")).unwrap();
    let mut seen = std::collections::HashSet::new();
    for v in &vectors.case {
        assert_eq!(full.matches(&v.replace).count(), 1, "{:?} must be in full.toml once", v.replace);
        let text = full.replacen(&v.replace, &v.with, 1);
        let got: Vec<String> = match Config::parse(&text, "airlock.toml", Path::new("/etc/airlock")) {
            Ok(_) => Vec::new(),
            Err(e) => {
                seen.extend(e.problems().iter().map(|p| p.code));
                e.to_string().lines().map(|l| l.strip_prefix("airlock.toml:").unwrap_or(l).to_owned()).collect()
            }
        };
        assert_eq!(got, v.expect, "replacing {:?} with {:?}", v.replace, v.with);
    }
    let unreached: Vec<&str> = ProblemCode::ALL.iter().filter(|c| !seen.contains(*c)).map(|c| c.as_str()).collect();
    assert!(unreached.is_empty(), "no vector reports {unreached:?}");
}

#[test]
fn problem_codes_are_unique_kebab_case_and_serialize_as_their_name() {
    let mut seen = std::collections::HashSet::new();
    for c in ProblemCode::ALL {
        let s = c.as_str();
        assert!(seen.insert(s), "duplicate {s}");
        assert!(!s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'), "{s}");
        assert_eq!(serde_json::to_value(c).unwrap(), serde_json::Value::String(s.into()));
        assert_eq!(c.to_string(), s);
    }
    assert_eq!(ProblemCode::UnknownKey.as_str(), "unknown-key");
    assert_eq!(ProblemCode::ALL.first(), Some(&ProblemCode::TomlSyntax));
}

/// `actual` equals the stored `expected`, or the first line that differs is shown.
fn assert_same_text(name: &str, actual: &str, expected: &str) {
    if actual != expected {
        let (n, (a, e)) = actual.lines().zip(expected.lines()).enumerate().find(|(_, (a, e))| a != e).unwrap_or((0, ("", "")));
        panic!("{name}: differs from the stored values at line {}:\n  now:    {a}\n  stored: {e}", n + 1);
    }
}

#[test]
fn starter_demo_and_full_configs_load_to_their_stored_values() {
    // The .debug files hold the values these files load to, field by field: a change there is
    // a change of what a configuration means.
    for (name, text, stored) in [
        ("starter", include_str!("../../../../src/starter.toml"), include_str!("testdata/starter.debug")),
        ("demo", include_str!("testdata/demo.toml"), include_str!("testdata/demo.debug")),
        ("full", include_str!("testdata/full.toml"), include_str!("testdata/full.debug")),
    ] {
        let c = Config::parse(text, "airlock.toml", Path::new("/etc/airlock")).unwrap_or_else(|e| panic!("{name}: {e}"));
        if std::env::var_os("AIRLOCK_UPDATE_GOLDEN").is_some_and(|v| v == "1") {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("src/config/testdata/{name}.debug"));
            std::fs::write(path, format!("{c:#?}\n")).unwrap();
            continue;
        }
        assert_same_text(name, &format!("{c:#?}\n"), stored);
    }
    let starter = Config::parse(include_str!("../../../../src/starter.toml"), "airlock.toml", Path::new("/etc/airlock")).unwrap();
    assert_eq!(starter.server, ServerConfig::default());
    assert_eq!(starter.store.data_dir, Path::new("/etc/airlock/airlock-data"));
    assert_eq!(starter.limits, LimitsConfig::default());
    assert_eq!((starter.sandbox, starter.shares), (SandboxConfig::default(), SharesConfig::default()));
    assert!(starter.handles.is_empty() && starter.agents.is_empty() && starter.policy.files.is_empty());
    // The Debug form hides the store URL's user; the value keeps it.
    let full = Config::parse(include_str!("testdata/full.toml"), "airlock.toml", Path::new("/etc/airlock")).unwrap();
    assert_eq!(full.store.url.as_deref(), Some("postgres://airlock@db.internal:5432/airlock"));
    assert_eq!(full.handles.len(), 13);
    assert_eq!(full.leases.len(), 2);
    assert_eq!(full.approvals.len(), 3);
}

#[test]
fn field_paths_read_as_dotted_keys_and_indexes() {
    let p = source::FieldPath::root().join("handles.API.http").key("destinations").index(2).join("methods");
    assert_eq!(p.to_string(), "handles.API.http.destinations[2].methods");
    assert_eq!(source::FieldPath::root().join("agents.bot.grants[0]").to_string(), "agents.bot.grants[0]");
    assert_eq!(source::FieldPath::root().key("shares").key("recipients").key("a@b.example").to_string(), "shares.recipients.a@b.example");
}

#[test]
fn t17_t29_the_default_link_base_of_a_listener_that_is_not_loopback_is_refused() {
    let open = GOOD.replace("127.0.0.1:9000", "0.0.0.0:9000");
    let p = problems_of(&open);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!((p[0].code, p[0].field.as_str()), (ProblemCode::InsecureLink, "shares.base_url"));
    // An https base, or a loopback listener, is fine.
    Config::parse(&format!("{open}\n[shares]\nbase_url = \"https://airlock.example\"\n"), "airlock.toml", Path::new(".")).unwrap();
    Config::parse(GOOD, "airlock.toml", Path::new(".")).unwrap();
    let p = problems_of(&format!("{GOOD}\n[shares]\nbase_url = \"http://[::ffff:10.0.0.1]:80\"\n"));
    assert_eq!(p[0].code, ProblemCode::InsecureLink);
}

#[test]
fn telemetry_endpoint_and_service_name_are_checked() {
    let c = Config::parse(GOOD, "airlock.toml", Path::new(".")).unwrap();
    assert_eq!(c.telemetry, TelemetryConfig::default());
    let ok = format!("{GOOD}\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\nservice_name = \"airlock-eu\"\n");
    let c = Config::parse(&ok, "airlock.toml", Path::new(".")).unwrap();
    assert_eq!(c.telemetry.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4318/v1/traces"));
    assert_eq!(c.telemetry.service_name.as_deref(), Some("airlock-eu"));
    let https = format!("{GOOD}\n[telemetry]\notlp_endpoint = \"https://collector.example:4318/v1/traces\"\n");
    assert!(Config::parse(&https, "airlock.toml", Path::new(".")).is_ok());
    for (endpoint, code) in [
        ("http://collector.example:4318/v1/traces", ProblemCode::InsecureTransport),
        ("collector:4318", ProblemCode::BadUrl),
        ("not a url", ProblemCode::BadUrl),
        ("ftp://127.0.0.1/v1/traces", ProblemCode::BadUrl),
        ("https://user:key@collector.example/v1/traces", ProblemCode::PasswordInUrl),
        ("https://collector.example/v1/traces?key=1", ProblemCode::BadUrl),
    ] {
        let text = format!("{GOOD}\n[telemetry]\notlp_endpoint = \"{endpoint}\"\nservice_name = \"\"\n");
        let p = problems_of(&text);
        assert_eq!(summary(&p).iter().map(|(c, f, _)| (*c, *f)).collect::<Vec<_>>(), [
            (code, "telemetry.otlp_endpoint"),
            (ProblemCode::BadValue, "telemetry.service_name"),
        ], "{endpoint}");
    }
    let p = problems_of(&format!("{GOOD}\n[telemetry]\nendpoint = \"http://127.0.0.1:4318\"\n"));
    assert_eq!(p[0].code, ProblemCode::UnknownKey);
}

#[test]
fn an_empty_lease_table_is_the_default_lease_policy() {
    let empty: super::LeasePolicy = toml::from_str("").unwrap();
    assert_eq!(empty, super::LeasePolicy::default());
}
