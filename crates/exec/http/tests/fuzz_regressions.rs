//! The `http_destination` fuzz target's property (`fuzz/props/http_destination.rs`) on every
//! input of `fuzz/corpus/http_destination/` and `fuzz/regressions/http_destination/`, with
//! stable Rust, so the corpus runs in CI without nightly (T05).

/// The URI type reqwest hands to hyper (the property compares its reading with `url`'s).
use axum::http::Uri;

#[allow(dead_code)]
#[path = "../../../../fuzz/props/http_destination.rs"]
mod prop;

#[allow(dead_code)]
#[path = "../../../../fuzz/props/replay.rs"]
mod replay;

#[test]
fn fuzz_corpus_and_regressions_hold() {
    let n = replay::replay(env!("CARGO_MANIFEST_DIR"), "http_destination", prop::check);
    println!("{n} inputs");
}

/// The corpus reaches the property's checks: a good part of it is accepted.
#[test]
fn the_corpus_is_accepted_often_enough() {
    let (accepted, all) = replay::count(env!("CARGO_MANIFEST_DIR"), "http_destination", prop::accepted);
    println!("{accepted} of {all} inputs accepted");
    assert!(accepted * 5 >= all, "only {accepted} of {all} inputs are accepted");
}

/// The property is asserted, not only run: a request accepted for one handle fails it against
/// a handle bound elsewhere.
#[test]
fn the_property_can_fail() {
    use airlock_exec_http::HttpExecutor;
    let api = prop::handle(0); // https://api.example.com/v1/
    let local = prop::handle(1); // http://127.0.0.1:8080/
    let a = prop::args("https://api.example.com/v1/users\nGET");
    let v = HttpExecutor::validate(&api, &a).expect("a bound URL");
    assert!(prop::accepted_holds(&api, &a, &v).is_ok());
    let e = prop::accepted_holds(&local, &a, &v).unwrap_err();
    assert!(e.contains("no bound destination"), "{e}");
    let attacker = prop::args("https://api.example.com@attacker.test/v1/\nGET");
    assert!(HttpExecutor::validate(&api, &attacker).is_err());
}
