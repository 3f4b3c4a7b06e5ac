//! The q-gram prefilter never misses a match: property tests against a search of the whole text on random
//! texts with secrets (and their encodings) planted at random offsets.

use airlock_core::{HandleName, Secret};
use airlock_scrub::matcher::{Hit, Matcher};
use airlock_scrub::variants::all_variants;
use airlock_scrub::ScrubberBuilder;
use proptest::prelude::*;

fn text_strategy() -> impl Strategy<Value = Vec<u8>> {
    // Mostly prose-like bytes, some arbitrary ones, lengths around and above the direct-scan
    // threshold.
    prop::collection::vec(
        prop_oneof![8 => prop::sample::select(b"etaoin shrdlu\n.,".to_vec()), 1 => any::<u8>()],
        0..3000,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn prefilter_finds_exactly_what_the_whole_search_finds(
        secrets in prop::collection::vec(prop::collection::vec(any::<u8>(), 6..40), 1..8),
        mut text in text_strategy(),
        plants in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..12),
    ) {
        let patterns: Vec<Vec<u8>> = secrets.iter().flat_map(|s| all_variants(s)).collect();
        let m = Matcher::new(&patterns).unwrap();
        for (which, at) in plants {
            let p = &patterns[which.index(patterns.len())];
            let at = at.index(text.len() + 1);
            text.splice(at..at, p.iter().copied());
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        m.find_all(&text, &mut a);
        m.find_all_unfiltered(&text, &mut b);
        a.sort();
        b.sort();
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(m.is_match(&text), !b.is_empty());
    }

    /// The matcher finds exactly every occurrence of every pattern, overlapping ones included,
    /// exact patterns byte for byte and the others in any ASCII case: compared with a search of
    /// each pattern at each position. A small alphabet makes matches, overlaps and shared
    /// anchors frequent, and a shared prefix (encodings of URLs with one scheme and user) puts
    /// patterns that differ only near their end into one index.
    #[test]
    fn finds_exactly_every_occurrence_of_every_pattern(
        prefix in prop::collection::vec(prop::sample::select(b"aAbB01".to_vec()), 0..24),
        exact in prop::collection::vec(prop::collection::vec(prop::sample::select(b"aAbB01".to_vec()), 1..12), 0..20),
        nocase in prop::collection::vec(prop::collection::vec(prop::sample::select(b"aAbB01".to_vec()), 1..12), 0..20),
        mut text in prop::collection::vec(prop::sample::select(b"aAbB01 ".to_vec()), 0..2000),
        plants in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<bool>()), 0..12),
    ) {
        let with_prefix = |ps: &[Vec<u8>]| -> Vec<Vec<u8>> {
            ps.iter().map(|p| prefix.iter().chain(p).copied().collect()).collect()
        };
        let (exact, nocase) = (with_prefix(&exact), with_prefix(&nocase));
        let all: Vec<&Vec<u8>> = exact.iter().chain(&nocase).collect();
        prop_assume!(!all.is_empty());
        for (which, at, upper) in plants {
            let p = all[which.index(all.len())];
            let p = if upper { p.to_ascii_uppercase() } else { p.clone() };
            let at = at.index(text.len() + 1);
            text.splice(at..at, p);
        }
        let m = Matcher::with_nocase(&exact, &nocase).unwrap();
        let mut want = Vec::new();
        for (i, p) in all.iter().enumerate() {
            for start in 0..(text.len() + 1).saturating_sub(p.len()) {
                let t = &text[start..start + p.len()];
                if (i < exact.len() && t == p.as_slice()) || (i >= exact.len() && t.eq_ignore_ascii_case(p)) {
                    want.push(Hit { start, end: start + p.len(), pattern: i });
                }
            }
        }
        want.sort();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        m.find_all(&text, &mut a);
        m.find_all_unfiltered(&text, &mut b);
        a.sort();
        b.sort();
        prop_assert_eq!(&a, &want);
        prop_assert_eq!(&b, &want);
        prop_assert_eq!(m.is_match(&text), !want.is_empty());
    }

    #[test]
    fn prefilter_with_short_and_long_patterns_mixed(
        short in prop::collection::vec(b'a'..=b'd', 6..8),
        long in prop::collection::vec(b'a'..=b'd', 30..90),
        text in prop::collection::vec(b'a'..=b'e', 0..4000),
    ) {
        // A tiny alphabet makes matches (and overlapping ones) frequent.
        let m = Matcher::new(&[short, long]).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        m.find_all(&text, &mut a);
        m.find_all_unfiltered(&text, &mut b);
        a.sort();
        b.sort();
        prop_assert_eq!(a, b);
    }

    #[test]
    fn every_planted_secret_is_redacted(
        seeds in prop::collection::vec(any::<u64>(), 1..20),
        positions in prop::collection::vec(any::<prop::sample::Index>(), 1..20),
        filler_len in 0usize..5000,
    ) {
        const B62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let secrets: Vec<String> = seeds
            .iter()
            .map(|s| {
                let mut x = *s | 1;
                (0..24).map(|_| { x ^= x << 13; x ^= x >> 7; x ^= x << 17; B62[(x % 62) as usize] as char }).collect()
            })
            .collect();
        let mut b = ScrubberBuilder::new();
        for (i, s) in secrets.iter().enumerate() {
            b.add_secret(&HandleName::parse(&format!("S{i}")).unwrap(), &Secret::from_str_value(s));
        }
        let s = b.build();
        let filler = "lorem ipsum dolor sit amet ".repeat(filler_len / 27 + 1);
        let mut text = filler[..filler_len].to_owned();
        for (i, pos) in positions.iter().enumerate() {
            let at = pos.index(text.len() + 1);
            text.insert_str(at, &format!(" {} ", secrets[i % secrets.len()]));
        }
        let (out, _) = s.scrub_str(&text);
        for sec in &secrets {
            prop_assert!(!out.contains(sec.as_str()));
        }
    }
}
