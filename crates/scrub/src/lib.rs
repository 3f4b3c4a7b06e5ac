//! The scrubber: every result, error detail and audit field passes through it before it leaves
//! airlock (invariant 1, T04, T14, T18, T24).
//!
//! A [`Scrubber`] redacts, in one pass over the text:
//! 1. **known values**: every secret the broker holds and its encodings (see [`variants`]),
//!    matched through a hashed index of anchored patterns behind a sound two-level q-gram
//!    prefilter ([`matcher`]);
//! 2. the same patterns over a **normalized** copy of the text (the skeleton of [`normalize`]:
//!    whitespace, invisible and format characters removed, homoglyphs and `0`/`O`, `1`/`l`/`I`
//!    folded) when the text looks suspicious (a non-ASCII character that normalisation changes,
//!    or a run of spaced-out single characters);
//! 3. the same patterns over **decoded and re-spelled layers** of candidate spans (see
//!    [`decode`]): runs of base64/base32/hex characters, escapes of every common family,
//!    separators between characters, the canonical form of text with invisible characters,
//!    full-width forms or homoglyphs, and candidate regions read backwards, recursively to a
//!    bounded depth and with bounded work;
//! 4. **pattern rules** derived from gitleaks for secrets the broker does not hold ([`rules`]).
//!
//! [`Scrubber::scrub_result`] also reads a result's leaves as one text, so a secret split over
//! cells or rows is redacted in every cell that holds a part
//! ([`Scrubber::scrub_across_leaves`]), and redacts the trailing fragment a cut left
//! ([`Scrubber::scrub_cut_tail`]).
//!
//! Every match becomes `[REDACTED:LABEL]`: the handle name for a known value, the gitleaks rule id
//! for a pattern. Overlapping matches merge into one redaction. Markers never match anything
//! (patterns that occur inside a marker are public anyway and are dropped), so scrubbing is
//! idempotent.
//!
//! # What is matched
//!
//! A known secret of at least [`variants::MIN_SECRET_LEN`] (6) bytes is found under any chain of
//! the following, each applied to the secret or to the output of another, up to
//! [`decode::MAX_DEPTH`] (4) decoding steps deep (re-spellings do not count as steps), embedded
//! anywhere in a text:
//!
//! | transform | how it is found |
//! |---|---|
//! | base64, standard and URL-safe, padded or not, any alignment inside a larger blob, wrapped in lines (MIME 76, PEM 64, any width of at least 16) | listed variants (stable cores), and decoding of encoded-looking runs at every offset |
//! | base32 (RFC 4648) in any case and alignment; hex in any case, with or without separators (`de:ad`, `de ad`, `0xde,0xad`, `0XDE`) | listed variants, and decoding |
//! | percent-encoding of any subset of bytes, `+` for space; JSON/JS/C/Python escapes (`\uXXXX` with surrogate pairs, `\u{..}`, `\xXX`, `\UXXXXXXXX`, simple escapes); HTML/XML references (decimal, hex, named, with or without `;`); quoted-printable with soft breaks | listed variants for the usual forms, decoding of escape regions for any mix |
//! | one separator between every character (`s-e-c-r-e-t`, `s e c r e t`, `\n`, `_`, `|`, `/`...), or whitespace of any length between them | decoding of separated runs; the skeleton |
//! | **reversal** of the secret or of any encoding (or of an encoding of an encoding...) | the reversed raw value and reversed short encodings are listed; every encoded-looking run, run of hex pairs and token around an escape that decodes backwards is also read backwards |
//! | **case change**: the raw value in any case when at least [`variants::CASE_FOLD_MIN_LEN`] (16) bytes long; every listed encoding in any case (so `BASE64` upper-cased is found when it is a listed form: base64 of the secret or of its reversal, at any alignment inside a larger blob from 7 bytes on, where the stable core at every alignment reaches [`variants::MIN_ENCODED_LEN`] (8) characters, or base64 over base64/hex of it); any case inside case-insensitive encodings (hex, base32, percent, numeric escapes, `\U`, `0X`) at any depth | case-insensitive patterns; case-insensitive decoders |
//! | **invisible and format characters** interleaved or used as separators: every Unicode `Cf` and default-ignorable character (U+200B..U+200D, U+2060, U+FEFF, U+00AD, bidi controls, TAG characters, variation selectors...) and combining marks | the skeleton (direct forms); the canonical form, which is decoded further (encodings with invisible characters inside) |
//! | **full-width forms** (U+FF01..U+FF5E), mathematical alphanumerics, and the **homoglyphs** of [`normalize::fold_non_ascii`] (Cyrillic and Greek look-alikes of Latin letters and digits, from Unicode's `confusables.txt`) | the skeleton; the canonical form, decoded further |
//! | a secret **split across the cells or rows** of a result (along a row, from one row into the next, down a column), or across any strings of a JSON value | [`Scrubber::scrub_across_leaves`] |
//! | a secret **cut** by a size cap, a chunk boundary or a row cap | [`Scrubber::scrub_cut_tail`] |
//!
//! # The minimum fragment
//!
//! A whole secret shorter than [`variants::MIN_SECRET_LEN`] (6 bytes) is not matched (it would
//! shred ordinary text). A trailing fragment left by a cut is redacted from
//! [`MIN_CUT_FRAGMENT`] (4) bytes on, and from [`MIN_CUT_FRAGMENT_HEX`] (6) digits on for a
//! form written in hex digits only ([`min_cut_fragment`]): a cut that keeps 3 bytes of a secret
//! or of one of its encodings, or 5 hex digits, gives away at most 3 characters. The pieces of a secret split across cells are all
//! redacted, however short (together they would spell it).
//!
//! # Bounds
//!
//! Every pass is linear in its input: the scanners look at each byte a bounded number of times,
//! and the decoded layers together are capped at [`decode::WORK_FACTOR`] times the text plus
//! [`decode::WORK_BASE`] bytes. Past that cap the remaining candidates are not decoded (the
//! listed variants still apply): on hostile input built to exhaust the cap, a form that only
//! decoding finds can pass. Decoding goes level by level, so what the cap leaves undecoded is
//! the deepest chains first: on ordinary text that reaches the cap (HTML dense with entities
//! and escaped URLs does), every form one decoding deep, re-spelled or not, is still found.
//!
//! # What matching cannot catch
//!
//! Redaction is a backstop, not the boundary (THREATS.md). Matching recognises a secret under
//! transforms that need no key and keep it recognisable; it cannot catch **arbitrary
//! computation over a readable secret**: an upstream or a query that hashes it, encrypts or XORs
//! it with a key of its choosing, takes every other character, shifts each letter by one, returns
//! it one bit per call (an oracle, T03), or re-cases a base64 form that is not a listed variant
//! (base64 cannot be decoded after a case change). Homoglyphs outside the documented table, and
//! fragments shorter than the minimum, pass too. Where a secret can be read as data, the control
//! that works is access control, not matching: column allow-lists on the parsed statement,
//! table allow-lists and least-privilege database roles (T01, T25), and destinations bound to
//! the handle for HTTP.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod decode;
mod fixture;
pub mod markup;
pub mod matcher;
pub mod normalize;
mod output;
pub mod rules;
pub mod variants;

