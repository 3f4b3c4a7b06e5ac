//! A bounded cache of checked statements, so that an agent repeating a statement (the common
//! case: the same parameterised query with new `params`) does not pay for parsing it twice again.
//!
//! What is cached is [`check_statement`]'s result, a pure function of the handle's kind, its
//! database constraints and the statement text. An entry is used only when all three are equal
//! to what it was checked under: the key is the handle's name and the exact text, and the entry
//! keeps a copy of the kind and constraints it was checked with and is ignored (and replaced)
//! when the handle now says otherwise. Only statements that passed are kept; a refusal is checked
//! again every time. Parameters are never cached: they are converted and counted per call.
//!
//! Bounded twice: at most [`MAX_ENTRIES`] statements and [`MAX_BYTES`] of statement text; the
//! least recently used go first. Keys are hashed with SipHash under a per-process random key, as
//! the text is the agent's.

use crate::validate::{check_statement, CheckedStatement};
use airlock_core::config::{DatabaseConstraints, Handle, HandleKind};
use airlock_core::{CallError, HandleName};
use hashlink::LruCache;
use std::collections::hash_map::RandomState;
use std::sync::{Arc, Mutex};

/// Most statements kept.
pub const MAX_ENTRIES: usize = 1024;
/// Most bytes of statement text (as sent plus as printed) kept.
pub const MAX_BYTES: usize = 16 * 1024 * 1024;

struct Entry {
    kind: HandleKind,
    constraints: DatabaseConstraints,
    checked: Arc<CheckedStatement>,
}

impl Entry {
    fn bytes(key: &(HandleName, String), checked: &CheckedStatement) -> usize {
        key.0.as_str().len() + key.1.len() + checked.sql.len()
    }
}

struct Inner {
    map: LruCache<(HandleName, String), Entry, RandomState>,
    bytes: usize,
}

/// Checked statements by handle and text (see the module documentation).
pub struct StatementCache {
    inner: Mutex<Inner>,
}

impl Default for StatementCache {
    fn default() -> Self {
        StatementCache {
            inner: Mutex::new(Inner {
                // One above the bound: `insert` evicts on its own past the capacity without saying
                // what, so the bound (and the byte count) is kept below, in `insert`.
                map: LruCache::with_hasher(MAX_ENTRIES + 1, RandomState::new()),
                bytes: 0,
            }),
        }
    }
}

impl StatementCache {
    /// The checked form of `query` on `handle` (whose constraints are `db`), from the cache when
    /// it was checked before under the same kind and constraints, else checked now and kept if
    /// it passed.
    pub(crate) fn get_or_check(
        &self,
        handle: &Handle,
        db: &DatabaseConstraints,
        query: &str,
    ) -> Result<Arc<CheckedStatement>, CallError> {
        let key = (handle.name.clone(), query.to_owned());
        if let Some(e) = self.lock().map.get(&key) {
            if e.kind == handle.kind && &e.constraints == db {
                return Ok(e.checked.clone());
            }
        }
        // Checked outside the lock: parsing is the slow part, and two callers checking the same
        // new text at once both get the same answer.
        let checked = Arc::new(check_statement(handle.kind, db, query)?);
        self.insert(key, handle.kind, db, checked.clone());
        Ok(checked)
    }

    fn insert(&self, key: (HandleName, String), kind: HandleKind, db: &DatabaseConstraints, checked: Arc<CheckedStatement>) {
        let size = Entry::bytes(&key, &checked);
        if size > MAX_BYTES {
            return;
        }
        let mut inner = self.lock();
        let entry = Entry { kind, constraints: db.clone(), checked };
        if let Some(old) = inner.map.insert(key.clone(), entry) {
            inner.bytes -= Entry::bytes(&key, &old.checked);
        }
        inner.bytes += size;
        while inner.bytes > MAX_BYTES || inner.map.len() > MAX_ENTRIES {
            let Some((k, e)) = inner.map.remove_lru() else { break };
            inner.bytes -= Entry::bytes(&k, &e.checked);
        }
    }

