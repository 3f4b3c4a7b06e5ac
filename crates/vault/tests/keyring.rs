//! Rotation of the local vault's key (`airlock_vault::keyring`) on SQLite and on PostgreSQL
//! (a database of its own per test on the machine's server): every sealed value (secrets,
//! retired values, connected accounts, connect verifiers) re-wrapped under the new version and
//! still opening to the same bytes; the old version deleted; the store refusing a value sealed
//! under a deleted version; a process that has not read the new version yet going on without a
//! failed call while the rotation runs; a value that opens under no version stopping the
//! rotation with nothing lost; another master key unable to read the versions.

use airlock_core::config::SecretRef;
use airlock_core::Secret;
use airlock_store::keyring::{account_seal_name, connect_seal_name};
use airlock_store::oauth::NewConnect;
use airlock_store::requests::{intake_seal_name, CreateOutcome, NewRequest};
use airlock_store::Store;
use airlock_vault::keyring::{tag, version_of};
use airlock_vault::{MasterKey, Vault, VaultError};
use rand::{Rng, SeedableRng};
use sqlx::Connection;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A store on one engine, and what to drop after.
struct Engine {
    name: &'static str,
    store: Store,
    _dir: tempfile::TempDir,
    db: Option<String>,
}

impl Engine {
    async fn finish(self) {
        self.store.close().await;
        if let Some(db) = self.db {
            let mut c = sqlx::PgConnection::connect(ADMIN).await.unwrap();
            sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).execute(&mut c).await.unwrap();
        }
    }
}

/// A fresh SQLite store, and a fresh PostgreSQL one when the server is up (required under
/// AIRLOCK_REQUIRE_SERVICES=1).
async fn engines() -> Vec<Engine> {
    let dir = tempfile::tempdir().unwrap();
    let mut out = vec![Engine { name: "sqlite", store: Store::open(dir.path()).await.unwrap(), _dir: dir, db: None }];
    let up = tokio::time::timeout(std::time::Duration::from_secs(2), tokio::net::TcpStream::connect("127.0.0.1:5432"))
        .await
        .is_ok_and(|r| r.is_ok());
    if !up {
        assert!(
            std::env::var("AIRLOCK_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "PostgreSQL at 127.0.0.1:5432 is required (AIRLOCK_REQUIRE_SERVICES=1) but unreachable"
        );
        println!("PostgreSQL at 127.0.0.1:5432 is unreachable: SQLite only");
        return out;
    }
    let name = format!("airlock_t_{:016x}", rand::random::<u64>());
    let mut c = sqlx::PgConnection::connect(ADMIN).await.unwrap();
    sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&mut c).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_postgres(&format!("postgres://postgres@127.0.0.1:5432/{name}"), dir.path()).await.unwrap();
    out.push(Engine { name: "postgres", store, _dir: dir, db: Some(name) });
    out
}

fn root() -> MasterKey {
    MasterKey::from_bytes([42u8; 32])
}

/// A random value: printable or binary, 1 to 600 bytes.
fn random_value(r: &mut impl Rng) -> Vec<u8> {
    let n = r.random_range(1..600);
    if r.random_bool(0.5) {
        (0..n).map(|_| r.random_range(b'!'..=b'~')).collect()
    } else {
        (0..n).map(|_| r.random()).collect()
    }
}

#[allow(clippy::disallowed_methods)] // the test compares values
fn bytes(s: &Secret) -> Vec<u8> {
    s.expose_secret().to_vec()
}

async fn vault(store: &Store, key: MasterKey) -> Vault {
    let v = Vault::new(key, store.clone());
    v.reload_keyring().await.unwrap();
    v
}

async fn resolve(v: &Vault, name: &str) -> Result<Vec<u8>, VaultError> {
    v.resolve(&SecretRef::Local(name.to_owned())).await.map(|s| bytes(&s))
}

