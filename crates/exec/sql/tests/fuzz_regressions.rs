//! The `sql_validate` fuzz target's property (`fuzz/props/sql_validate.rs`) on every input of
//! `fuzz/corpus/sql_validate/` and `fuzz/regressions/sql_validate/`, with stable Rust, so the
//! corpus runs in CI without nightly (T01, T02, T25, T26).

#[allow(dead_code)]
#[path = "../../../../fuzz/props/sql_validate.rs"]
mod prop;

#[allow(dead_code)]
#[path = "../../../../fuzz/props/replay.rs"]
mod replay;

#[test]
fn fuzz_corpus_and_regressions_hold() {
    let n = replay::replay(env!("CARGO_MANIFEST_DIR"), "sql_validate", prop::check);
    println!("{n} inputs");
}

/// The corpus reaches the property's checks: a good part of it is accepted.
#[test]
fn the_corpus_is_accepted_often_enough() {
    let (accepted, all) = replay::count(env!("CARGO_MANIFEST_DIR"), "sql_validate", prop::accepted);
    println!("{accepted} of {all} inputs accepted");
    assert!(accepted * 5 >= all, "only {accepted} of {all} inputs are accepted");
}

/// The property is asserted, not only run: an accepted statement checked against a handle
/// narrower than the one that accepted it fails it.
#[test]
fn the_property_can_fail() {
    let open = prop::handle(0); // PostgreSQL, read-only, no allow-list
    let listed = prop::handle(6); // PostgreSQL, read-only, orders / public.customers / shop.items
    let v = prop::validate(&open, "SELECT * FROM users").expect("accepted without an allow-list");
    let e = prop::accepted_holds(&listed, "SELECT * FROM users", &v).unwrap_err();
    assert!(e.contains("not on the allow-list"), "{e}");
    let rw = prop::handle(3); // PostgreSQL, read-write
    let v = prop::validate(&rw, "DELETE FROM orders").expect("a write on a read-write handle");
    let e = prop::accepted_holds(&open, "DELETE FROM orders", &v).unwrap_err();
    assert!(e.contains("read-only"), "{e}");
    assert!(prop::validate(&open, "SELECT pg_read_file('/etc/passwd')").is_none());
}