use airlock_core::{HandleName, Secret};
use matcher::{Hit, Matcher};
use normalize::Normalized;
use rules::Rules;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

#[doc(hidden)]
pub use fixture::{adversarial_text, bench_fixture, bench_fixture_with};
pub use output::Scrubbed;

/// Why a scrubber could not be built. Messages never contain pattern text.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The known-value index exceeded a capacity limit (too many or too long patterns).
    #[error("the known-value index could not be built: {0}")]
    Automaton(String),
    /// A built-in rule expression failed to compile (a bug).
    #[error("a built-in pattern rule failed to compile: {0}")]
    Rule(String),
    /// A handle added to a built scrubber has a marker that contains one of its patterns;
    /// build it from all its secrets instead ([`Scrubber::with_added`]).
    #[error("a new handle's marker contains a known pattern: build the scrubber from all its secrets")]
    MarkerConflict,
}

/// At most this many scrub passes run on one text: a later pass only finds a match that straddles
/// a marker inserted by an earlier one (possible only for contrived secrets).
const MAX_PASSES: usize = 4;

fn builtin_rules() -> Arc<Rules> {
    static RULES: OnceLock<Arc<Rules>> = OnceLock::new();
    RULES
        .get_or_init(|| Arc::new(Rules::new().expect("built-in rules compile (checked by tests)")))
        .clone()
}

/// Collects the secrets to match; [`ScrubberBuilder::build`] compiles them.
#[derive(Default)]
pub struct ScrubberBuilder {
    secrets: Vec<(HandleName, Secret)>,
    patterns_off: bool,
}

impl ScrubberBuilder {
    /// An empty builder with pattern rules on.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a known secret, labelled by the handle that holds it; matches become
    /// `[REDACTED:HANDLE]`. Secrets shorter than 6 bytes are ignored (see
    /// [`variants::MIN_SECRET_LEN`]).
    pub fn add_secret(&mut self, label: &HandleName, secret: &Secret) -> &mut Self {
        self.secrets.push((label.clone(), secret.clone()));
        self
    }

    /// Includes the pattern rules (on by default).
    pub fn patterns(&mut self, on: bool) -> &mut Self {
        self.patterns_off = !on;
        self
    }

