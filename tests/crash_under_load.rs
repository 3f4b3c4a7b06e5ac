//! `airlock serve` killed with SIGKILL at random moments under load, then restarted, again and
//! again (`AIRLOCK_CRASH_ROUNDS`, 10 by default; the README's figures are from 50). Six clients
//! make `query_db` calls, create and consume one-time links, issue, use and revoke PostgreSQL
//! leases (real roles on the machine's PostgreSQL, 1 to 3 s long so that many expire during the
//! run), and make calls held for approval (INSERTs on a handle with `writes = true`); the test
//! approves some of those and repeats them.
//!
//! After every kill, with nothing moving: the audit chain verifies and holds a record for every
//! call answered `ok` (the record is committed before the answer). Every lease role of this
//! installation on PostgreSQL belongs to a lease the store holds as pending, active or being
//! revoked (no orphan); every active lease has its role; every lease whose issue was answered is
//! in the store (active, being revoked or revoked) and every one whose revocation was answered is
//! revoked. No approval the test did not approve is approved or used, every approved or used one
//! has its decision in the audit, and no held call ran: the ledger has a row only for a call the
//! test approved, and at most one.
//!
//! After every restart: every link whose create was answered 201 and that was not consumed still
//! opens, once, to the ciphertext uploaded; every link whose consume was answered 200 is gone
//! (never burned twice); every consume whose answer was lost with the broker, asked again with the
//! same attempt id, gets the link (still there, or burned and answered again). A role of the
//! installation's naming with no lease (made while the broker was down) is dropped by start-up
//! reconciliation. Once the reaper has caught up (no expired lease still active, no revocation
//! pending), no role remains but those of pending and active leases. Every held approval is still
//! pending, and its call, repeated, is held again under the same approval; a call the test
//! approved runs exactly once when repeated, and needs a new approval after that (an approval
//! used by a call the kill cut before it ran stays used: at most once). At the end every lease
//! is revoked and no role is left.
//!
//! Without PostgreSQL at 127.0.0.1:5432 the lease part is skipped (it says so), unless
//! AIRLOCK_REQUIRE_SERVICES=1, where the test fails.

mod common;

use airlock_share::NewShare;
use chrono::{DateTime, Utc};
use common::Server;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The machine's PostgreSQL, as the other lease tests use it (trust authentication).
const PG: &str = "postgres://postgres@127.0.0.1:5432/test";

/// How the test's own revocation of a lease went.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Revoke {
    Never,
    /// Sent; the answer was lost with the broker.
    Sent,
    /// Answered `revoked`.
    Answered,
    /// Answered `revoking`: another revocation had claimed it (the reaper, at its expiry).
    Claimed,
}

/// A lease whose issue was answered.
#[derive(Clone, Debug)]
struct LeaseSeen {
    handle: String,
    expires_at: DateTime<Utc>,
    revoke: Revoke,
}

/// What the clients saw, across rounds.
#[derive(Default)]
struct Seen {
    /// Request ids of calls answered `ok`.
    ok_calls: Vec<String>,
    /// Links created (201) and not consumed yet: id → (proof, ciphertext as uploaded).
    live: HashMap<String, (String, String)>,
    /// Links whose consume was answered 200: id → proof.
    consumed: HashMap<String, String>,
    /// Links whose consume got no answer (the broker died): id → (proof, ciphertext, attempt).
    uncertain: HashMap<String, (String, String, String)>,

    /// Leases whose issue was answered: id → what the answer said and what the test did since.
    leases: HashMap<String, LeaseSeen>,
    /// Answered leases a client may use or revoke now (taken out while one does).
    usable: Vec<String>,
    /// Issues whose answer was lost with the broker.
    issues_lost: usize,
    /// Calls through a lease answered `ok`, and refused once the lease had expired.
    lease_uses_ok: usize,
    lease_uses_expired: usize,

    /// The next ledger row id (each held call inserts its own row).
    next_row: u64,
    /// Held calls the test has not approved: row → approval id.
    held: HashMap<u64, String>,
    /// Held calls whose answer was lost (the approval's id unknown): rows.
    held_unknown: Vec<u64>,
    /// Approvals the test sent whose answer was lost: row → approval id.
    approving: HashMap<u64, String>,
    /// Approved (answered), the call not yet answered: row → approval id.
    approved: HashMap<u64, String>,
    /// Approved calls whose repeat was answered `ok` (or that ran before a kill): row → approval id.
    executed: HashMap<u64, String>,
    /// Approved calls whose approval was used by a call the kill cut before it ran: row →
    /// approval id.
    cut: HashMap<u64, String>,
    /// Of those, the ones whose call had its intent record written (the kill came after it).
    cut_after_intent: usize,
    /// Calls repeated after they ran, held under a new approval (never approved): row → id.
    reheld: HashMap<u64, String>,
    /// Held calls repeated and held again under the same approval.
    held_repeats: usize,
    /// Approvals whose answer was lost: the decision had landed, or had not.
    approvals_lost_landed: usize,
    approvals_lost_not_landed: usize,
    /// Approved calls whose answer was lost and that had run before the kill.
    runs_lost_ran: usize,
    /// Approved calls run after a restart (approved before the kill).
    runs_after_restart: usize,
    /// Role checks (after kills and restarts) and the roles they looked at.
    role_checks: usize,
    roles_checked: usize,
}

impl Seen {
    /// Rows whose call the test approved (or tried to) and that may still run or have run: the
    /// only ones that may be in the ledger.
    fn approved_rows(&self) -> HashSet<u64> {
        self.approving.keys().chain(self.approved.keys()).chain(self.executed.keys()).copied().collect()
    }