/// The key version of every sealed value of the store.
async fn versions(store: &Store) -> Vec<u32> {
    let mut out = Vec::new();
    for col in airlock_store::keyring::SEALED_COLUMNS {
        for r in store.sealed_page(*col, "", i64::MAX).await.unwrap() {
            out.push(version_of(&r.sealed).expect("a known format").0);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_rewraps_every_sealed_value_and_deletes_the_old_version() {
    for e in engines().await {
        let s = &e.store;
        let v = vault(s, root()).await;
        let mut r = rand::rng();
        let mut want: HashMap<String, Vec<u8>> = HashMap::new();
        for i in 0..300 {
            let (name, value) = (format!("S{i:04}"), random_value(&mut r));
            v.put(&name, &Secret::new(value.clone())).await.unwrap();
            want.insert(name, value);
        }
        // A rotated secret (its old value retired, still known to the scrubber), a connected
        // account and a connect flow's verifier: every kind of sealed value.
        let old = want["S0001"].clone();
        let new = random_value(&mut r);
        v.rotate("S0001", &Secret::new(new.clone()), std::time::Duration::from_secs(3600)).await.unwrap();
        want.insert("S0001".into(), new);
        let account = random_value(&mut r);
        v.seal_into(&account_seal_name("ACCT", "alice"), &Secret::new(account.clone()), |sealed| async move {
            s.put_account("ACCT", "alice", &sealed, None).await
        })
        .await
        .unwrap();
        let c = NewConnect { id: "c1", handle: "ACCT", agent_id: "a", agent_name: "a", owner: "alice", code_hash: b"h", expires_at: i64::MAX / 2 };
        s.insert_connect(&c).await.unwrap();
        let verifier = random_value(&mut r);
        assert!(v
            .seal_into(&connect_seal_name("c1"), &Secret::new(verifier.clone()), |sealed| async move {
                s.connect_authorize("c1", b"state", b"browser", &sealed).await
            })
            .await
            .unwrap());
        // A request for a secret keeps its own private key sealed.
        let intake = random_value(&mut r);
        let req = |id: &'static str, key: Vec<u8>| async move {
            let n = NewRequest {
                id,
                agent_id: "a",
                agent_name: "a",
                handle: id,
                kind: "generic",
                context: "{}",
                definition: "",
                tools: "share_secret",
                recipient: "alice",
                proof_hash: b"p",
                intake_key: &key,
                expires_at: i64::MAX / 2,
            };
            s.create_request(&n, 100).await
        };
        let created = v.seal_into(&intake_seal_name("R1"), &Secret::new(intake.clone()), |sealed| req("R1", sealed)).await.unwrap();
        assert_eq!(created, CreateOutcome::Created);
        let st = v.rotation_status().await.unwrap();
        assert_eq!((st.versions.clone(), st.active, st.in_progress()), (vec![], 0, false), "{}", e.name);
        assert!(versions(s).await.iter().all(|x| *x == 0));

        // Another process that read the keyring before the rotation.
        let before = vault(s, root()).await;
        assert_eq!(v.begin_rotation().await.unwrap(), 1);
        let st = v.rotation_status().await.unwrap();
        assert_eq!((st.versions.clone(), st.active, st.remaining), (vec![0, 1], 1, 304), "{}", e.name);
        // Mid-rotation: the old values open, a new one goes under the new version.
        assert_eq!(resolve(&v, "S0007").await.unwrap(), want["S0007"]);
        let value = random_value(&mut r);
        v.put("NEW", &Secret::new(value.clone())).await.unwrap();
        want.insert("NEW".into(), value);
        assert_eq!(version_of(&s.get_sealed("NEW").await.unwrap().unwrap().0), Some((1, 5)));
        assert!(matches!(v.begin_rotation().await, Err(VaultError::Keyring(_))), "a second rotation waits for the first");

        let mut seen = Vec::new();
        let report = v.finish_rotation(&mut |done, total| seen.push((done, total))).await.unwrap();
        assert_eq!((report.version, report.rewrapped, report.retired), (1, 304, 1), "{}", e.name);
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0) && seen.last() == Some(&(304, 304)), "{seen:?}");
        let st = v.rotation_status().await.unwrap();
        assert_eq!((st.versions, st.active, st.remaining), (vec![1], 1, 0));
        assert!(versions(s).await.iter().all(|x| *x == 1), "{}", e.name);

        // Every value opens to the same bytes, in a process that reads the keyring afresh.
        let fresh = vault(s, root()).await;
        for (name, value) in &want {
            assert_eq!(&resolve(&fresh, name).await.unwrap(), value, "{name}");
        }
        let retired = fresh.retired().await.unwrap();
        assert_eq!(retired.iter().map(|(n, s)| (n.as_str(), bytes(s))).collect::<Vec<_>>(), vec![("S0001", old.clone())]);
        let a = s.account("ACCT").await.unwrap().unwrap();
        assert_eq!(bytes(&fresh.open_value(&account_seal_name("ACCT", "alice"), &a.sealed).await.unwrap()), account);
        let link = s.connect_link("c1").await.unwrap().unwrap();
        assert_eq!(bytes(&fresh.open_value(&connect_seal_name("c1"), &link.verifier.unwrap()).await.unwrap()), verifier);
        let request = s.request("R1").await.unwrap().unwrap();
        assert_eq!(bytes(&fresh.open_value(&intake_seal_name("R1"), &request.intake_key.unwrap()).await.unwrap()), intake);

        // The store refuses a value sealed under the deleted version, whoever writes it.
        let stale = airlock_vault::seal(&root(), "X", &Secret::from_str_value("x"));
        assert!(s.put_sealed("X", &stale).await.unwrap_err().is_key_retired(), "{}", e.name);
        assert!(s.put_account("ACCT", "alice", &stale, None).await.unwrap_err().is_key_retired());
        assert!(s.connect_authorize("c1", b"s", b"b", &stale).await.unwrap_err().is_key_retired());
        assert!(req("R2", stale.clone()).await.unwrap_err().is_key_retired());
        assert!(s.get_sealed("X").await.unwrap().is_none());
        // Through the vault, the refusal makes it read the keyring and seal under version 1.
        let value = random_value(&mut r);
        before.put("LATE", &Secret::new(value.clone())).await.unwrap();
        assert_eq!(version_of(&s.get_sealed("LATE").await.unwrap().unwrap().0), Some((1, 5)));
        want.insert("LATE".into(), value);

        // A second rotation: version 2, and version 1 goes.
        assert_eq!(v.begin_rotation().await.unwrap(), 2);
        let report = v.finish_rotation(&mut |_, _| {}).await.unwrap();
        assert_eq!((report.version, report.rewrapped, report.retired), (2, 306, 1));
        assert!(versions(s).await.iter().all(|x| *x == 2));
        assert_eq!(s.master_keys().await.unwrap().iter().map(|k| (k.version, k.tag.clone())).collect::<Vec<_>>(), vec![(2, tag(2))]);
        let fresh = vault(s, root()).await;
        for (name, value) in &want {
            assert_eq!(&resolve(&fresh, name).await.unwrap(), value, "{name}");
        }
        // Finishing a finished rotation does nothing.
        let report = v.finish_rotation(&mut |_, _| {}).await.unwrap();
        assert_eq!((report.rewrapped, report.retired), (0, 0));
        e.finish().await;
    }
}