    /// Builds the scrubber. Costly with many secrets (all encodings, two indexes): build it off
    /// the request path and swap it in.
    ///
    /// # Panics
    /// When the index exceeds its capacity (see [`ScrubberBuilder::try_build`]); failing closed
    /// is better than running without the secrets.
    pub fn build(&self) -> Scrubber {
        match self.try_build() {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    /// Builds the scrubber, reporting a capacity failure instead of panicking.
    pub fn try_build(&self) -> Result<Scrubber, BuildError> {
        let rules = (!self.patterns_off).then(builtin_rules);
        let mut labels = Labels::default();
        let mut sources = Sources::default();
        sources.collect(&self.secrets, &mut labels);
        let rule_base = labels.markers.len();
        for id in rules::rule_ids() {
            labels.markers.push(marker(id));
        }
        let base = Layer::compile(&sources, &labels.markers)?;
        let fingerprints = self.secrets.iter().map(|(l, s)| fingerprint(l, s)).collect();
        Ok(Scrubber {
            layers: vec![Arc::new(base)],
            added: Vec::new(),
            rules,
            labels: Arc::new(labels),
            rule_base,
            known: sources.known,
            fingerprints: Arc::new(fingerprints),
            added_fingerprints: HashSet::new(),
        })
    }
}

/// Marker texts and the label of each handle that has one.
#[derive(Clone, Default)]
struct Labels {
    /// Markers: the handles' and the rules' (a handle added to a built scrubber comes after the
    /// rules).
    markers: Vec<String>,
    of: HashMap<String, u32>,
}

impl Labels {
    fn of(&mut self, handle: &HandleName) -> u32 {
        if let Some(&l) = self.of.get(handle.as_str()) {
            return l;
        }
        self.markers.push(marker(handle.as_str()));
        let l = (self.markers.len() - 1) as u32;
        self.of.insert(handle.as_str().to_owned(), l);
        l
    }
}

/// The patterns of some secrets before compiling: every variant with its label and the order of
/// the secret that first listed it, and which are matched case-insensitively.
#[derive(Clone, Default)]
struct Sources {
    raw: HashMap<Vec<u8>, (u32, usize)>,
    folded: HashSet<Vec<u8>>,
    /// Secrets that listed at least one new pattern.
    known: usize,
    /// Secrets collected (orders the next ones after them).
    seen: usize,
    /// For added secrets only: each secret's label, fingerprint and variants, so that the
    /// secrets of one handle can be taken out again ([`Scrubber::without_added`]).
    kept: Option<Vec<Kept>>,
}

/// An added secret's label, fingerprint and variants.
#[derive(Clone)]
struct Kept {
    label: u32,
    fingerprint: [u8; 32],
    variants: Vec<(Vec<u8>, variants::Case)>,
}

/// The patterns are the secrets in other forms: wiped when dropped (as the matcher's copy is).
impl Drop for Sources {
    fn drop(&mut self) {
        for (mut p, _) in self.raw.drain() {
            zeroize::Zeroize::zeroize(&mut p);
        }
        for mut p in self.folded.drain() {
            zeroize::Zeroize::zeroize(&mut p);
        }
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        for (v, _) in &mut self.variants {
            zeroize::Zeroize::zeroize(v);
        }
    }
}

impl Sources {
    /// Sources that keep each secret's variants (for the added layer).
    fn keeping() -> Sources {
        let mut s = Sources::default();
        s.kept = Some(Vec::new());
        s
    }

    /// Lists the variants of `secrets`; the first handle to claim a pattern labels it.
    fn collect(&mut self, secrets: &[(HandleName, Secret)], labels: &mut Labels) {
        for (handle, secret) in secrets {
            let vars = variants::classified_variants(secret.expose_secret());
            if vars.is_empty() {
                self.seen += 1;
                continue;
            }
            let label = labels.of(handle);
            if let Some(kept) = &mut self.kept {
                kept.push(Kept { label, fingerprint: fingerprint(handle, secret), variants: vars.clone() });
            }
            self.add(label, vars);
        }
    }

    fn add(&mut self, label: u32, vars: Vec<(Vec<u8>, variants::Case)>) {
        let secret_idx = self.seen;
        self.seen += 1;
        let before = self.raw.len();
        for (v, case) in vars {
            if case == variants::Case::Fold {
                self.folded.insert(v.clone());
            }
            self.raw.entry(v).or_insert((label, secret_idx));
        }
        if self.raw.len() > before {
            self.known += 1;
        }
    }

    /// Whether these sources keep a secret labelled `label`.
    fn holds(&self, label: u32) -> bool {
        self.kept.iter().flatten().any(|k| k.label == label)
    }

    /// Whether they also keep secrets labelled otherwise.
    fn holds_other_than(&self, label: u32) -> bool {
        self.kept.iter().flatten().any(|k| k.label != label)
    }

    /// These sources without the kept secrets labelled `label`, and the fingerprints of those
    /// taken out.
    fn without(&self, label: u32) -> (Sources, Vec<[u8; 32]>) {
        let mut out = Sources::keeping();
        let mut gone = Vec::new();
        for k in self.kept.iter().flatten() {
            if k.label == label {
                gone.push(k.fingerprint);
            } else {
                out.kept.as_mut().expect("keeping").push(k.clone());
                out.add(k.label, k.variants.clone());
            }
        }
        (out, gone)
    }
}

/// One compiled set of known-value patterns: the raw and normalized indexes and the sorted
/// patterns a cut tail is compared with. A scrubber has one, and one more per addition of
/// secrets after it was built ([`Scrubber::with_added`]).
struct Layer {
    raw: Option<PatternSet>,
    norm: Option<PatternSet>,
    /// Every known-value pattern with its label, sorted, for [`Scrubber::scrub_cut_tail`].
    prefixes: Vec<(Box<[u8]>, u32)>,
}

impl Drop for Layer {
    fn drop(&mut self) {
        for (p, _) in &mut self.prefixes {
            zeroize::Zeroize::zeroize(&mut **p);
        }
    }
}

impl Layer {
    /// Compiles `sources`, leaving out patterns found inside any of `markers`.
    fn compile(sources: &Sources, markers: &[String]) -> Result<Layer, BuildError> {
        let (raw, folded) = (&sources.raw, &sources.folded);
        let mut norm: HashMap<Vec<u8>, (u32, usize)> = HashMap::new();
        // In secret order, so a folded pattern shared by two secrets keeps the first one's label.
        let mut ordered: Vec<(&Vec<u8>, &(u32, usize))> = raw.iter().collect();
        ordered.sort_unstable_by(|a, b| (a.1 .1, a.0).cmp(&(b.1 .1, b.0)));
        // Normalized case-insensitive patterns, matched case-insensitively too. Normalisation
        // folds `I` (not `i`) onto `l`, so a folded pattern is normalized from its all-lower and
        // its all-upper form (a mixed-case form that also needs normalizing is not covered).
        let mut norm_folded: HashSet<Vec<u8>> = HashSet::new();
        for (p, &l) in ordered {
            let forms = if folded.contains(p) {
                vec![p.to_ascii_lowercase(), p.to_ascii_uppercase()]
            } else {
                vec![p.clone()]
            };
            for f in forms {
                if let Ok(s) = std::str::from_utf8(&f) {
                    let n = normalize::normalize_str(s);
                    if n.len() >= variants::MIN_SECRET_LEN {
                        if folded.contains(p) {
                            norm_folded.insert(n.clone());
                        }
                        norm.entry(n).or_insert(l);
                    }
                }
            }
        }
        let mut prefixes: Vec<(Box<[u8]>, u32)> = raw.iter().map(|(p, l)| (p.clone().into_boxed_slice(), l.0)).collect();
        // A case-insensitive pattern is listed once; a cut tail is compared byte for byte, so its
        // all-upper and all-lower forms go in too (a mixed-case tail is not recognised).
        // Only for patterns written in one case (hex, base32, escapes): a mixed-case pattern
        // (base64) flipped to one case would make ordinary short words look like cut secrets.
        for p in folded {
            let mixed = p.iter().any(u8::is_ascii_lowercase) && p.iter().any(u8::is_ascii_uppercase);
            if let (Some(l), false) = (raw.get(p), mixed) {
                prefixes.push((p.to_ascii_uppercase().into_boxed_slice(), l.0));
                prefixes.push((p.to_ascii_lowercase().into_boxed_slice(), l.0));
            }
        }
        prefixes.sort_unstable();
        prefixes.dedup_by(|a, b| a.0 == b.0);
        let raw = compile(raw, folded, markers.join("\0").as_bytes())?;
        let norm_set = compile_norm(&norm, &norm_folded, markers);
        for (mut p, _) in norm {
            zeroize::Zeroize::zeroize(&mut p);
        }
        for mut p in norm_folded {
            zeroize::Zeroize::zeroize(&mut p);
        }
        let norm = norm_set?;
        Ok(Layer { raw, norm, prefixes })
    }

    /// True when one of this layer's patterns occurs inside one of `markers` (so matching it
    /// would redact a marker's text).
    fn occurs_in(&self, markers: &[String]) -> bool {
        let inside = |set: &Option<PatternSet>, text: &[u8]| {
            let mut hits = Vec::new();
            if let Some(p) = set {
                p.matcher.find_all_unfiltered(text, &mut hits);
            }
            hits.iter().any(|h| !text[h.start..h.end].contains(&0))
        };
        let normalized: Vec<Vec<u8>> = markers.iter().map(|l| normalize::normalize_str(l)).collect();
        inside(&self.raw, markers.join("\0").as_bytes()) || inside(&self.norm, &normalized.join(&0u8))
    }
}

/// `[REDACTED:LABEL]`.
fn marker(label: &str) -> String {
    format!("[REDACTED:{label}]")
}

/// A compiled pattern set: the matcher and the label of each pattern.
struct PatternSet {
    matcher: Matcher,
    labels: Vec<u32>,
}

/// Drops patterns that occur inside a marker (their text is public: it is in the marker; matching
/// them would make scrubbing not idempotent) and compiles the rest. `markers` are the markers
/// joined by NUL bytes.
/// `folded` are the patterns matched ASCII-case-insensitively (also checked against the markers
/// case-insensitively).
fn compile(
    map: &HashMap<Vec<u8>, (u32, usize)>,
    folded: &HashSet<Vec<u8>>,
    markers: &[u8],
) -> Result<Option<PatternSet>, BuildError> {
    // (case-insensitive, secret order, pattern, label): deterministic pattern order (and so
    // deterministic labels on ties), exact patterns first, as the matcher numbers its
    // case-insensitive set after the exact one.
    let mut entries: Vec<(bool, usize, &[u8], u32)> =
        map.iter().map(|(p, &(label, order))| (folded.contains(p), order, p.as_slice(), label)).collect();
    entries.sort_unstable();
    let built = loop {
        if entries.is_empty() {
            break Ok(None);
        }
        let split = entries.partition_point(|e| !e.0);
        let pats: Vec<&[u8]> = entries.iter().map(|e| e.2).collect();
        let matcher = match Matcher::with_nocase(&pats[..split], &pats[split..]) {
            Ok(m) => m,
            Err(e) => break Err(BuildError::Automaton(e.to_string())),
        };
        let mut hits = Vec::new();
        matcher.find_all_unfiltered(markers, &mut hits);
        let inside: HashSet<usize> =
            hits.iter().filter(|h| !markers[h.start..h.end].contains(&0)).map(|h| h.pattern).collect();
        if inside.is_empty() {
            let labels = entries.iter().map(|e| e.3).collect();
            break Ok(Some(PatternSet { matcher, labels }));
        }
        let mut i = 0;
        entries.retain(|_| {
            i += 1;
            !inside.contains(&(i - 1))
        });
    };
    built
}

fn compile_norm(
    map: &HashMap<Vec<u8>, (u32, usize)>,
    folded: &HashSet<Vec<u8>>,
    labels: &[String],
) -> Result<Option<PatternSet>, BuildError> {
    let joined: Vec<Vec<u8>> = labels.iter().map(|l| normalize::normalize_str(l)).collect();
    compile(map, folded, &joined.join(&0u8))
}

/// A redaction: original byte range and label index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Span {
    start: usize,
    end: usize,
    label: u32,
}

/// Redacts known secrets, their encodings and well-known token formats. Immutable; `Send + Sync`;
/// share it as `Arc<Scrubber>`.
pub struct Scrubber {
    /// The indexes built with the scrubber, then one per addition since
    /// ([`Scrubber::with_added`]).
    layers: Vec<Arc<Layer>>,
    /// What each added layer was compiled from (`added[i]` for `layers[i + 1]`), so that a
    /// handle's secrets can be taken out again.
    added: Vec<Arc<Sources>>,
    rules: Option<Arc<Rules>>,
    labels: Arc<Labels>,
    rule_base: usize,
    known: usize,
    /// SHA-256 of (label, value) of every secret given to the builder, so the broker can tell
    /// whether a freshly resolved value is already covered without holding values itself.
    fingerprints: Arc<HashSet<[u8; 32]>>,
    /// The same for the secrets added since.
    added_fingerprints: HashSet<[u8; 32]>,
}

/// The shortest trailing fragment [`Scrubber::scrub_cut_tail`] redacts. A cut that keeps 3 bytes
/// of a secret or of one of its encodings gives away at most 3 characters (about 18 bits of a
/// base64 token, 12 of hex); a lower floor would redact ordinary endings such as `the` whenever
/// some secret happens to begin with them.
pub const MIN_CUT_FRAGMENT: usize = 4;

/// The floor for a form written in hex digits only (hex encodings, and all-digit or all-hex
/// secrets): two digits hold one byte, so 5 digits give away at most 2½ bytes, within the same
/// bound as [`MIN_CUT_FRAGMENT`] for denser forms. A floor of 4 digits would redact one cut text
/// in about 65,536 ending in hex (UUIDs, digests) per hex form of every known secret.
pub const MIN_CUT_FRAGMENT_HEX: usize = 6;

/// The shortest trailing fragment of `form` (a secret or one of its encodings) that
/// [`Scrubber::scrub_cut_tail`] redacts: [`MIN_CUT_FRAGMENT_HEX`] when the form is written in
/// hex digits only, [`MIN_CUT_FRAGMENT`] otherwise.
pub fn min_cut_fragment(form: &[u8]) -> usize {
    if !form.is_empty() && form.iter().all(u8::is_ascii_hexdigit) {
        MIN_CUT_FRAGMENT_HEX
    } else {
        MIN_CUT_FRAGMENT
    }
}

/// SHA-256 over the label, a separator and the value.
fn fingerprint(label: &HandleName, secret: &Secret) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(label.as_str().as_bytes());
    ctx.update(&[0]);
    ctx.update(secret.expose_secret());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

impl Scrubber {
    /// True when this scrubber was built with `secret` under `label` (a rotated or newly
    /// resolved value is not).
    pub fn knows(&self, label: &HandleName, secret: &Secret) -> bool {
        let f = fingerprint(label, secret);
        self.fingerprints.contains(&f) || self.added_fingerprints.contains(&f)
    }