    /// Approval ids the test approved (or tried to).
    fn approved_ids(&self) -> HashSet<String> {
        self.approving.values().chain(self.approved.values()).chain(self.executed.values()).chain(self.cut.values()).cloned().collect()
    }
}

/// The PostgreSQL side of the lease part: the table leases read and the role prefix of this
/// run's installation. Roles and table are dropped when it is (a failed run included).
struct PgSide {
    table: String,
    prefix: String,
}

impl PgSide {
    async fn connect() -> sqlx::PgConnection {
        use sqlx::Connection;
        sqlx::PgConnection::connect(PG).await.unwrap()
    }

    /// The roles of this installation's naming on the server.
    async fn roles(&self) -> HashSet<String> {
        let mut c = Self::connect().await;
        sqlx::query_scalar("SELECT rolname::text FROM pg_roles WHERE rolname LIKE $1")
            .bind(format!("{}%", self.prefix.replace('_', "\\_")))
            .fetch_all(&mut c)
            .await
            .unwrap()
            .into_iter()
            .collect()
    }

    /// The role of a lease handle (`PGL__L7F3A2C` → `<prefix>7f3a2c`).
    fn role_of(&self, handle: &str) -> String {
        format!("{}{}", self.prefix, handle.rsplit("__L").next().unwrap().to_ascii_lowercase())
    }
}

impl Drop for PgSide {
    fn drop(&mut self) {
        let (table, pattern) = (self.table.clone(), format!("{}%", self.prefix.replace('_', "\\_")));
        // Its own runtime: this may run while the test's is unwinding.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let mut c = PgSide::connect().await;
                let roles: Vec<String> =
                    sqlx::query_scalar("SELECT rolname::text FROM pg_roles WHERE rolname LIKE $1").bind(&pattern).fetch_all(&mut c).await.unwrap();
                for r in roles {
                    let _ = sqlx::raw_sql(&format!("DROP OWNED BY \"{r}\"; DROP ROLE \"{r}\"")).execute(&mut c).await;
                }
                let _ = sqlx::raw_sql(&format!("DROP TABLE IF EXISTS {table}")).execute(&mut c).await;
            })
        })
        .join();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether the lease part runs: PostgreSQL reachable, or skipped (said so) unless required.
fn postgres_up() -> bool {
    let up = std::net::TcpStream::connect_timeout(&"127.0.0.1:5432".parse().unwrap(), Duration::from_secs(2)).is_ok();
    if !up {
        assert!(!common::require(), "PostgreSQL at 127.0.0.1:5432 is required (AIRLOCK_REQUIRE_SERVICES=1) but unreachable");
        println!("skipped: the lease part (PostgreSQL at 127.0.0.1:5432 is unreachable)");
    }
    up
}

/// The installation: a read-only sqlite handle (APP), a ledger whose writes need approval
/// (LEDGER), and with PostgreSQL a handle leased as real roles (PGL). Returns the agent's and
/// the approver's tokens.
fn setup(dir: &Path, port: u16, pg: Option<&PgSide>) -> (String, String) {
    assert!(common::airlock_in(dir, &["init"], None, &[]).status.success());
    let (db, ledger) = (dir.join("app.db"), dir.join("ledger.db"));
    let rt = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        rt.block_on(async {
            use sqlx::Connection;
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", db.display())).await.unwrap();
            sqlx::raw_sql("CREATE TABLE t (id INTEGER, v TEXT); INSERT INTO t VALUES (1, 'one'), (2, 'two');").execute(&mut c).await.unwrap();
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", ledger.display())).await.unwrap();
            sqlx::raw_sql("CREATE TABLE ledger (id INTEGER, v TEXT);").execute(&mut c).await.unwrap();
            if let Some(pg) = pg {
                let mut c = PgSide::connect().await;
                let t = &pg.table;
                sqlx::raw_sql(&format!("DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (id int, v text); INSERT INTO {t} VALUES (1, 'a'), (2, 'b');"))
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
        })
    });
    let mut cfg = std::fs::read_to_string(dir.join("airlock.toml")).unwrap();
    cfg = cfg.replace("[policy]\n", "").replace("files = []\n", "").replace("rate_per_minute = 600", "rate_per_minute = 10000000");
    cfg = cfg.replace("listen = \"127.0.0.1:7878\"", &format!("listen = \"127.0.0.1:{port}\"\nsocket = \"run/airlock.sock\""));
    cfg.push_str(
        "\n[handles.APP]\nkind = \"sqlite\"\nsecret = \"local:APP\"\n[handles.APP.database]\ntables = [\"t\"]\n\n\
         [handles.LEDGER]\nkind = \"sqlite\"\nsecret = \"local:LEDGER\"\n[handles.LEDGER.database]\nscope = \"read_write\"\ntables = [\"ledger\"]\n\
         [handles.LEDGER.approval]\nwrites = true\nexpires_in_seconds = 86400\n\n\
         [shares]\ncreate_per_minute = 1000000\nfailed_consumes_per_minute = 1000000\n",
    );
    let mut grants = String::from("{ handle = \"APP\", tools = [\"query_db\"] }, { handle = \"LEDGER\", tools = [\"query_db\"] }");
    if let Some(pg) = pg {
        cfg.push_str(&format!(
            "\n[handles.PGL]\nkind = \"postgres\"\nsecret = \"local:PGL\"\n[handles.PGL.database]\ntables = [\"{}\"]\n\
             [handles.PGL.lease]\ndynamic = true\nmax_ttl_seconds = 60\n",
            pg.table
        ));
        grants.push_str(", { handle = \"PGL\", tools = [\"query_db\", \"request_lease\"] }");
    }
    cfg.push_str(&format!("\n[agents.bot]\ngrants = [{grants}]\n"));
    std::fs::write(dir.join("airlock.toml"), cfg).unwrap();
    let put = |name: &str, value: String| {
        let o = common::airlock_in(dir, &["secret", "put", name], Some(&value), &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    put("APP", format!("sqlite://{}?mode=ro\n", db.display()));
    put("LEDGER", format!("sqlite://{}?mode=rw\n", ledger.display()));
    if pg.is_some() {
        put("PGL", format!("{PG}\n"));
    }
    let token = |args: &[&str]| {
        let o = common::airlock_in(dir, args, None, &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap().trim().to_owned()
    };
    (token(&["agent", "add", "bot"]), token(&["approver", "add", "alice"]))
}

async fn start(dir: &Path, base: &str, client: &reqwest::Client) -> Server {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("serve.log")).unwrap();
    let mut child = Server(
        Command::new(env!("CARGO_BIN_EXE_airlock"))
            .current_dir(dir)
            .env("AIRLOCK_CONFIG", dir.join("airlock.toml"))
            .env_remove("RUST_LOG")
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    for _ in 0..400 {
        if client.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status() == 200) {
            return child;
        }
        assert!(child.0.try_wait().unwrap().is_none(), "airlock serve exited: {}", std::fs::read_to_string(dir.join("serve.log")).unwrap());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("airlock serve did not answer /healthz");
}

/// Sends a request; the status and the JSON answer, or the error of a broker that died.
async fn send(rb: reqwest::RequestBuilder) -> Result<(u16, Value), reqwest::Error> {
    let r = rb.send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await?))
}

