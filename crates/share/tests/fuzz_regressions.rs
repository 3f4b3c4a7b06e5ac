//! The `share_envelope` fuzz target's property (`fuzz/props/share_envelope.rs`) on every input
//! of `fuzz/corpus/share_envelope/` and `fuzz/regressions/share_envelope/`, with stable Rust, so
//! the corpus runs in CI without nightly (T17).

#[allow(dead_code)]
#[path = "../../../fuzz/props/share_envelope.rs"]
mod prop;

#[allow(dead_code)]
#[path = "../../../fuzz/props/replay.rs"]
mod replay;

#[test]
fn fuzz_corpus_and_regressions_hold() {
    let n = replay::replay(env!("CARGO_MANIFEST_DIR"), "share_envelope", prop::check);
    println!("{n} inputs");
}

/// The property is asserted, not only run: a decoder that accepts a second spelling of a value
/// fails it, and so does a link that renders to something else.
#[test]
fn the_property_can_fail() {
    let lenient = |s: &str| airlock_share::decode_b64(s.trim_end_matches('='));
    let e = prop::round_trips("lenient", &lenient, &airlock_share::encode_b64, "AAEC=").unwrap_err();
    assert!(e.contains("non-canonical"), "{e}");
    assert!(prop::round_trips("strict", &airlock_share::decode_b64, &airlock_share::encode_b64, "AAEC=").is_ok());
    let link = "https://airlock.example/s/EREREREREREREREREREREQ#AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
    assert!(prop::link_round_trip(link).is_ok());
    assert!(prop::padding_canonical(&[0, 0, 0, 3, b'a', b'b', b'c']).is_ok());
}

/// Found by the `share_envelope` fuzz target (the reproducer is
/// `fuzz/regressions/share_envelope/link-with-no-host.min`, replayed above): `Link::parse`
/// accepted `https:///s/{id}#{key}`, whose base has no host, and `Link::render` wrote it back as
/// `https:/s/{id}#{key}`, which it refuses; `airlock open` would have built its consume address
/// from that base. A link's base now has a host, with none of the characters that make a reader
/// see another host than the client uses.
#[test]
fn a_link_without_a_plain_host_is_refused() {
    let tail = "/s/EREREREREREREREREREREQ#AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
    for base in ["https://", "https:///x", "http://", "https://good.example@evil.example", "https://a\\b", "https://a b", "https://a?b", "https://\u{0}"] {
        let link = format!("{base}{tail}");
        assert!(airlock_share::Link::parse(&link).is_err(), "{link:?} was accepted");
        assert!(prop::link_round_trip(&link).is_ok());
    }
    for base in ["https://airlock.example", "http://127.0.0.1:7878", "https://airlock.example/prefix", "https://[::1]:8443"] {
        let link = format!("{base}{tail}");
        assert_eq!(airlock_share::Link::parse(&link).unwrap().base, base);
        assert!(prop::link_round_trip(&link).is_ok());
    }
}