    /// A scrubber that also covers `secrets`, without rebuilding this one: their patterns are
    /// compiled into a layer of their own (a small index), and
    /// every layer this one has is shared. Adding costs the new secrets' compilation only,
    /// whatever was added before; scanning costs one more pass per text per addition, so
    /// rebuild from all secrets with [`ScrubberBuilder`] when [`Scrubber::added_count`] grows
    /// (the broker does so past a small bound, and when the store's secrets change, off the
    /// request path). Fails with [`BuildError::MarkerConflict`] when a new handle's marker would
    /// contain a pattern of an existing layer (scrubbing would then not be idempotent): build
    /// from all secrets.
    pub fn with_added(&self, secrets: &[(HandleName, Secret)]) -> Result<Scrubber, BuildError> {
        let mut labels = (*self.labels).clone();
        let mut sources = Sources::keeping();
        sources.collect(secrets, &mut labels);
        let new_markers = &labels.markers[self.labels.markers.len()..];
        if !new_markers.is_empty() && self.layers.iter().any(|l| l.occurs_in(new_markers)) {
            return Err(BuildError::MarkerConflict);
        }
        let layer = Layer::compile(&sources, &labels.markers)?;
        let mut added_fingerprints = self.added_fingerprints.clone();
        added_fingerprints.extend(secrets.iter().map(|(l, s)| fingerprint(l, s)));
        let mut layers = self.layers.clone();
        layers.push(Arc::new(layer));
        let mut added = self.added.clone();
        let known = self.known + sources.known;
        added.push(Arc::new(sources));
        Ok(Scrubber {
            layers,
            known,
            added,
            rules: self.rules.clone(),
            labels: Arc::new(labels),
            rule_base: self.rule_base,
            fingerprints: self.fingerprints.clone(),
            added_fingerprints,
        })
    }

    /// How many secrets were added with [`Scrubber::with_added`] since this scrubber's
    /// index was built.
    pub fn added_count(&self) -> usize {
        self.added.iter().map(|a| a.seen).sum()
    }