async fn consume(client: &reqwest::Client, base: &str, id: &str, proof: &str, attempt: &str) -> Result<(u16, Value), reqwest::Error> {
    send(client.post(format!("{base}/v1/shares/{id}/consume")).json(&json!({"proof": proof, "attempt": attempt}))).await
}

/// What a client needs: where, as whom, and what it saw.
#[derive(Clone)]
struct Ctx {
    base: String,
    token: String,
    approver: String,
    /// The table leases read, when PostgreSQL is up.
    lease_table: Option<String>,
    seen: Arc<Mutex<Seen>>,
    client: reqwest::Client,
}

impl Ctx {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap()
    }

    async fn invoke(&self, tool: &str, args: Value) -> Result<(u16, Value), reqwest::Error> {
        send(self.client.post(format!("{}/v1/invoke", self.base)).bearer_auth(&self.token).json(&json!({"tool": tool, "arguments": args}))).await
    }

    /// The INSERT of ledger row `n`, held for approval.
    async fn ledger_insert(&self, n: u64) -> Result<(u16, Value), reqwest::Error> {
        self.invoke("query_db", json!({"credential_handle": "LEDGER", "query": format!("INSERT INTO ledger (id, v) VALUES ({n}, 'approved')")})).await
    }

    async fn approve(&self, id: &str) -> Result<(u16, Value), reqwest::Error> {
        send(self.client.post(format!("{}/v1/approvals/{id}/approve", self.base)).bearer_auth(&self.approver)).await
    }

    async fn approval_status(&self, id: &str) -> String {
        let (s, v) = send(self.client.get(format!("{}/v1/approvals/{id}", self.base)).bearer_auth(&self.approver)).await.unwrap();
        assert_eq!(s, 200, "approval {id}: {v}");
        v["approval"]["status"].as_str().unwrap().to_owned()
    }

    async fn lease_list(&self) -> Vec<Value> {
        let (s, v) = send(self.client.get(format!("{}/v1/leases", self.base)).bearer_auth(&self.token)).await.unwrap();
        assert_eq!(s, 200, "{v}");
        v["leases"].as_array().unwrap().clone()
    }

    async fn revoke_lease(&self, id: &str) -> Result<(u16, Value), reqwest::Error> {
        send(self.client.delete(format!("{}/v1/leases/{id}", self.base)).bearer_auth(&self.token)).await
    }

    /// One query_db call on APP. False when the broker is gone.
    async fn query(&self) -> bool {
        let body = json!({"credential_handle": "APP", "query": "SELECT id, v FROM t ORDER BY id"});
        let Ok((_, v)) = self.invoke("query_db", body).await else { return false };
        assert!(v["ok"] == true, "a call failed while the broker was up: {v}");
        self.seen().ok_calls.push(v["request_id"].as_str().unwrap().to_owned());
        true
    }

    async fn create_link(&self) -> bool {
        let exp = chrono::Utc::now().timestamp() + 3600;
        let s = NewShare::create(b"crash-test one-time canary", None, exp, 1, 1 << 20).unwrap();
        let (ct, ph) = s.request_fields();
        let body = json!({"id": s.id, "ciphertext": ct, "proof_hash": ph, "expires_at": exp, "views": 1});
        let Ok(resp) = self.client.post(format!("{}/v1/shares", self.base)).json(&body).send().await else { return false };
        if resp.status() == 201 {
            self.seen().live.insert(s.id.clone(), (airlock_share::derive(&s.key, &s.id, None).proof().to_string(), ct));
        }
        true
    }

    async fn consume_link(&self, r: &mut impl Rng) -> bool {
        // Taken out under one lock: no two clients consume the same link.
        let pick = {
            let mut g = self.seen();
            let id = g.live.keys().next().cloned();
            id.and_then(|id| g.live.remove_entry(&id))
        };
        let Some((id, (proof, ct))) = pick else { return true };
        let attempt = airlock_share::encode_b64(&r.random::<[u8; 16]>());
        match consume(&self.client, &self.base, &id, &proof, &attempt).await {
            Ok((200, v)) => {
                assert_eq!(v["ciphertext"].as_str(), Some(ct.as_str()), "{id}: another ciphertext");
                self.seen().consumed.insert(id, proof);
                true
            }
            Ok((status, v)) => panic!("{id}: a live link's consume answered {status} {v}"),
            Err(_) => {
                self.seen().uncertain.insert(id, (proof, ct, attempt));
                false
            }
        }
    }

    async fn issue_lease(&self, table: &str, r: &mut impl Rng) -> bool {
        let body = json!({"credential_handle": "PGL", "scope": "read_only", "ttl_seconds": r.random_range(1..=3u64), "tables": [table]});
        let Ok((s, v)) = send(self.client.post(format!("{}/v1/leases", self.base)).bearer_auth(&self.token).json(&body)).await else {
            self.seen().issues_lost += 1;
            return false;
        };
        assert!(s == 200 && v["ok"] == true, "a lease issue failed while the broker was up: {s} {v}");
        let l = &v["result"];
        let id = l["lease_id"].as_str().unwrap().to_owned();
        let expires_at = DateTime::parse_from_rfc3339(l["expires_at"].as_str().unwrap()).unwrap().with_timezone(&Utc);
        let mut g = self.seen();
        g.ok_calls.push(v["request_id"].as_str().unwrap().to_owned());
        g.leases.insert(id.clone(), LeaseSeen { handle: l["lease_handle"].as_str().unwrap().to_owned(), expires_at, revoke: Revoke::Never });
        g.usable.push(id);
        true
    }

    /// A usable lease, taken out (no other client revokes it meanwhile).
    fn take_lease(&self, r: &mut impl Rng) -> Option<(String, LeaseSeen)> {
        let mut g = self.seen();
        if g.usable.is_empty() {
            return None;
        }
        let i = r.random_range(0..g.usable.len());
        let id = g.usable.swap_remove(i);
        let l = g.leases[&id].clone();
        Some((id, l))
    }

    async fn use_lease(&self, table: &str, r: &mut impl Rng) -> bool {
        let Some((id, l)) = self.take_lease(r) else { return true };
        let args = json!({"credential_handle": l.handle, "query": format!("SELECT id, v FROM {table} ORDER BY id")});
        let answer = self.invoke("query_db", args).await;
        let mut g = self.seen();
        match answer {
            Ok((_, v)) if v["ok"] == true => {
                assert_eq!(v["result"]["row_count"], 2, "lease {id}: {v}");
                g.ok_calls.push(v["request_id"].as_str().unwrap().to_owned());
                g.lease_uses_ok += 1;
                g.usable.push(id);
                true
            }
            Ok((s, v)) => {
                // Refused only once it has expired (the reaper may be dropping its role).
                let now = Utc::now();
                assert!(now >= l.expires_at, "lease {id} ({}) refused before its expiry {}: {s} {v}", l.handle, l.expires_at);
                g.lease_uses_expired += 1;
                true
            }
            Err(_) => {
                g.usable.push(id);
                false
            }
        }
    }

    async fn revoke_own_lease(&self, r: &mut impl Rng) -> bool {
        let Some((id, _)) = self.take_lease(r) else { return true };
        self.seen().leases.get_mut(&id).unwrap().revoke = Revoke::Sent;
        let Ok((s, v)) = self.revoke_lease(&id).await else { return false };
        let answer = match v["result"]["status"].as_str() {
            Some("revoked") if s == 200 => Revoke::Answered,
            Some("revoking") if s == 200 => Revoke::Claimed,
            _ => panic!("lease {id}: the revocation answered {s} {v}"),
        };
        let mut g = self.seen();
        g.leases.get_mut(&id).unwrap().revoke = answer;
        g.ok_calls.push(v["request_id"].as_str().unwrap().to_owned());
        true
    }

    /// A new call held for approval (a ledger row of its own).
    async fn hold(&self) -> bool {
        let n = {
            let mut g = self.seen();
            g.next_row += 1;
            g.next_row
        };
        let Ok((s, v)) = self.ledger_insert(n).await else {
            self.seen().held_unknown.push(n);
            return false;
        };
        assert!(s == 403 && v["error"]["code"] == "approval-required", "row {n}: a write on LEDGER was not held: {s} {v}");
        self.seen().held.insert(n, v["error"]["approval"]["id"].as_str().unwrap().to_owned());
        true
    }

    /// A held call repeated without an approval: held again, under the same approval.
    async fn repeat_held(&self) -> bool {
        let pick = {
            let mut g = self.seen();
            let n = g.held.keys().next().copied();
            n.and_then(|n| g.held.remove_entry(&n))
        };
        let Some((n, id)) = pick else { return true };
        let answer = self.ledger_insert(n).await;
        let mut g = self.seen();
        g.held.insert(n, id.clone());
        let Ok((s, v)) = answer else { return false };
        assert!(
            s == 403 && v["error"]["code"] == "approval-required" && v["error"]["approval"]["id"] == id.as_str(),
            "row {n}: a held call repeated was not held under its approval {id}: {s} {v}"
        );
        g.held_repeats += 1;
        true
    }

    /// Approves a held call as the approver, repeats it (it runs), and repeats it once more
    /// (held again under a new approval).
    async fn approve_and_run(&self) -> bool {
        let pick = {
            let mut g = self.seen();
            let n = g.held.keys().next().copied();
            let p = n.and_then(|n| g.held.remove_entry(&n));
            if let Some((n, id)) = &p {
                g.approving.insert(*n, id.clone());
            }
            p
        };
        let Some((n, id)) = pick else { return true };
        let Ok((s, v)) = self.approve(&id).await else { return false };
        assert!(s == 200 && v["approval"]["status"] == "approved", "approval {id}: {s} {v}");
        {
            let mut g = self.seen();
            g.approving.remove(&n);
            g.approved.insert(n, id.clone());
        }
        self.run_approved(n, &id).await
    }

    /// Repeats the approved call of row `n`: it runs; repeated again, it is held anew.
    async fn run_approved(&self, n: u64, id: &str) -> bool {
        let Ok((s, v)) = self.ledger_insert(n).await else { return false };
        assert!(s == 200 && v["ok"] == true, "row {n}: the call approved by {id} did not run: {s} {v}");
        {
            let mut g = self.seen();
            g.approved.remove(&n);
            g.executed.insert(n, id.to_owned());
            g.ok_calls.push(v["request_id"].as_str().unwrap().to_owned());
        }
        let Ok((s, v)) = self.ledger_insert(n).await else { return false };
        let again = v["error"]["approval"]["id"].as_str().unwrap_or_default().to_owned();
        assert!(
            s == 403 && v["error"]["code"] == "approval-required" && again != id && !again.is_empty(),
            "row {n}: a call that ran under {id} was not held again under a new approval: {s} {v}"
        );
        self.seen().reheld.insert(n, again);
        true
    }
}

