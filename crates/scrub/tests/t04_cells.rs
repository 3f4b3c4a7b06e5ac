//! T04/T24: a secret split across the cells or rows of a result. A `query_db` result (or any
//! array or object of strings) can carry a secret cut into pieces, one per cell, along a row, from
//! one row into the next, or down a column; `scrub_result` reads the leaves as one text and
//! redacts every piece. Ordinary cells (words, UUIDs, hashes, numbers, dates) survive.

use airlock_core::{HandleName, Secret};
use airlock_scrub::{Scrubber, ScrubberBuilder, MIN_CUT_FRAGMENT};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use proptest::prelude::*;
use serde_json::{json, Value};

fn scrubber_for(secret: &str) -> Scrubber {
    let mut b = ScrubberBuilder::new();
    b.add_secret(&HandleName::parse("API").unwrap(), &Secret::from_str_value(secret));
    b.build()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The form the secret takes in the table before it is split.
fn form(secret: &str, which: usize) -> String {
    match which {
        0 => secret.to_owned(),
        1 => STANDARD.encode(secret),
        _ => hex(secret.as_bytes()),
    }
}

/// Cuts `s` into `k` non-empty pieces at the (sorted, distinct) cut points chosen by `cuts`.
fn split(s: &str, k: usize, cuts: &[prop::sample::Index]) -> Vec<String> {
    let mut at: Vec<usize> = cuts.iter().take(k - 1).map(|c| 1 + c.index(s.len() - 1)).collect();
    at.sort_unstable();
    at.dedup();
    let mut out = Vec::new();
    let mut prev = 0;
    for a in at.into_iter().chain([s.len()]) {
        out.push(s[prev..a].to_owned());
        prev = a;
    }
    out
}

/// A secret without lower-case letters, so the ordinary cells (lower-case words, numbers) cannot
/// hold a window of it by chance.
fn secret_strategy() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof![0x21u8..0x61, 0x7bu8..0x7f], 8..40).prop_map(|v| String::from_utf8(v).unwrap())
}

/// Ordinary cells: words and numbers. The words are CJK, an alphabet no transform of a secret
/// of [`secret_strategy`] produces: ASCII letters would not do, since a secret's letters fold to
/// lower case and its text may be read reversed, so a lower-case cell next to a piece can
/// rightly complete a folded or reversed form (`!!!` then `y` read backwards is `y!!!`, the
/// fold of the secret `Y!!!`).
fn other_cell() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => "[\u{4e00}-\u{4fff}]{1,6}".prop_map(Value::from),
        1 => (0u64..10_000_000).prop_map(Value::from),
        1 => "[\u{4e00}-\u{4fff}]{1,4} [\u{4e00}-\u{4fff}]{1,4}".prop_map(Value::from),
    ]
}

/// Every leaf of a result in document order, and, for a `rows` table, each column down the rows.
fn leaf_texts(v: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Number(n) => out.push(n.to_string()),
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(m) => m.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, &mut out);
    out
}

/// The leaves joined, with each marker turned into a NUL so that text on its two sides does not
/// join into a window.
fn joined_without_markers(leaves: &[String]) -> String {
    let re = regex_lite_marker();
    leaves.iter().map(|l| re(l)).collect::<Vec<_>>().join("")
}

/// True when `now` is `was` with one end redacted, and that end is a start or an end of the
/// secret's form `f` (a piece the secret could have continued from or into).
fn end_of_secret_redacted(was: &str, now: &str, f: &str) -> bool {
    const MARK: &str = "[REDACTED:API]";
    if let Some(kept) = now.strip_suffix(MARK) {
        if let Some(gone) = was.strip_prefix(kept) {
            return !gone.is_empty() && f.starts_with(gone);
        }
    }
    if let Some(kept) = now.strip_prefix(MARK) {
        if let Some(gone) = was.strip_suffix(kept) {
            return !gone.is_empty() && f.ends_with(gone);
        }
    }
    false
}

fn regex_lite_marker() -> impl Fn(&str) -> String {
    |s: &str| {
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find("[REDACTED:") {
            out.push_str(&rest[..i]);
            out.push('\0');
            match rest[i..].find(']') {
                Some(j) => rest = &rest[i + j + 1..],
                None => rest = "",
            }
        }
        out.push_str(rest);
        out
    }
}

/// True when some window of `min` bytes of `form` appears in `hay`.
fn has_window(hay: &str, form: &str, min: usize) -> bool {
    form.as_bytes().windows(min).any(|w| hay.as_bytes().windows(min).any(|h| h == w))
}