    /// Whether [`Scrubber::without_added`] for `label` compiles a layer again (a layer holding
    /// its secrets holds others' too). When it does not, taking them out copies a few pointers
    /// and a set of fingerprints, and needs no thread of its own.
    pub fn without_added_compiles(&self, label: &HandleName) -> bool {
        let Some(&l) = self.labels.of.get(label.as_str()) else {
            return false;
        };
        self.added.iter().any(|s| s.holds(l) && s.holds_other_than(l))
    }

    /// This scrubber without the secrets that were added under `label` (a lease's handle once
    /// the lease is revoked), so that values no longer valid do not pile up; `None` when none
    /// were. A layer that held only that handle's secrets is dropped, without compiling
    /// anything; one that also held others' is compiled again without them. Secrets the
    /// scrubber was built with stay until the next full build.
    pub fn without_added(&self, label: &HandleName) -> Result<Option<Scrubber>, BuildError> {
        let Some(&l) = self.labels.of.get(label.as_str()) else {
            return Ok(None);
        };
        let mut layers = vec![self.layers[0].clone()];
        let mut added = Vec::with_capacity(self.added.len());
        let mut gone = Vec::new();
        for (sources, layer) in self.added.iter().zip(&self.layers[1..]) {
            if !sources.holds(l) {
                layers.push(layer.clone());
                added.push(sources.clone());
                continue;
            }
            let (rest, out) = sources.without(l);
            gone.extend(out);
            if rest.seen > 0 {
                layers.push(Arc::new(Layer::compile(&rest, &self.labels.markers)?));
                added.push(Arc::new(rest));
            }
        }
        if gone.is_empty() {
            return Ok(None);
        }
        let mut added_fingerprints = self.added_fingerprints.clone();
        for f in &gone {
            added_fingerprints.remove(f);
        }
        Ok(Some(Scrubber {
            layers,
            known: self.known - gone.len().min(self.known),
            added,
            rules: self.rules.clone(),
            labels: self.labels.clone(),
            rule_base: self.rule_base,
            fingerprints: self.fingerprints.clone(),
            added_fingerprints,
        }))
    }

    /// The raw and normalized pattern sets of every layer.
    fn raw_sets(&self) -> impl Iterator<Item = &PatternSet> {
        self.layers.iter().filter_map(|l| l.raw.as_ref())
    }

    fn norm_sets(&self) -> impl Iterator<Item = &PatternSet> {
        self.layers.iter().filter_map(|l| l.norm.as_ref())
    }

    /// The longest known-value pattern, if there is one.
    fn longest_raw(&self) -> Option<usize> {
        self.raw_sets().map(|p| p.matcher.max_len()).max()
    }

    /// The shortest pattern a decoded layer is matched with (raw or normalized), in bytes: a
    /// shorter layer holds no hit (`decode::Matching::shortest`).
    fn shortest_pattern(&self) -> usize {
        self.raw_sets().chain(self.norm_sets()).map(|p| p.matcher.min_len()).filter(|&n| n > 0).min().unwrap_or(0)
    }

    /// A scrubber with the pattern rules only.
    pub fn empty() -> Scrubber {
        ScrubberBuilder::new().build()
    }

    /// Returns the scrubbed text and how many redactions were made.
    pub fn scrub_str<'a>(&self, text: &'a str) -> (Cow<'a, str>, usize) {
        let spans = self.find_spans(text);
        if spans.is_empty() {
            return (Cow::Borrowed(text), 0);
        }
        let mut count = spans.len();
        let (mut out, mut markers) = self.replace(text, &spans);
        // A later pass can only find a match that overlaps a marker just inserted (one that
        // straddles its edge), so it looks only at windows around the new markers.
        let reach = self.rescan_reach();
        for _ in 1..MAX_PASSES {
            let mut again = Vec::new();
            for (s, e) in windows(&out, &markers, reach) {
                again.extend(self.find_spans(&out[s..e]).into_iter().map(|sp| Span {
                    start: sp.start + s,
                    end: sp.end + s,
                    label: sp.label,
                }));
            }
            if again.is_empty() {
                break;
            }
            let again = merge(&out, again);
            count += again.len();
            (out, markers) = self.replace(&out, &again);
        }
        (Cow::Owned(out), count)
    }

    /// `text` cut to its first `max_chars` characters (on a character boundary) and scrubbed:
    /// whole occurrences by [`Scrubber::scrub_str`], and, when the bound cut something off,
    /// what the cut left of a secret that straddled it by [`Scrubber::scrub_cut_tail`]. For
    /// agent text kept short (a tool's name, an argument's name), so that the bound never keeps
    /// the start of a secret.
    pub fn scrub_bounded(&self, text: &str, max_chars: usize) -> String {
        let bounded = match text.char_indices().nth(max_chars) {
            Some((end, _)) => &text[..end],
            None => return self.scrub_str(text).0.into_owned(),
        };
        let (scrubbed, _) = self.scrub_str(bounded);
        self.scrub_cut_tail(&scrubbed).0.into_owned()
    }

    /// How far around a marker a straddling match can reach.
    fn rescan_reach(&self) -> usize {
        let longest = self.raw_sets().chain(self.norm_sets()).map(|p| p.matcher.max_len()).max();
        // Normalized matches may be spread out by interleaved characters in the original, and a
        // decoded match may come from an escaped form several times the pattern's length.
        8 * longest.unwrap_or(0) + 256
    }

    /// Scrubs every string (values and object keys) in place; returns the count.
    ///
    /// Two keys that scrub to the same marker are kept apart with a ` #2`, ` #3`... suffix.
    pub fn scrub_json(&self, value: &mut serde_json::Value) -> usize {
        use serde_json::Value;
        match value {
            Value::String(s) => {
                let (out, n) = self.scrub_str(s);
                if let Cow::Owned(o) = out {
                    *s = o;
                }
                n
            }
            Value::Array(items) => items.iter_mut().map(|v| self.scrub_json(v)).sum(),
            Value::Object(map) => {
                let mut n = 0;
                let needs_rename = map.keys().any(|k| !self.find_spans(k).is_empty());
                if needs_rename {
                    let old = std::mem::take(map);
                    for (k, v) in old {
                        let (key, c) = self.scrub_str(&k);
                        n += c;
                        let mut key = key.into_owned();
                        if map.contains_key(&key) {
                            let base = key.clone();
                            let mut i = 2;
                            while map.contains_key(&key) {
                                key = format!("{base} #{i}");
                                i += 1;
                            }
                        }
                        map.insert(key, v);
                    }
                }
                n + map.values_mut().map(|v| self.scrub_json(v)).sum::<usize>()
            }
            _ => 0,
        }
    }