/// One client: a random mix of all of the above, until `stop` or the broker is gone.
async fn client_loop(ctx: Ctx, stop: Arc<AtomicBool>, seed: u64) {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::Relaxed) {
        let table = ctx.lease_table.clone();
        let alive = match (r.random_range(0..14), table) {
            (0..=2, _) | (7..=9, None) => ctx.query().await,
            (3..=4, _) => ctx.create_link().await,
            (5..=6, _) => ctx.consume_link(&mut r).await,
            (7, Some(t)) => ctx.issue_lease(&t, &mut r).await,
            (8, Some(t)) => ctx.use_lease(&t, &mut r).await,
            // Most leases are left to expire: the reaper revokes them.
            (9, Some(_)) if r.random_bool(0.3) => ctx.revoke_own_lease(&mut r).await,
            (9, Some(t)) => ctx.use_lease(&t, &mut r).await,
            (10..=11, _) => ctx.hold().await,
            (12, _) => ctx.approve_and_run().await,
            _ => ctx.repeat_held().await,
        };
        if !alive {
            break;
        }
    }
}

async fn sqlite_ro(path: &Path) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", path.display())).await.unwrap()
}

/// The audit records' bodies, parsed.
async fn audit_bodies(dir: &Path) -> Vec<Value> {
    let mut c = sqlite_ro(&dir.join("airlock-data/store.db")).await;
    let bodies: Vec<(String,)> = sqlx::query_as("SELECT body FROM audit").fetch_all(&mut c).await.unwrap();
    bodies.into_iter().filter_map(|(b,)| serde_json::from_str(&b).ok()).collect()
}