    /// Statements kept now.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map holds no invariant a panicking holder could break half-way that matters more
        // than serving: a poisoned lock is taken over.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_core::config::{Constraints, Scope, SecretRef};
    use airlock_core::ErrorCode;

    fn handle(name: &str, tables: &[&str]) -> Handle {
        Handle {
            name: HandleName::parse(name).unwrap(),
            kind: HandleKind::Postgres,
            secret: SecretRef::Env("X".into()),
            description: String::new(),
            constraints: Constraints::Database(DatabaseConstraints {
                scope: Scope::ReadOnly,
                tables: Some(tables.iter().map(|s| s.to_string()).collect()),
                ..DatabaseConstraints::default()
            }),
        }
    }

    fn check(c: &StatementCache, h: &Handle, q: &str) -> Result<Arc<CheckedStatement>, CallError> {
        c.get_or_check(h, h.database().unwrap(), q)
    }

    #[test]
    fn an_entry_answers_only_under_the_constraints_it_was_checked_with() {
        let c = StatementCache::default();
        let wide = handle("DB", &["orders", "users"]);
        let narrow = handle("DB", &["orders"]);
        assert!(check(&c, &wide, "SELECT * FROM users").is_ok());
        assert!(check(&c, &wide, "SELECT * FROM users").is_ok());
        // Same name, same text, narrower rules (a reloaded or edited handle): checked again.
        let e = check(&c, &narrow, "SELECT * FROM users").unwrap_err();
        assert_eq!(e.code, ErrorCode::TableNotAllowed);
        // Another handle with the same rules has its own entries.
        let other = handle("OTHER", &["orders"]);
        assert_eq!(check(&c, &other, "SELECT * FROM users").unwrap_err().code, ErrorCode::TableNotAllowed);
    }

    #[test]
    fn refusals_are_not_kept() {
        let c = StatementCache::default();
        let h = handle("DB", &["orders"]);
        for q in ["SELECT * FROM users", "DELETE FROM orders", "SELECT pg_read_file('x')", "SELEC 1"] {
            assert!(check(&c, &h, q).is_err(), "{q}");
        }
        assert!(c.is_empty());
        check(&c, &h, "SELECT 1").unwrap();
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn entries_stay_within_the_count_bound_least_recently_used_first() {
        let c = StatementCache::default();
        let h = handle("DB", &["orders"]);
        check(&c, &h, "SELECT 0").unwrap();
        for i in 1..MAX_ENTRIES + 200 {
            check(&c, &h, &format!("SELECT {i}")).unwrap();
            // `SELECT 0` is used all along, so it is never the least recently used.
            check(&c, &h, "SELECT 0").unwrap();
            assert!(c.len() <= MAX_ENTRIES);
        }
        assert_eq!(c.len(), MAX_ENTRIES);
        let inner = c.lock();
        assert!(inner.map.contains_key(&(h.name.clone(), "SELECT 0".to_owned())));
        assert!(!inner.map.contains_key(&(h.name.clone(), "SELECT 1".to_owned())));
    }

    #[test]
    fn entries_stay_within_the_byte_bound() {
        let c = StatementCache::default();
        let h = handle("DB", &["orders"]);
        // About 30 KB sent and 30 KB printed back each: 16 MiB holds about 280.
        let filler = "x".repeat(30_000);
        for i in 0..400 {
            check(&c, &h, &format!("SELECT {i}, '{filler}'")).unwrap();
            let inner = c.lock();
            assert!(inner.bytes <= MAX_BYTES);
            let counted: usize = inner.map.iter().map(|(k, e)| Entry::bytes(k, &e.checked)).sum();
            assert_eq!(counted, inner.bytes, "the byte count follows every insertion and eviction");
        }
        assert!(c.len() < 400 && c.len() > 100, "{}", c.len());
    }
}