    /// Redacts what a cut leaves of a secret that straddled it: the longest suffix of `text`
    /// (at least [`min_cut_fragment`] bytes of that form: 4, or 6 hex digits) that is the
    /// beginning of a known secret or of one of its encodings. Call it on every text that was cut at a size cap or a chunk boundary,
    /// after [`Scrubber::scrub_str`] (which finds whole occurrences); [`Scrubber::scrub_result`]
    /// does both. Time: O(L log P) for the longest pattern L and pattern count P.
    pub fn scrub_cut_tail<'a>(&self, text: &'a str) -> (Cow<'a, str>, usize) {
        match self.cut_tail(text) {
            Some((start, label)) => {
                let mut out = String::with_capacity(start + 32);
                out.push_str(&text[..start]);
                out.push_str(&self.labels.markers[label as usize]);
                (Cow::Owned(out), 1)
            }
            None => (Cow::Borrowed(text), 0),
        }
    }

    /// Where the longest suffix of `text` (at least [`MIN_CUT_FRAGMENT`] bytes) that begins a
    /// known pattern starts, and that pattern's label.
    fn cut_tail(&self, text: &str) -> Option<(usize, u32)> {
        let longest = self.layers.iter().flat_map(|l| l.prefixes.iter()).map(|(p, _)| p.len()).max().unwrap_or(0);
        if text.len() < MIN_CUT_FRAGMENT || longest < MIN_CUT_FRAGMENT {
            return None;
        }
        let bytes = text.as_bytes();
        // The longest fragment first: from the earliest start a pattern could cover.
        let first = bytes.len().saturating_sub(longest);
        for start in first..=bytes.len() - MIN_CUT_FRAGMENT {
            if !text.is_char_boundary(start) {
                continue;
            }
            let frag = &bytes[start..];
            // The patterns that start with `frag` follow the first one not less than it; the
            // fragment counts when it reaches the floor of one of them.
            let found = self.layers.iter().find_map(|l| {
                let i = l.prefixes.partition_point(|(p, _)| &p[..] < frag);
                l.prefixes[i..]
                    .iter()
                    .take_while(|(p, _)| p.starts_with(frag))
                    .find(|(p, _)| frag.len() >= min_cut_fragment(p))
            });
            if let Some((_, label)) = found {
                return Some((start, *label));
            }
        }
        None
    }

    /// Scrubs a tool result in place, the one way results leave the broker: first the result's
    /// leaves read as one text (see [`Scrubber::scrub_across_leaves`]), so a secret split over
    /// several cells or rows is redacted in every cell that holds a part of it (before any one
    /// cell's part is redacted on its own, which would leave its neighbours' parts unmatched);
    /// then every string as [`Scrubber::scrub_json`] does; and, when the result says
    /// `"truncated": true`, the tail of each of its top-level strings as
    /// [`Scrubber::scrub_cut_tail`] does (a size cap cut them). Returns the number of redactions.
    pub fn scrub_result(&self, value: &mut serde_json::Value) -> usize {
        let truncated = value.get("truncated").and_then(serde_json::Value::as_bool) == Some(true);
        let mut n = self.scrub_across_leaves(value, truncated);
        n += self.scrub_json(value);
        if truncated {
            if let Some(map) = value.as_object_mut() {
                for v in map.values_mut() {
                    if let serde_json::Value::String(s) = v {
                        if let (Cow::Owned(o), c) = self.scrub_cut_tail(s) {
                            *s = o;
                            n += c;
                        }
                    }
                }
            }
        }
        n
    }

    /// Scans the leaves of a JSON value (strings, and numbers as written) read as one text, and
    /// redacts, in every leaf that holds a part of it, each known secret or encoding found there:
    /// a secret split across cells or rows (`{"rows": [["sk_li", "ve_4eC3"], ["9HqL", ...]]}`),
    /// or across the strings of any array or object. The leaves are read joined with nothing in
    /// document order (which covers the cells of a row and one row running into the next), and,
    /// for every array of at least two rows (arrays or objects), each column down the rows. Every
    /// part is redacted, however short: together the parts would spell the secret. With `cut`, a
    /// trailing fragment of at least [`MIN_CUT_FRAGMENT`] bytes of a secret at the end of the
    /// document-order text is redacted as [`Scrubber::scrub_cut_tail`] does (a row cap cut a
    /// secret that spans cells). A number that holds a part becomes a string. Only known values
    /// are matched this way (not the pattern rules: joining unrelated cells would make their
    /// matches meaningless). Object keys are not leaves ([`Scrubber::scrub_json`] scrubs them on
    /// their own). Returns the number of redactions.
    pub fn scrub_across_leaves(&self, value: &mut serde_json::Value, cut: bool) -> usize {
        if self.longest_raw().is_none() {
            return 0;
        }
        let mut leaves: Vec<&mut serde_json::Value> = Vec::new();
        let mut columns: Vec<Vec<usize>> = Vec::new();
        leaves::collect(value, &mut leaves, &mut columns);
        if leaves.len() < 2 && !cut {
            return 0;
        }
        let texts: Vec<Cow<'_, str>> = leaves.iter().map(|v| leaves::text(v)).collect();
        let mut parts: Vec<Vec<Span>> = vec![Vec::new(); leaves.len()];
        let doc: Vec<usize> = (0..leaves.len()).collect();
        let mut n = self.scan_joined(&texts, &doc, cut, &mut parts);
        for col in &columns {
            n += self.scan_joined(&texts, col, false, &mut parts);
        }
        let redacted: Vec<(usize, String)> = parts
            .into_iter()
            .enumerate()
            .filter(|(_, p)| !p.is_empty())
            .map(|(i, p)| (i, self.redact_parts(&texts[i], p)))
            .collect();
        drop(texts);
        for (i, r) in redacted {
            *leaves[i] = serde_json::Value::String(r);
        }
        n
    }

    /// Finds known values in the leaves `seq` joined with nothing and records the part of each
    /// match that lies in each leaf; returns the number of matches.
    fn scan_joined(&self, texts: &[Cow<'_, str>], seq: &[usize], cut: bool, parts: &mut [Vec<Span>]) -> usize {
        let mut joined = String::with_capacity(seq.iter().map(|&i| texts[i].len()).sum());
        let mut starts = Vec::with_capacity(seq.len() + 1);
        for &i in seq {
            starts.push(joined.len());
            joined.push_str(&texts[i]);
        }
        starts.push(joined.len());
        let mut spans = self.known_spans(&joined);
        // A cap cuts text, never a number: the tail is looked at only when the last leaf is a
        // string (a number's text is owned, a string's borrowed).
        let ends_in_string = seq.last().is_some_and(|&i| matches!(texts[i], Cow::Borrowed(_)));
        if cut && ends_in_string {
            if let Some((start, label)) = self.cut_tail(&joined) {
                spans.push(Span { start, end: joined.len(), label });
            }
        }
        let spans = merge(&joined, spans);
        for sp in &spans {
            // The last leaf starting at or before the match, then every leaf it reaches.
            let first = starts[..seq.len()].partition_point(|&st| st <= sp.start).saturating_sub(1);
            for k in first..seq.len() {
                let (ls, le) = (starts[k], starts[k + 1]);
                if ls >= sp.end {
                    break;
                }
                let (a, b) = (sp.start.max(ls), sp.end.min(le));
                if a < b {
                    parts[seq[k]].push(Span { start: a - ls, end: b - ls, label: sp.label });
                }
            }
        }
        spans.len()
    }

    /// `text` with the parts replaced by their markers; a part that touches a marker already in
    /// the text takes the whole marker, so markers stay whole.
    fn redact_parts(&self, text: &str, mut parts: Vec<Span>) -> String {
        let markers = marker_ranges(text);
        for p in &mut parts {
            for &(a, b) in &markers {
                if p.start < b && a < p.end {
                    p.start = p.start.min(a);
                    p.end = p.end.max(b);
                }
            }
        }
        let parts = merge(text, parts);
        self.replace(text, &parts).0
    }

    /// True when `text` contains a known secret or any of its encodings, directly or after
    /// normalisation (for outbound checks such as an e-mail body).
    pub fn contains_known_secret(&self, text: &str) -> bool {
        if self.raw_sets().any(|raw| raw.matcher.is_match(text.as_bytes())) {
            return true;
        }
        if self.norm_sets().next().is_some() && normalize::needs_normalization(text) {
            let n = Normalized::new(text);
            if self.norm_sets().any(|norm| norm.matcher.is_match(&n.bytes)) {
                return true;
            }
        }
        let mut spans = Vec::new();
        self.decoded_spans(text, &normalize::sep_words(text.as_bytes()), &mut spans);
        !spans.is_empty()
    }

    /// The decoding passes' work counter for `text` (bytes decoded and rescanned) and whether the
    /// cap stopped them: for tests that bound the work on hostile input.
    #[doc(hidden)]
    pub fn decode_work(&self, text: &str) -> (usize, bool) {
        match self.longest_raw() {
            Some(longest) => {
                let m = decode::Matching { find: &|b, out| self.match_layer(b, out), reach: longest, shortest: self.shortest_pattern() };
                let d = decode::decode_passes_with(text.as_bytes(), &normalize::sep_words(text.as_bytes()), &m);
                (d.work, d.exhausted)
            }
            None => (0, false),
        }
    }

    /// Known-value hits in a decoded layer: the raw patterns, and the normalized ones when the
    /// layer is text that needs normalizing.
    fn match_layer(&self, bytes: &[u8], out: &mut Vec<decode::Found>) {
        let mut hits: Vec<Hit> = Vec::new();
        for raw in self.raw_sets() {
            hits.clear();
            raw.matcher.find_all(bytes, &mut hits);
            out.extend(hits.iter().map(|h| (h.start, h.end, raw.labels[h.pattern])));
        }
        if self.norm_sets().next().is_none() {
            return;
        }
        if let Ok(text) = std::str::from_utf8(bytes) {
            if normalize::needs_normalization(text) {
                let mut spans = Vec::new();
                self.normalized_spans(text, &mut spans);
                out.extend(spans.iter().map(|sp| (sp.start, sp.end, sp.label)));
            }
        }
    }

    /// Hits of the normalized patterns in `text` normalized, mapped back onto `text`.
    fn normalized_spans(&self, text: &str, spans: &mut Vec<Span>) {
        let n = Normalized::new(text);
        let mut hits: Vec<Hit> = Vec::new();
        for norm in self.norm_sets() {
            hits.clear();
            norm.matcher.find_all(&n.bytes, &mut hits);
            spans.extend(hits.iter().map(|h| {
                let (start, end) = n.original_span(h.start, h.end);
                Span { start, end, label: norm.labels[h.pattern] }
            }));
        }
    }

    /// Redactions found by decoding candidate spans of `text` (see [`decode`]). A span that lies
    /// wholly inside a marker is dropped: a marker's text is public, and decoding it into
    /// something that matches must not make scrubbing loop.
    fn decoded_spans(&self, text: &str, seps: &[u64], spans: &mut Vec<Span>) {
        let Some(longest) = self.longest_raw() else { return };
        let m = decode::Matching { find: &|b, out| self.match_layer(b, out), reach: longest, shortest: self.shortest_pattern() };
        let d = decode::decode_passes_with(text.as_bytes(), seps, &m);
        if d.found.is_empty() {
            return;
        }
        let markers = marker_ranges(text);
        for (start, end, label) in d.found {
            if markers.iter().any(|&(a, b)| a <= start && end <= b) {
                continue;
            }
            spans.push(Span { start, end, label });
        }
    }

    /// The number of distinct secrets this scrubber matches (secrets shorter than
    /// [`variants::MIN_SECRET_LEN`] and duplicates are not counted).
    pub fn known_secret_count(&self) -> usize {
        self.known
    }

    /// The number of known-value patterns (raw and encoded forms) in the index.
    pub fn pattern_count(&self) -> usize {
        self.raw_sets().map(|p| p.matcher.pattern_count()).sum()
    }

    /// Redactions for `text`, merged and sorted, on character boundaries.
    fn find_spans(&self, text: &str) -> Vec<Span> {
        let mut spans = self.known_spans(text);
        if let Some(rules) = &self.rules {
            let mut rh = Vec::new();
            rules.find_all(text, &mut rh);
            spans.extend(rh.iter().map(|h| Span {
                start: h.start,
                end: h.end,
                label: (self.rule_base + h.rule) as u32,
            }));
        }
        merge(text, spans)
    }

    /// Known-value redactions for `text` (raw, normalized and decoded), unmerged.
    fn known_spans(&self, text: &str) -> Vec<Span> {
        let mut spans = Vec::new();
        let mut hits: Vec<Hit> = Vec::new();
        for raw in self.raw_sets() {
            hits.clear();
            raw.matcher.find_all(text.as_bytes(), &mut hits);
            spans.extend(hits.iter().map(|h| Span { start: h.start, end: h.end, label: raw.labels[h.pattern] }));
        }
        // One pass of whitespace masks serves the normalisation trigger and the decode scanner.
        let seps = normalize::sep_words(text.as_bytes());
        if self.norm_sets().next().is_some() && normalize::needs_normalization_with(text, &seps) {
            self.normalized_spans(text, &mut spans);
        }
        self.decoded_spans(text, &seps, &mut spans);
        spans
    }

    /// The text with each span replaced by its marker, and where the markers now are.
    fn replace(&self, text: &str, spans: &[Span]) -> (String, Vec<(usize, usize)>) {
        let mut out = String::with_capacity(text.len());
        let mut markers = Vec::with_capacity(spans.len());
        let mut at = 0;
        for s in spans {
            out.push_str(&text[at..s.start]);
            let start = out.len();
            out.push_str(&self.labels.markers[s.label as usize]);
            markers.push((start, out.len()));
            at = s.end;
        }
        out.push_str(&text[at..]);
        (out, markers)
    }
}