/// Builds a `query_db` result of `width` columns holding `pieces` in consecutive cells from
/// `start` (row-major, or down column `start % width` when `down`), the other cells ordinary.
fn table(pieces: &[String], others: &[Value], width: usize, start: usize, down: bool) -> (Value, Vec<(usize, usize)>) {
    let n_pieces = pieces.len();
    let rows_needed = if down { start / width + n_pieces } else { (start + n_pieces).div_ceil(width) };
    let rows_n = rows_needed + 1;
    let mut rows: Vec<Vec<Value>> = (0..rows_n)
        .map(|r| (0..width).map(|c| others[(r * width + c) % others.len()].clone()).collect())
        .collect();
    let mut at = Vec::new();
    for (k, p) in pieces.iter().enumerate() {
        let (r, c) = if down { (start / width + k, start % width) } else { ((start + k) / width, (start + k) % width) };
        rows[r][c] = Value::from(p.clone());
        at.push((r, c));
    }
    let columns: Vec<String> = (0..width).map(|c| format!("c{c}")).collect();
    (json!({"columns": columns, "rows": rows, "row_count": rows_n, "truncated": false}), at)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// A secret (raw, base64 or hex) cut into 2..=5 pieces placed in consecutive cells, along a
    /// row and on into the next rows or down a column, among ordinary cells: every piece cell is
    /// redacted whole, and no window of MIN_CUT_FRAGMENT bytes of the form survives in the
    /// leaves read in document order or down the column.
    #[test]
    fn t04_prop_secret_split_across_cells_is_redacted(
        secret in secret_strategy(),
        which in 0usize..3,
        k in 2usize..=5,
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 4),
        others in proptest::collection::vec(other_cell(), 1..12),
        width in 1usize..5,
        start in 0usize..8,
        down in any::<bool>(),
    ) {
        let s = scrubber_for(&secret);
        let f = form(&secret, which);
        let pieces = split(&f, k, &cuts);
        let (mut v, at) = table(&pieces, &others, width, start, down);
        let before = v.clone();
        let n = s.scrub_result(&mut v);
        prop_assert!(n >= 1, "nothing redacted: {}", before);
        let strip = regex_lite_marker();
        for &(r, c) in &at {
            let cell = v["rows"][r][c].as_str().unwrap_or_default();
            prop_assert!(strip(cell).chars().all(|ch| ch == '\0'), "piece cell ({r},{c}) keeps {cell:?} of {f:?}: {v}");
        }
        // What the piece cells hold, read in order (the other cells may hold a window of a hex
        // or base64 form by chance, so they are left out): nothing of MIN_CUT_FRAGMENT bytes.
        let kept: Vec<String> = at.iter().map(|&(r, c)| leaf_texts(&v["rows"][r][c]).concat()).collect();
        prop_assert!(!has_window(&joined_without_markers(&kept), &f, MIN_CUT_FRAGMENT), "a window survives: {v}");
        // Raw pieces are matched exactly: the ordinary cells around them are untouched, but for
        // an end that could itself be the missing piece (a cell ending in `8` next to the piece
        // `!!!!!!!` of `8!!!!!!!`: which of the two the secret went on from cannot be told).
        if which == 0 {
            for (r, row) in before["rows"].as_array().unwrap().iter().enumerate() {
                for (c, cell) in row.as_array().unwrap().iter().enumerate() {
                    if !at.contains(&(r, c)) && &v["rows"][r][c] != cell {
                        let was = leaf_texts(cell).concat();
                        let now = v["rows"][r][c].as_str().unwrap_or_default().to_owned();
                        prop_assert!(end_of_secret_redacted(&was, &now, &f), "ordinary cell ({r},{c}) {cell} became {now:?}: {v}");
                    }
                }
            }
        }
        // Idempotent.
        let mut again = v.clone();
        prop_assert_eq!(s.scrub_result(&mut again), 0);
        prop_assert_eq!(again, v);
    }

    /// The same across the strings of any nested arrays and objects (document order).
    #[test]
    fn t04_prop_secret_split_across_any_strings_is_redacted(
        secret in secret_strategy(),
        k in 2usize..=5,
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 4),
        before in proptest::collection::vec("[a-z]{1,8}", 0..4),
        after in proptest::collection::vec("[a-z]{1,8}", 0..4),
    ) {
        let s = scrubber_for(&secret);
        let pieces = split(&secret, k, &cuts);
        let mut v = json!({
            "meta": {"before": before},
            "items": pieces.iter().map(|p| json!({"text": p})).collect::<Vec<_>>(),
            "tail": after,
        });
        let n = s.scrub_result(&mut v);
        prop_assert!(n >= 1);
        let doc = joined_without_markers(&leaf_texts(&v));
        prop_assert!(!has_window(&doc, &secret, MIN_CUT_FRAGMENT), "{v}");
        prop_assert_eq!(&v["meta"]["before"], &json!(before));
        prop_assert_eq!(&v["tail"], &json!(after));
    }

    /// Ordinary cells survive byte for byte: words, UUIDs, SHA-256 digests, base64 of random
    /// bytes, numbers and dates, with secrets that are not in them.
    #[test]
    fn t04_prop_ordinary_cells_survive(
        secrets in proptest::collection::vec("[A-Za-z0-9]{16,40}", 1..10),
        rows in proptest::collection::vec(proptest::collection::vec(prop_oneof![
            3 => "[a-z]{1,10}".prop_map(Value::from),
            1 => any::<[u8; 16]>().prop_map(|u| { let h = hex(&u); Value::from(format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])) }),
            1 => any::<[u8; 32]>().prop_map(|d| Value::from(hex(&d))),
            1 => proptest::collection::vec(any::<u8>(), 6..40).prop_map(|b| Value::from(STANDARD.encode(b))),
            1 => any::<i64>().prop_map(Value::from),
            1 => (2000u32..2030, 1u32..13, 1u32..29).prop_map(|(y, m, d)| Value::from(format!("{y}-{m:02}-{d:02}T12:00:00Z"))),
        ], 1..6), 0..20),
    ) {
        let mut b = ScrubberBuilder::new();
        b.patterns(false);
        for (i, s) in secrets.iter().enumerate() {
            b.add_secret(&HandleName::parse(&format!("S{i}")).unwrap(), &Secret::from_str_value(s));
        }
        let s = b.build();
        let mut v = json!({"columns": ["a", "b"], "rows": rows, "truncated": true});
        let before = v.clone();
        prop_assert_eq!(s.scrub_result(&mut v), 0);
        prop_assert_eq!(v, before);
    }
}