/// A lease as the store holds it.
struct StoredLease {
    id: String,
    status: String,
    role: Option<String>,
}

async fn stored_leases(dir: &Path) -> Vec<StoredLease> {
    let mut c = sqlite_ro(&dir.join("airlock-data/store.db")).await;
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as("SELECT id, status, role_name FROM leases").fetch_all(&mut c).await.unwrap();
    rows.into_iter().map(|(id, status, role)| StoredLease { id, status, role }).collect()
}

/// Approvals as the store holds them: id → (status, expires_at ms).
async fn stored_approvals(dir: &Path) -> HashMap<String, (String, i64)> {
    let mut c = sqlite_ro(&dir.join("airlock-data/store.db")).await;
    let rows: Vec<(String, String, i64)> = sqlx::query_as("SELECT id, status, expires_at FROM approvals").fetch_all(&mut c).await.unwrap();
    rows.into_iter().map(|(id, s, e)| (id, (s, e))).collect()
}

/// Ledger rows: row id → how many times it is there.
async fn ledger_rows(dir: &Path) -> HashMap<u64, i64> {
    // Read-write: an INSERT cut by the kill leaves a hot journal, which the next opener rolls back.
    use sqlx::Connection;
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rw", dir.join("ledger.db").display())).await.unwrap();
    let rows: Vec<(i64, i64)> = sqlx::query_as("SELECT id, count(*) FROM ledger GROUP BY id").fetch_all(&mut c).await.unwrap();
    rows.into_iter().map(|(n, k)| (n as u64, k)).collect()
}