/// Where `[REDACTED:...]` markers are in `text`.
fn marker_ranges(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    for s in memchr::memmem::find_iter(b, b"[REDACTED:") {
        if let Some(len) = memchr::memchr(b']', &b[s..]) {
            out.push((s, s + len + 1));
        }
    }
    out
}

/// Merged windows of `reach` bytes on both sides of each marker, on character boundaries.
fn windows(text: &str, markers: &[(usize, usize)], reach: usize) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for &(s, e) in markers {
        let mut a = s.saturating_sub(reach);
        while !text.is_char_boundary(a) {
            a -= 1;
        }
        let mut b = (e + reach).min(text.len());
        while !text.is_char_boundary(b) {
            b += 1;
        }
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Widens spans to character boundaries, then merges overlapping ones; a merged span keeps the
/// label of its earliest (then longest) part.
fn merge(text: &str, mut spans: Vec<Span>) -> Vec<Span> {
    if spans.is_empty() {
        return spans;
    }
    for s in &mut spans {
        while !text.is_char_boundary(s.start) {
            s.start -= 1;
        }
        while !text.is_char_boundary(s.end) {
            s.end += 1;
        }
    }
    spans.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)).then(a.label.cmp(&b.label)));
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for s in spans {
        match out.last_mut() {
            Some(last) if s.start < last.end => last.end = last.end.max(s.end),
            _ => out.push(s),
        }
    }
    out
}