#[test]
fn t04_secret_split_across_two_cells_of_a_row() {
    let secret = "sk_live_4eC39HqLyjWDarjtT1zdp7dc";
    let s = scrubber_for(secret);
    let mut v = json!({
        "columns": ["id", "a", "b", "note"],
        "rows": [[1, "sk_live_4eC39H", "qLyjWDarjtT1zdp7dc", "ok"], [2, "x", "y", "fine"]],
        "row_count": 2,
        "truncated": false,
    });
    assert_eq!(s.scrub_result(&mut v), 1);
    assert_eq!(
        v["rows"],
        json!([[1, "[REDACTED:API]", "[REDACTED:API]", "ok"], [2, "x", "y", "fine"]])
    );
}

#[test]
fn t04_secret_split_down_a_column_and_in_numbers() {
    let secret = "4242-7710-0042-9931";
    let s = scrubber_for(secret);
    let mut v = json!({"rows": [["a", "4242-77"], ["b", "10-0042"], ["c", "-9931"], ["d", "keep"]]});
    assert!(s.scrub_result(&mut v) >= 1);
    assert_eq!(
        v["rows"],
        json!([["a", "[REDACTED:API]"], ["b", "[REDACTED:API]"], ["c", "[REDACTED:API]"], ["d", "keep"]])
    );
    // A numeric secret stored as numbers in consecutive cells.
    let s = scrubber_for("31415926535");
    let mut v = json!({"rows": [[314159, 26535, 7]]});
    assert_eq!(s.scrub_result(&mut v), 1);
    assert_eq!(v["rows"], json!([["[REDACTED:API]", "[REDACTED:API]", 7]]));
}

#[test]
fn t24_secret_cut_by_a_row_cap_across_cells() {
    // The row cap cut the result after the second piece: the pieces kept (together at least
    // MIN_CUT_FRAGMENT bytes of the secret) are redacted.
    let secret = "sk_live_4eC39HqLyjWDarjtT1zdp7dc";
    let s = scrubber_for(secret);
    let mut v = json!({"rows": [["note", "sk_li"], ["ve_4e", null]], "truncated": true});
    assert_eq!(s.scrub_result(&mut v), 1);
    assert_eq!(v["rows"], json!([["note", "[REDACTED:API]"], ["[REDACTED:API]", null]]));
    // Shorter than the floor: kept.
    let mut v = json!({"rows": [["note", "sk"], ["_", null]], "truncated": true});
    assert_eq!(s.scrub_result(&mut v), 0);
}
