//! query_db through the whole broker against the real PostgreSQL and MariaDB of the machine.
//! Skips (printing why) when a server is down, unless AIRLOCK_REQUIRE_SERVICES=1.

mod common;

use common::*;
use serde_json::json;

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";
const MY: &str = "mysql://root@127.0.0.1:3306/test";

fn with_db_handles(t: String, table: &str) -> String {
    format!(
        "{t}\n[handles.PG]\nkind = \"postgres\"\nsecret = \"env:AIRLOCK_TEST_PG_DSN\"\n[handles.PG.database]\ntables = [\"{table}\"]\n\n\
         [handles.MY]\nkind = \"mysql\"\nsecret = \"env:AIRLOCK_TEST_MY_DSN\"\n[handles.MY.database]\ntables = [\"{table}\"]\n\n\
         [agents.dba]\ngrants = [{{ handle = \"PG\", tools = [\"query_db\"] }}, {{ handle = \"MY\", tools = [\"query_db\"] }}]\n"
    )
}

async fn setup_table(kind: &str, table: &str) {
    use sqlx::Connection;
    match kind {
        "pg" => {
            let mut c = sqlx::PgConnection::connect(PG).await.unwrap();
            sqlx::raw_sql(&format!("DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int, token text); INSERT INTO {table} VALUES (1, 'plain'), (2, 'sk_live_51HxQe2Zy8KjLmN0pQrStUvWx');"))
                .execute(&mut c).await.unwrap();
        }
        _ => {
            let mut c = sqlx::MySqlConnection::connect(MY).await.unwrap();
            sqlx::raw_sql(&format!("DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int, token text); INSERT INTO {table} VALUES (1, 'plain'), (2, 'sk_live_51HxQe2Zy8KjLmN0pQrStUvWx');"))
                .execute(&mut c).await.unwrap();
        }
    }
}

#[tokio::test]
async fn postgres_and_mariadb_through_the_broker() {
    let pg = reachable("127.0.0.1:5432", "PostgreSQL").await;
    let my = reachable("127.0.0.1:3306", "MariaDB").await;
    if !pg && !my {
        return;
    }
    let table = format!("airlock_broker_{}", std::process::id());
    std::env::set_var("AIRLOCK_TEST_PG_DSN", PG);
    std::env::set_var("AIRLOCK_TEST_MY_DSN", MY);
    let f = Fixture::start_with(|t| with_db_handles(t, &table)).await;
    let (_, tok) = f.store.add_agent("dba", None, None).await.unwrap();
    let tok = tok.reveal().to_owned();
    for (kind, handle, up) in [("pg", "PG", pg), ("my", "MY", my)] {
        if !up {
            continue;
        }
        setup_table(kind, &table).await;
        let (s, v) = f.invoke_as(&tok, "query_db", json!({"credential_handle": handle, "query": format!("SELECT id, token FROM {table} ORDER BY id")})).await;
        assert_eq!(s, 200, "{kind}: {v}");
        assert_eq!(v["result"]["row_count"], 2);
        // A token stored in a row is caught by the pattern rules.
        assert_eq!(v["result"]["rows"][1][1], "[REDACTED:stripe-access-token]", "{kind}: {v}");
        // T01/T02 against the real engines.
        let catalog = if kind == "pg" { "SELECT rolpassword FROM pg_authid" } else { "SELECT authentication_string FROM mysql.user" };
        let (s, v) = f.invoke_as(&tok, "query_db", json!({"credential_handle": handle, "query": catalog})).await;
        assert_eq!((s, code(&v)), (403, "table-not-allowed"), "{kind}");
        let (s, v) = f.invoke_as(&tok, "query_db", json!({"credential_handle": handle, "query": format!("DELETE FROM {table}")})).await;
        assert_eq!((s, code(&v)), (403, "statement-not-allowed"), "{kind}");
    }
    let (s, v) = f.invoke_as(&tok, "query_db", json!({"credential_handle": "PG", "query": "SELECT current_setting('data_directory')"})).await;
    if pg {
        assert_eq!((s, code(&v)), (403, "function-not-allowed"));
    }
}

#[tokio::test]
async fn t12_driver_errors_reach_the_agent_as_codes_without_the_dsn() {
    // No server needed: port 1 refuses. The DSN carries a password the agent must never see.
    let dsn = "postgres://admin:t12CanaryPw_x9@127.0.0.1:1/prod";
    std::env::set_var("AIRLOCK_T12_DSN", dsn);
    let f = Fixture::start_with(|t| {
        format!("{t}\n[handles.DOWN]\nkind = \"postgres\"\nsecret = \"env:AIRLOCK_T12_DSN\"\n\n[agents.t12]\ngrants = [{{ handle = \"DOWN\", tools = [\"query_db\"] }}]\n")
    })
    .await;
    let (_, tok) = f.store.add_agent("t12", None, None).await.unwrap();
    let (s, v) = f.invoke_as(tok.reveal(), "query_db", json!({"credential_handle": "DOWN", "query": "SELECT 1"})).await;
    assert_eq!((s, code(&v)), (502, "upstream-unavailable"), "{v}");
    let text = v.to_string();
    for needle in ["t12CanaryPw_x9", "admin:", "127.0.0.1:1", "prod"] {
        assert!(!text.contains(needle), "{needle} in {text}");
    }
}