/// Another process (a broker) read the keyring before the rotation began: it keeps resolving
/// and putting values while a rotation runs, two in a row, without one failed call; what it
/// wrote under a version being retired is caught by another pass, or refused by the store and
/// sealed again under the current version. Afterwards every value is the last one put.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_that_has_not_read_the_new_version_keeps_working_during_rotations() {
    for e in engines().await {
        let stale = Arc::new(vault(&e.store, root()).await);
        let want: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let mut r = rand::rng();
        for i in 0..200 {
            let (name, value) = (format!("K{i:03}"), random_value(&mut r));
            stale.put(&name, &Secret::new(value.clone())).await.unwrap();
            want.lock().unwrap().insert(name, value);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicU64::new(0));
        let mut workers = Vec::new();
        for w in 0..3 {
            let (stale, want, stop, calls) = (Arc::clone(&stale), Arc::clone(&want), Arc::clone(&stop), Arc::clone(&calls));
            workers.push(tokio::spawn(async move {
                let mut r = rand::rngs::StdRng::from_os_rng();
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("K{:03}", r.random_range(0..200));
                    if w == 0 {
                        // One writer: `want` holds the last value put under each name.
                        let value = random_value(&mut r);
                        stale.put(&name, &Secret::new(value.clone())).await.unwrap_or_else(|err| panic!("put {name} failed during the rotation: {err}"));
                        want.lock().unwrap().insert(name, value);
                    } else {
                        stale.resolve(&SecretRef::Local(name.clone())).await.unwrap_or_else(|err| panic!("resolve {name}: {err}"));
                    }
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        let rotator = vault(&e.store, root()).await;
        for round in 1..=2u32 {
            assert_eq!(rotator.begin_rotation().await.unwrap(), round);
            let report = rotator.finish_rotation(&mut |_, _| {}).await.unwrap();
            assert_eq!((report.version, report.retired), (round, 1), "{}", e.name);
        }
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.await.unwrap();
        }
        assert!(calls.load(Ordering::Relaxed) > 0);
        println!("{}: {} calls during two rotations, none failed", e.name, calls.load(Ordering::Relaxed));
        assert!(versions(&e.store).await.iter().all(|x| *x == 2), "{}", e.name);
        let fresh = vault(&e.store, root()).await;
        let want = want.lock().unwrap().clone();
        for (name, value) in want {
            assert_eq!(resolve(&fresh, &name).await.unwrap(), value, "{name}");
        }
        e.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_opens_under_no_version_stops_the_rotation_with_nothing_lost() {
    for e in engines().await {
        let v = vault(&e.store, root()).await;
        for i in 0..50 {
            v.put(&format!("V{i:02}"), &Secret::new(vec![b'a' + (i % 26) as u8; 20])).await.unwrap();
        }
        // Sealed for another name (moved by hand): it opens under no key for its own name.
        let moved = e.store.get_sealed("V03").await.unwrap().unwrap().0;
        e.store.put_sealed("MOVED", &moved).await.unwrap();
        v.begin_rotation().await.unwrap();
        let err = v.finish_rotation(&mut |_, _| {}).await.unwrap_err();
        assert!(matches!(&err, VaultError::Keyring(m) if m.contains("secrets") && m.contains("MOVED")), "{err}");
        // Both versions are kept; every sound value opens.
        assert_eq!(v.rotation_status().await.unwrap().versions, vec![0, 1]);
        for i in 0..50 {
            assert_eq!(resolve(&v, &format!("V{i:02}")).await.unwrap(), vec![b'a' + (i % 26) as u8; 20]);
        }
        // Removed, the rotation finishes.
        e.store.remove_secret("MOVED").await.unwrap();
        let report = v.finish_rotation(&mut |_, _| {}).await.unwrap();
        assert_eq!((report.version, report.retired), (1, 1));
        e.finish().await;
    }
}

#[tokio::test]
async fn another_master_key_cannot_read_the_key_versions() {
    for e in engines().await {
        let v = vault(&e.store, root()).await;
        v.put("A", &Secret::from_str_value("value-a")).await.unwrap();
        v.begin_rotation().await.unwrap();
        v.finish_rotation(&mut |_, _| {}).await.unwrap();
        let other = Vault::new(MasterKey::from_bytes([7u8; 32]), e.store.clone());
        let err = other.reload_keyring().await.unwrap_err();
        assert!(matches!(&err, VaultError::Keyring(m) if m.contains("does not open with this master key")), "{err}");
        assert!(matches!(other.resolve(&SecretRef::Local("A".into())).await, Err(VaultError::Keyring(_) | VaultError::Decrypt(_))));
        e.finish().await;
    }
}