/// Checks made with the broker dead (nothing moves): the audit, the leases against the roles,
/// the approvals against the ledger. Settles what the lost answers left.
async fn check_after_kill(dir: &Path, seen: &Mutex<Seen>, pg: Option<&PgSide>, round: &str) {
    let o = common::airlock_in(dir, &["audit", "verify"], None, &[]);
    assert!(o.status.success(), "{round}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    // Everything read first (the broker is dead: nothing moves), then judged. The store before
    // the roles: a statement the dead broker sent may still land (a role created for a pending
    // lease, dropped for one being revoked); both are allowed below.
    let audit = audit_bodies(dir).await;
    let leases = stored_leases(dir).await;
    let roles = match pg {
        Some(pg) => pg.roles().await,
        None => HashSet::new(),
    };
    let approvals = stored_approvals(dir).await;
    let rows = ledger_rows(dir).await;
    let ids: HashSet<&str> = audit.iter().filter_map(|b| b["request_id"].as_str()).collect();
    let mut g = seen.lock().unwrap();
    let missing: Vec<_> = g.ok_calls.iter().filter(|id| !ids.contains(id.as_str())).collect();
    assert!(missing.is_empty(), "{round}: calls answered ok without an audit record: {missing:?}");

    if let Some(pg) = pg {
        g.role_checks += 1;
        g.roles_checked += roles.len();
        let may_have_role: HashSet<&str> = leases
            .iter()
            .filter(|l| ["pending", "active", "revoking", "revoke-pending"].contains(&l.status.as_str()))
            .filter_map(|l| l.role.as_deref())
            .collect();
        let orphans: Vec<&String> = roles.iter().filter(|r| !may_have_role.contains(r.as_str())).collect();
        assert!(orphans.is_empty(), "{round}: {} orphan roles (no pending, active or revoking lease): {orphans:?}", orphans.len());
        let lost: Vec<&str> =
            leases.iter().filter(|l| l.status == "active" && !l.role.as_ref().is_some_and(|r| roles.contains(r))).map(|l| l.id.as_str()).collect();
        assert!(lost.is_empty(), "{round}: {} active leases lost their role: {lost:?}", lost.len());
        let by_id: HashMap<&str, &StoredLease> = leases.iter().map(|l| (l.id.as_str(), l)).collect();
        for (id, l) in &g.leases {
            let stored = by_id.get(id.as_str()).unwrap_or_else(|| panic!("{round}: lease {id} ({}) answered as issued is not in the store", l.handle));
            assert!(
                ["active", "revoking", "revoke-pending", "revoked"].contains(&stored.status.as_str()),
                "{round}: lease {id} answered as issued is {}",
                stored.status
            );
            assert_eq!(stored.role.as_deref(), Some(pg.role_of(&l.handle).as_str()), "{round}: lease {id}'s role");
            if l.revoke == Revoke::Answered {
                assert_eq!(stored.status, "revoked", "{round}: lease {id} answered as revoked is {}", stored.status);
            }
            if l.revoke == Revoke::Claimed {
                assert!(stored.status != "active", "{round}: lease {id} answered as being revoked is active again");
            }
        }
    }

    // Approvals: what the lost answers left, then the invariants.
    let status = |id: &str| approvals.get(id).map(|(s, _)| s.clone()).unwrap_or_else(|| panic!("{round}: approval {id} is not in the store"));
    for (n, id) in std::mem::take(&mut g.approving) {
        match status(&id).as_str() {
            // The decision did not land: still the test's to make.
            "pending" => {
                g.approvals_lost_not_landed += 1;
                g.held.insert(n, id)
            }
            "approved" => {
                g.approvals_lost_landed += 1;
                g.approved.insert(n, id)
            }
            s => panic!("{round}: approval {id} sent by the test, answer lost, is {s}"),
        };
    }
    for (n, id) in std::mem::take(&mut g.approved) {
        match (status(&id).as_str(), rows.get(&n)) {
            ("approved", None) => {
                g.approved.insert(n, id);
            }
            // Ran before the kill; its answer was lost.
            ("used", Some(1)) => {
                g.runs_lost_ran += 1;
                g.executed.insert(n, id);
            }
            // Used by a call the kill cut before the INSERT: at most once, never again.
            ("used", None) => {
                let intent = audit.iter().any(|b| b["approval"] == id.as_str() && b["tool"] == "query_db" && b["outcome"] == "started");
                g.cut_after_intent += usize::from(intent);
                g.cut.insert(n, id);
            }
            (s, k) => panic!("{round}: approval {id} of row {n} is {s} with the row there {k:?} times"),
        }
    }
    let decided: HashSet<&str> =
        audit.iter().filter(|b| b["tool"] == "approve_call").filter_map(|b| b["approval"].as_str()).collect();
    let approved_ids = g.approved_ids();
    let now_ms = Utc::now().timestamp_millis();
    for (id, (s, _)) in &approvals {
        if s == "approved" || s == "used" {
            assert!(approved_ids.contains(id), "{round}: approval {id} is {s} but the test never approved it");
            assert!(decided.contains(id.as_str()), "{round}: approval {id} is {s} without its decision in the audit");
        }
    }
    for (n, id) in g.held.iter().chain(g.reheld.iter()) {
        let (s, exp) = approvals.get(id).unwrap_or_else(|| panic!("{round}: approval {id} of row {n} is not in the store"));
        assert!(s == "pending" && *exp > now_ms, "{round}: approval {id} of row {n}, never approved, is {s}");
    }
    let allowed = g.approved_rows();
    for (n, k) in &rows {
        assert!(allowed.contains(n), "{round}: row {n} is in the ledger but its call was never approved");
        assert_eq!(*k, 1, "{round}: the approved call of row {n} ran {k} times");
    }
    for (n, id) in &g.executed {
        assert_eq!(rows.get(n), Some(&1), "{round}: row {n}: the call run under {id} is not in the ledger");
    }
}

/// Checks made once the broker is back: reconciliation dropped the planted role, the reaper
/// caught up and left no orphan, held calls are still held, approved ones run once.
async fn check_after_restart(ctx: &Ctx, pg: Option<&PgSide>, planted: Option<&str>, round: &str) {
    if let (Some(pg), Some(planted)) = (pg, planted) {
        let t = Instant::now();
        while pg.roles().await.contains(planted) {
            assert!(t.elapsed() < Duration::from_secs(60), "{round}: start-up reconciliation did not drop {planted}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    if let Some(pg) = pg {
        // Roles before the list (an active lease in the list was active then: it has its role);
        // the list before roles again (a role then must belong to a lease pending or active in
        // the list). Nothing issues leases meanwhile.
        let t = Instant::now();
        let (before, list) = loop {
            let before = pg.roles().await;
            let asked = Utc::now();
            let list = ctx.lease_list().await;
            let overdue = |l: &&Value| {
                l["status"] == "revoking"
                    || l["status"] == "revoke-pending"
                    || (l["status"] == "active" && DateTime::parse_from_rfc3339(l["expires_at"].as_str().unwrap()).unwrap() <= asked)
            };
            let behind: Vec<&Value> = list.iter().filter(overdue).collect();
            if behind.is_empty() {
                break (before, list);
            }
            assert!(t.elapsed() < Duration::from_secs(60), "{round}: the reaper did not catch up: {behind:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let after = pg.roles().await;
        let status: HashMap<&str, &str> = list.iter().map(|l| (l["lease_id"].as_str().unwrap(), l["status"].as_str().unwrap())).collect();
        let live_roles: HashSet<String> = list
            .iter()
            .filter(|l| l["status"] == "pending" || l["status"] == "active")
            .map(|l| pg.role_of(l["lease_handle"].as_str().unwrap()))
            .collect();
        let orphans: Vec<&String> = after.iter().filter(|r| !live_roles.contains(*r)).collect();
        assert!(orphans.is_empty(), "{round}: {} orphan roles after the reaper ran: {orphans:?}", orphans.len());
        let lost: Vec<&Value> =
            list.iter().filter(|l| l["status"] == "active" && !before.contains(&pg.role_of(l["lease_handle"].as_str().unwrap()))).collect();
        assert!(lost.is_empty(), "{round}: active leases without their role: {lost:?}");
        let mut g = ctx.seen();
        g.role_checks += 1;
        g.roles_checked += after.len();
        let mut usable = Vec::new();
        for (id, l) in &g.leases {
            let s = status.get(id.as_str()).copied().unwrap_or("missing");
            assert!(s == "active" || s == "revoked", "{round}: lease {id} answered as issued is {s} once the reaper caught up");
            if matches!(l.revoke, Revoke::Answered | Revoke::Claimed) {
                assert_eq!(s, "revoked", "{round}: lease {id} answered as revoked or being revoked");
            }
            if s == "active" && l.revoke == Revoke::Never {
                usable.push(id.clone());
            }
        }
        g.usable = usable;
    }

    // Held calls are still held, under the same approval, and never ran.
    let (held, approved) = {
        let g = ctx.seen();
        (g.held.clone(), g.approved.clone())
    };
    for (n, id) in &held {
        let s = ctx.approval_status(id).await;
        assert!(s == "pending", "{round}: approval {id} of row {n}, never approved, is {s} after the restart");
    }
    for (n, id) in held.iter().take(5) {
        let (s, v) = ctx.ledger_insert(*n).await.unwrap();
        assert!(
            s == 403 && v["error"]["code"] == "approval-required" && v["error"]["approval"]["id"] == id.as_str(),
            "{round}: row {n}: a held call repeated after the restart was not held under {id}: {s} {v}"
        );
        ctx.seen().held_repeats += 1;
    }
    // Approved before the kill and not run yet: runs now, once.
    for (n, id) in &approved {
        assert_eq!(ctx.approval_status(id).await, "approved", "{round}: approval {id}");
        assert!(ctx.run_approved(*n, id).await, "{round}: the broker died");
        ctx.seen().runs_after_restart += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_killed_under_load_loses_no_audit_record_link_lease_or_approval() {
    let rounds: usize = std::env::var("AIRLOCK_CRASH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let seed: u64 = std::env::var("AIRLOCK_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("seed {seed}, {rounds} rounds");
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let port = free_port();
    // This run's installation id (random even when the seed is replayed), so its lease roles
    // (`airlock_l_<id>_...`) are its own: other tests' and other runs' are never looked at.
    let installation: String = (0..4).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    let pg = postgres_up().then(|| PgSide { table: format!("crash_lease_{}", std::process::id()), prefix: format!("airlock_l_{installation}_") });
    let (token, approver) = setup(dir, port, pg.as_ref());
    std::fs::write(dir.join("airlock-data/installation.id"), &installation).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let ctx = Ctx {
        base: base.clone(),
        token,
        approver,
        lease_table: pg.as_ref().map(|p| p.table.clone()),
        seen: Arc::clone(&seen),
        client: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap(),
    };
    let (mut reopened, mut redelivered, mut uncertain_total, mut planted_dropped) = (0, 0, 0, 0);
    let mut planted: Option<String> = None;
    for round in 0..=rounds {
        let name = format!("round {round}");
        let child = start(dir, &base, &client).await;
        check_after_restart(&ctx, pg.as_ref(), planted.as_deref(), &name).await;
        planted_dropped += usize::from(planted.take().is_some());
        // What the previous rounds left: live links open once, consumed ones are gone, and a
        // consume whose answer was lost left its link either whole or gone.
        let (live, consumed, uncertain) = {
            let mut g = seen.lock().unwrap();
            (std::mem::take(&mut g.live), g.consumed.clone(), std::mem::take(&mut g.uncertain))
        };
        for (id, (proof, ct)) in &live {
            let (status, v) = consume(&client, &base, id, proof, "fresh-attempt-after-restart").await.unwrap();
            assert_eq!(status, 200, "{id}: a created link did not survive the crash: {v}");
            assert_eq!(v["ciphertext"].as_str(), Some(ct.as_str()));
            seen.lock().unwrap().consumed.insert(id.clone(), proof.clone());
            reopened += 1;
        }
        // With their right proofs (a wrong one is refused anyway).
        for (id, proof) in consumed.iter().take(100) {
            let (status, v) = consume(&client, &base, id, proof, "another-attempt-entirely").await.unwrap();
            assert_eq!(status, 404, "{id}: a consumed link opened again: {v}");
        }
        for (id, (proof, ct, attempt)) in &uncertain {
            uncertain_total += 1;
            let (status, v) = consume(&client, &base, id, proof, attempt).await.unwrap();
            assert_eq!(status, 200, "{id}: a consume whose answer was lost, asked again with its attempt: {v}");
            assert_eq!(v["ciphertext"].as_str(), Some(ct.as_str()));
            redelivered += usize::from(v["redelivered"] == true);
            seen.lock().unwrap().consumed.insert(id.clone(), proof.clone());
        }
        if round == rounds {
            finish(&ctx, child, pg.as_ref(), dir).await;
            break;
        }
        // Load, then a kill at a random moment.
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> =
            (0..6).map(|i| tokio::spawn(client_loop(ctx.clone(), Arc::clone(&stop), seed ^ (round * 16 + i) as u64))).collect();
        tokio::time::sleep(Duration::from_millis(r.random_range(150..1200))).await;
        let mut child = child;
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.await.unwrap();
        }
        check_after_kill(dir, &seen, pg.as_ref(), &name).await;
        // A role of this installation's naming that no lease accounts for, as a crash between a
        // role's creation and its record would leave if records were not written first:
        // reconciliation at the next start drops it.
        if let Some(pg) = &pg {
            let role = format!("{}orphan{round}", pg.prefix);
            let mut c = PgSide::connect().await;
            sqlx::raw_sql(&format!("CREATE ROLE \"{role}\" NOLOGIN; GRANT SELECT ON {} TO \"{role}\"", pg.table)).execute(&mut c).await.unwrap();
            planted = Some(role);
        }
        let g = seen.lock().unwrap();
        println!(
            "{name}: {} calls ok so far, {} links consumed, {} live, {} leases issued, {} usable, {} approvals pending, {} calls approved and run",
            g.ok_calls.len(),
            g.consumed.len(),
            g.live.len(),
            g.leases.len(),
            g.usable.len(),
            g.held.len(),
            g.executed.len()
        );
    }
    let g = seen.lock().unwrap();
    println!(
        "{rounds} kills: {} calls answered ok, all audited; {} links consumed once; {reopened} reopened after a crash; \
         {uncertain_total} consumes lost their answer and were asked again: {redelivered} answered again (burned before the kill), the rest opened",
        g.ok_calls.len(),
        g.consumed.len()
    );
    if pg.is_some() {
        let by_test = g.leases.values().filter(|l| l.revoke != Revoke::Never).count();
        let answered = g.leases.values().filter(|l| matches!(l.revoke, Revoke::Answered | Revoke::Claimed)).count();
        let claimed = g.leases.values().filter(|l| l.revoke == Revoke::Claimed).count();
        println!(
            "leases: {} issued (answered), {} issues lost their answer; {by_test} revoked by the test ({answered} answered, {claimed} of them `revoking`: the reaper had claimed them); \
             {} uses ok, {} refused after expiry; {} roles seen in {} checks after kills and restarts, \
             0 orphans; {planted_dropped} planted orphan roles dropped by reconciliation; no role left at the end",
            g.leases.len(),
            g.issues_lost,
            g.lease_uses_ok,
            g.lease_uses_expired,
            g.roles_checked,
            g.role_checks,
        );
    }
    println!(
        "approvals: {} calls held and never approved, all still pending and not run ({} held calls whose answer was lost, none run); \
         {} held calls repeated and held again under the same approval; {} approved and run exactly once \
         ({} run after a restart, {} whose answer was lost had run); {} approvals lost their answer ({} had landed, \
         all audited; {} had not, still pending); {} approvals used by a call the kill cut before it ran (not run, never again; \
         {} of them after the call's intent record); \
         {} ran calls held again under a new approval",
        g.held.len(),
        g.held_unknown.len(),
        g.held_repeats,
        g.executed.len(),
        g.runs_after_restart,
        g.runs_lost_ran,
        g.approvals_lost_landed + g.approvals_lost_not_landed,
        g.approvals_lost_landed,
        g.approvals_lost_not_landed,
        g.cut.len(),
        g.cut_after_intent,
        g.reheld.len()
    );
    assert!(g.ok_calls.len() > rounds && reopened > 0, "the load did not run");
    assert!(g.held.len() + g.reheld.len() > 0 && !g.executed.is_empty(), "no approval was held or approved");
    if pg.is_some() {
        assert!(g.leases.len() > rounds && g.lease_uses_ok > 0, "the lease load did not run");
    }
}

/// The last start: every lease still pending or active is revoked by its owner, after which no
/// role of this installation is left; then the broker stops and the approvals are checked once
/// more.
async fn finish(ctx: &Ctx, child: Server, pg: Option<&PgSide>, dir: &Path) {
    if let Some(pg) = pg {
        let list = ctx.lease_list().await;
        let reaped = {
            let g = ctx.seen();
            let by_test: HashSet<&str> = g.leases.iter().filter(|(_, l)| l.revoke != Revoke::Never).map(|(id, _)| id.as_str()).collect();
            list.iter().filter(|l| l["status"] == "revoked" && !by_test.contains(l["lease_id"].as_str().unwrap())).count()
        };
        println!("leases: {} in the store, {reaped} revoked by the reaper (expired, or left pending by a kill)", list.len());
        for l in list.iter().filter(|l| l["status"] == "pending" || l["status"] == "active") {
            let id = l["lease_id"].as_str().unwrap();
            let (s, v) = ctx.revoke_lease(id).await.unwrap();
            // `revoking`: the reaper claimed it first (it expired meanwhile).
            assert!(s == 200 && (v["result"]["status"] == "revoked" || v["result"]["status"] == "revoking"), "lease {id}: {s} {v}");
        }
        let t = Instant::now();
        loop {
            let left: Vec<Value> = ctx.lease_list().await.into_iter().filter(|l| l["status"] != "revoked" && l["status"] != "failed").collect();
            if left.is_empty() {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(60), "leases not revoked at the end: {left:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let roles = pg.roles().await;
        assert!(roles.is_empty(), "{} roles left once every lease was revoked: {roles:?}", roles.len());
    }
    drop(child);
    check_after_kill(dir, &ctx.seen, pg, "the end").await;
}