/// The leaves of a JSON result, for [`Scrubber::scrub_across_leaves`].
mod leaves {
    use serde_json::Value;
    use std::borrow::Cow;
    use std::collections::HashMap;

    /// Where a cell sits in its row: an index in an array row, a key in an object row.
    #[derive(PartialEq, Eq, Hash)]
    enum Column {
        Index(usize),
        Key(String),
    }

    fn is_leaf(v: &Value) -> bool {
        matches!(v, Value::String(_) | Value::Number(_))
    }

    /// The text of a leaf: a string as is, a number as JSON writes it.
    pub(super) fn text(v: &Value) -> Cow<'_, str> {
        match v {
            Value::String(s) => Cow::Borrowed(s.as_str()),
            other => Cow::Owned(other.to_string()),
        }
    }

    /// Pushes every leaf of `v` in document order, and for every array of at least two rows
    /// (arrays or objects) the leaf indices of each column in row order.
    pub(super) fn collect<'a>(v: &'a mut Value, leaves: &mut Vec<&'a mut Value>, columns: &mut Vec<Vec<usize>>) {
        match v {
            Value::String(_) | Value::Number(_) => leaves.push(v),
            Value::Array(items) => {
                let table = items.len() >= 2 && items.iter().all(|i| i.is_array() || i.is_object());
                if !table {
                    for item in items.iter_mut() {
                        collect(item, leaves, columns);
                    }
                    return;
                }
                let mut cols: HashMap<Column, Vec<usize>> = HashMap::new();
                for row in items.iter_mut() {
                    let cells: Vec<(Column, &'a mut Value)> = match row {
                        Value::Array(cells) => cells.iter_mut().enumerate().map(|(i, c)| (Column::Index(i), c)).collect(),
                        Value::Object(map) => map.iter_mut().map(|(k, c)| (Column::Key(k.clone()), c)).collect(),
                        _ => Vec::new(),
                    };
                    for (col, cell) in cells {
                        if is_leaf(cell) {
                            cols.entry(col).or_default().push(leaves.len());
                            leaves.push(cell);
                        } else {
                            collect(cell, leaves, columns);
                        }
                    }
                }
                columns.extend(cols.into_values().filter(|c| c.len() >= 2));
            }
            Value::Object(map) => {
                for item in map.values_mut() {
                    collect(item, leaves, columns);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrubber(pairs: &[(&str, &str)]) -> Scrubber {
        let mut b = ScrubberBuilder::new();
        for (h, s) in pairs {
            b.add_secret(&HandleName::parse(h).unwrap(), &Secret::from_str_value(s));
        }
        b.build()
    }

    #[test]
    fn scrubber_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Scrubber>();
    }

    #[test]
    fn plain_secret_is_replaced_by_handle_marker() {
        let s = scrubber(&[("DB_PROD", "hunter2-canary-value")]);
        let (out, n) = s.scrub_str("pw=hunter2-canary-value;");
        assert_eq!(out, "pw=[REDACTED:DB_PROD];");
        assert_eq!(n, 1);
        assert_eq!(s.known_secret_count(), 1);
        assert!(matches!(s.scrub_str("nothing here").0, Cow::Borrowed(_)));
    }

    #[test]
    fn knows_exactly_the_secrets_it_was_built_with() {
        let h = HandleName::parse("API").unwrap();
        let s = ScrubberBuilder::new().add_secret(&h, &Secret::from_str_value("value-one-123")).build();
        assert!(s.knows(&h, &Secret::from_str_value("value-one-123")));
        assert!(!s.knows(&h, &Secret::from_str_value("value-two-123")), "a rotated value is not known");
        assert!(!s.knows(&HandleName::parse("OTHER").unwrap(), &Secret::from_str_value("value-one-123")));
    }

    #[test]
    fn short_secrets_are_not_matched() {
        let s = scrubber(&[("SHORT", "abc12")]);
        assert_eq!(s.known_secret_count(), 0);
        assert_eq!(s.scrub_str("abc12 abc12").1, 0);
    }

    #[test]
    fn patterns_inside_markers_are_dropped() {
        // A secret that is a substring of a marker is public already; matching it would make
        // scrubbing loop.
        let s = scrubber(&[("REDACTED_X", "REDACTED"), ("DB", "real-secret-1")]);
        let (out, _) = s.scrub_str("real-secret-1");
        assert_eq!(out, "[REDACTED:DB]");
        assert_eq!(s.scrub_str(&out).1, 0);
    }

    #[test]
    fn merge_keeps_earliest_label_and_joins_overlaps() {
        let spans = vec![
            Span { start: 5, end: 9, label: 2 },
            Span { start: 0, end: 6, label: 1 },
            Span { start: 9, end: 12, label: 3 },
        ];
        let m = merge("abcdefghijklmnop", spans);
        assert_eq!(m, vec![Span { start: 0, end: 9, label: 1 }, Span { start: 9, end: 12, label: 3 }]);
    }
}
