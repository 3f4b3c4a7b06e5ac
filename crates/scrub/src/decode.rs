//! Decoding passes over candidate spans (T04): forms of a secret that no generated variant covers
//! (nested encodings, line-wrapped base64, partial escaping, separators between characters,
//! mixed case in a case-insensitive encoding under another encoding, reversed encodings,
//! encodings spelled with invisible characters, full-width forms or homoglyphs).
//!
//! Cheap scanners find candidate spans; each is decoded into a scratch buffer (a *layer*) on which
//! the same known-value matcher runs, and every hit is mapped back to the original text:
//!
//! | scanner | finds | decoded as | a hit redacts |
//! |---|---|---|---|
//! | the whitespace masks the normalisation trigger computes anyway (one bit per byte, 64 bytes per step), then an exact SWAR class test on each whitespace-free 8-byte word at offsets 0, 2, 4 and 6 mod 8 (a run of 9 holds one wherever it starts): all bytes in `[A-Za-z0-9+,-./:_]` (a superset) | runs of ≥ [`MIN_BLOCK_RUN`] encoded-looking bytes, line breaks allowed inside | base64 (both alphabets, 4 character offsets), base32 (8 offsets, any case), hex (2 offsets) | the whole encoded run |
//! | a whitespace-free word whose even (or odd) bytes are equal | `s-e-c-r-e-t`: one non-blank separator from [`SEPARATORS`] between every character | the characters alone | the separated run's covering range |
//! | inside class runs | `de:ad:be:ef`: one non-blank separator between every hex pair | the bytes the pairs stand for | the covering range |
//! | SWAR: the bytes below `+` of a word are exactly every third one | `de ad be ef` (blank separators) | the bytes the pairs stand for | the covering range |
//! | `memchr3` of `=`/`x`/`X` (shared with the escape triggers), `0` before the `x` | `0xde,0xad`, `0xde, 0xad`, `0xDE 0xAD`, `0XDE,0XAD` | the bytes the tokens stand for | the covering range |
//! | `memchr` of `%`, `\`, `&`, `=` followed by an escape | percent, JSON/JS/C backslash, HTML/XML character references, quoted-printable | one family per layer, the rest copied, over regions of windows around the escapes of every family joined by the candidate runs between them (`Escapes`) | the escapes and characters that decoded to the match |
//!
//! Each layer is scanned again, to [`MAX_DEPTH`] layers, so escapes of encodings and encodings of
//! escapes are found (base64 of hex, percent of base64, hex with separators of base64...), and
//! the matcher itself holds depth-2 encodings, so a depth-2 chain is usually found one layer
//! early. Scanners are linear (no backtracking); total decoding is capped at
//! [`WORK_FACTOR`] times the text length plus [`WORK_BASE`] bytes, after which remaining candidates
//! are left undecoded (the generated variants still apply) and [`Decoded::exhausted`] is set.
//!
//! Layers are made level by level: every layer one decoding deep (with its re-spellings) is made
//! and matched before any layer two deep, and so on. The cap therefore stops a chain of `n`
//! decodings only when the chains of fewer than `n` have used it up: ordinary text dense with
//! escapes, whose nested and reversed decodings reach the cap, still has every single decoding
//! matched (1 MiB of HTML with entities and escaped URLs: 54 times its size over all levels, 6
//! in the first). A layer waiting for its level keeps its bytes and its map back to the text
//! (`Step`s in `Maps`); the waiting layers may hold [`FRONTIER_FACTOR`] times the text plus
//! [`WORK_BASE`] bytes, and a decoded layer that does not fit is scanned at once, depth first
//! (hostile input that decodes into millions of small layers: 10 MiB of random base64 holds
//! the first level's 3.5 million layers otherwise).
//!
//! Two re-spellings of a layer are layers too, and do not count towards [`MAX_DEPTH`]:
//! - the **canonical form** (`normalize::canonical`) of a layer that holds invisible or format
//!   characters, full-width forms or homoglyphs (UTF-8 parts of a layer that is partly binary
//!   count too): base64 with zero-width spaces inside, hex in full-width digits, a Cyrillic `а` in
//!   a base32 run are decoded from it;
//! - the **reversal** of every candidate region (each encoded-looking run with its padding and
//!   the neighbouring lines, each run of hex pairs, and the token around each escape that decodes
//!   when read backwards, `14%` being `%41`): a reversed encoding, or an encoding of a reversed
//!   one, is decoded from it. A reversed layer does not reverse again, and a canonical one is not
//!   made canonical again, until a decoding step lies between.
//!
//! Hits in a decoded layer of text are also matched against the skeleton patterns when the
//! layer is UTF-8 that needs normalizing (the caller's matcher closure decides).
//!
//! No layer is made shorter than the shortest pattern the matcher holds ([`Matching::shortest`]):
//! every decoding and re-spelling yields at most as many bytes as it read, so such a layer and
//! everything it could spawn are too short to hold a hit. With the secrets of a typical broker
//! (tokens of 24 bytes or more) the short texts of a result (header names and values, a status
//! line, a date) make no layer at all.

use crate::normalize::Canonical;

/// At most this many decoded layers are stacked on the text (decoding 50 nested encodings stops
/// here; the innermost layers are simply not reached).
pub const MAX_DEPTH: usize = 4;
/// Total decoded bytes allowed per text: `WORK_FACTOR * len + WORK_BASE`. One level of base64,
/// base32 and hex at all offsets over a run of base32-and-hex-valid characters costs about
/// 9 times the run; the rest is headroom for nesting.
pub const WORK_FACTOR: usize = 16;
/// See [`WORK_FACTOR`].
pub const WORK_BASE: usize = 1 << 20;
/// Layers waiting for their level may hold `FRONTIER_FACTOR * len + WORK_BASE` bytes (each
/// counted with [`LAYER_OVERHEAD`]); a decoded layer that would not fit is scanned at once,
/// depth first, so memory stays bounded on hostile input that decodes into millions of
/// layers. Ordinary text stays well inside it (1 MiB of HTML dense with escapes: 6 times its
/// size in its first level).
pub const FRONTIER_FACTOR: usize = 8;
/// A decoded layer shorter than this is scanned at once, not queued for its level: what it can
/// spawn is a few layers shorter still, and hostile text decodes into millions of them (10 MiB
/// of random base64 into 3.5 million base32 layers of about 8 bytes).
const MIN_WAITING: usize = 64;
/// What a waiting layer costs besides its bytes: its place in the queue, its map step and the
/// allocator's share.
const LAYER_OVERHEAD: usize = std::mem::size_of::<Waiting>() + std::mem::size_of::<Step>() + 64;
/// The fewest bytes a block decoding must yield to be matched: one more than the shortest
/// secret. A secret's own encodings are listed variants at any length; what only decoding
/// finds is an encoding of a re-spelled secret (homoglyphs, full-width forms, invisible
/// characters, separators), and every re-spelling but reversal and case (whose short encodings
/// are listed, or not promised) makes the secret at least one byte longer.
pub const MIN_BLOCK_BYTES: usize = crate::variants::MIN_SECRET_LEN + 1;
/// The shortest encoded-looking run that is decoded: base64 of [`MIN_BLOCK_BYTES`] bytes
/// (base32 and hex runs need more characters, `Block::min_chars`).
pub const MIN_BLOCK_RUN: usize = (MIN_BLOCK_BYTES * 8).div_ceil(6);
// The block scan tests whole 8-byte words at four phases two bytes apart, so it sees every run
// of 9 class bytes or more.
const _: () = assert!(MIN_BLOCK_RUN >= 9);
/// The fewest characters a separated run must have (a secret shorter than
/// [`crate::variants::MIN_SECRET_LEN`] is not matched anyway).
const MIN_SEP_CHARS: usize = 6;
/// Separators recognised between every character (`s-e-c-r-e-t`) or every hex pair
/// (`de:ad:be:ef`). ASCII characters only: a non-ASCII character between separators breaks the
/// run.
pub const SEPARATORS: &[u8] = b" -.:,\n_\t|/";

/// A hit in original-text coordinates: byte range and label.
pub type Found = (usize, usize, u32);

/// The result of the decoding passes over one text.
#[derive(Default)]
pub struct Decoded {
    /// Hits mapped back to the original text (unmerged).
    pub found: Vec<Found>,
    /// Bytes decoded plus bytes scanned in decoded layers (the work counter tests bound).
    pub work: usize,
    /// True when the work cap stopped decoding.
    pub exhausted: bool,
}

/// Index of a [`Step`] in [`Maps`].
type MapId = usize;
/// The text itself.
const TEXT: MapId = 0;

/// Where a layer's bytes came from: one step back towards the text.
enum Step {
    /// The layer is the original text.
    Identity,
    /// Byte `i` comes from original range `m[i]` (char-level decodings).
    Bytes(Vec<(usize, usize)>),
    /// An escape decoding of parent bytes ([`EscapeMap`]): kept sparse, one entry per escape,
    /// since most of a layer is copied and a per-byte map of a whole text would cost more than
    /// decoding it.
    Esc { parent: MapId, esc: EscapeMap },
    /// A block decoding of a run of the parent layer: decoded byte `i` is made of the bits of
    /// characters `off + 8i / bits ..= off + (8i + 7) / bits` of the run. The run is split into
    /// segments at line breaks; segment `(k, p)` starts with character `k` at parent position
    /// `p`; the run (with its `=` padding) ends at `end`. A match redacts every segment it
    /// touches whole: the whole encoded run for a one-line run, the lines it touches for a
    /// wrapped one (so a neighbouring line holding something else survives). Kept sparse so a
    /// 10 MiB run costs no per-byte map.
    Block { parent: MapId, segs: std::rc::Rc<[(usize, usize)]>, end: usize, off: usize, bits: usize },
    /// The layer is parent bytes `[a, b)` written backwards (by character where they are UTF-8):
    /// byte `i` is parent byte `b - 1 - i`, to within the character that holds it.
    Rev { parent: MapId, a: usize, b: usize },
    /// The layer is the canonical form (`normalize::canonical`, its bytes taken out) of parent
    /// bytes from `base` on.
    Canon { parent: MapId, canon: Box<Canonical>, base: usize },
}

/// The steps of every layer of one pass: a layer waiting for its level keeps its way back to
/// the text. Step `id` is at `id - 1`; [`TEXT`] (0) is the text, so a text with no candidate
/// allocates nothing.
struct Maps(Vec<Step>);

impl Maps {
    fn push(&mut self, step: Step) -> MapId {
        self.0.push(step);
        self.0.len()
    }

    fn step(&self, id: MapId) -> &Step {
        match id.checked_sub(1) {
            Some(i) => &self.0[i],
            None => &Step::Identity,
        }
    }

    /// Drops step `id` and every later one.
    fn truncate(&mut self, id: MapId) {
        self.0.truncate(id.saturating_sub(1));
    }

    /// The original range covering bytes `[s, e)` (`e > s`) of the layer `id` maps: every
    /// character that carries a bit of them, so nothing of a match survives its redaction.
    fn span(&self, mut id: MapId, mut s: usize, mut e: usize) -> (usize, usize) {
        loop {
            (id, s, e) = match self.step(id) {
                Step::Identity => return (s, e),
                // Monotone, but decreasing under a reversal.
                Step::Bytes(m) => return (m[s].0.min(m[e - 1].0), m[s].1.max(m[e - 1].1)),
                &Step::Block { parent, ref segs, end, off, bits } => {
                    let seg = |j: usize| segs.partition_point(|&(idx, _)| idx <= j) - 1;
                    let k1 = seg(off + 8 * s / bits);
                    let k2 = seg(off + (8 * e - 1) / bits);
                    let stop = match segs.get(k2 + 1) {
                        Some(&(next, _)) => segs[k2].1 + next - segs[k2].0,
                        None => end,
                    };
                    (parent, segs[k1].1, stop)
                }
                Step::Esc { parent, esc } => (*parent, esc.source(s).0, esc.source(e - 1).1),
                &Step::Rev { parent, a, b } => {
                    debug_assert!(a + e <= b);
                    (parent, b - e, b - s)
                }
                Step::Canon { parent, canon, base } => {
                    let (a, b) = canon.original_span(s, e);
                    (*parent, base + a, base + b)
                }
            };
        }
    }

    /// The map of a char-level decoding of layer `id` whose byte `i` came from layer range
    /// `local[i]`.
    fn compose(&self, id: MapId, local: Vec<(usize, usize)>) -> Step {
        match self.step(id) {
            Step::Identity => Step::Bytes(local),
            _ => Step::Bytes(local.into_iter().map(|(s, e)| self.span(id, s, e)).collect()),
        }
    }
}

/// What the passes match each layer with.
pub(crate) struct Matching<'f> {
    /// Runs the known-value matchers on a layer and reports hits in layer coordinates.
    pub find: &'f dyn Fn(&[u8], &mut Vec<Found>),
    /// How far around an escape its secret may extend (the longest pattern).
    pub reach: usize,
    /// The shortest pattern `find` matches, in bytes (raw or normalized). Every decoding and
    /// re-spelling makes a layer no longer than the bytes it came from (normalisation maps a
    /// character to one byte or none), so a layer shorter than this holds no hit and spawns
    /// none: it is not made. Below [`crate::variants::MIN_SECRET_LEN`] it counts as that.
    pub shortest: usize,
}

/// Runs the decoding passes over `text`. `find` runs the known-value matchers on a layer and
/// reports hits in layer coordinates; `reach` is how far around an escape its secret may extend
/// (the longest pattern). The matchers are not run on `text` itself (the caller did that).
pub fn decode_passes(text: &[u8], reach: usize, find: &dyn Fn(&[u8], &mut Vec<Found>)) -> Decoded {
    decode_passes_with(text, &crate::normalize::sep_words(text), &Matching { find, reach, shortest: 0 })
}

/// [`decode_passes`] with the whitespace masks of `text` (`normalize::sep_words`) already
/// computed (the normalisation trigger computes them anyway), and the shortest pattern known.
pub(crate) fn decode_passes_with(text: &[u8], seps: &[u64], m: &Matching<'_>) -> Decoded {
    run_passes(text, seps, m, true)
}

fn run_passes(text: &[u8], seps: &[u64], m: &Matching<'_>, skip_inert: bool) -> Decoded {
    let mut d = Pass {
        find: m.find,
        reach: m.reach + 8,
        floor: m.shortest.max(crate::variants::MIN_SECRET_LEN),
        budget: text.len().saturating_mul(WORK_FACTOR).saturating_add(WORK_BASE),
        out: Decoded::default(),
        hits: Vec::new(),
        maps: Maps(Vec::new()),
        level: 0,
        waiting: std::array::from_fn(|_| Vec::new()),
        held: 0,
        hold_cap: text.len().saturating_mul(FRONTIER_FACTOR).saturating_add(WORK_BASE),
        queued: 0,
        skip_inert,
    };
    d.layer(text, TEXT, Ctx { seps: Some(seps), ..Ctx::default() });
    // Level by level: every layer one decoding deep is made and matched before any layer two
    // deep, so the work cap leaves the deepest chains undecoded first.
    for level in 1..MAX_DEPTH {
        d.level = level;
        for w in std::mem::take(&mut d.waiting[level]) {
            if d.out.exhausted {
                break;
            }
            d.held -= w.bytes.len() + LAYER_OVERHEAD;
            d.layer(&w.bytes, w.map, w.ctx);
        }
    }
    d.out
}

struct Pass<'f> {
    find: &'f dyn Fn(&[u8], &mut Vec<Found>),
    reach: usize,
    /// The fewest bytes a layer must have to hold a hit ([`Matching::shortest`]).
    floor: usize,
    budget: usize,
    out: Decoded,
    hits: Vec<Found>,
    maps: Maps,
    /// The depth of the layers being scanned.
    level: usize,
    /// Decoded layers made and matched, waiting to be scanned at their level (by depth).
    waiting: [Vec<Waiting>; MAX_DEPTH],
    /// Bytes the waiting layers hold, with [`LAYER_OVERHEAD`] each, and their cap.
    held: usize,
    hold_cap: usize,
    /// Layers queued so far.
    queued: usize,
    /// Layers [`inert`] are not scanned (false only for the tests that check `inert` against
    /// the full scan).
    skip_inert: bool,
}

/// A decoded layer waiting for its level.
struct Waiting {
    bytes: Vec<u8>,
    map: MapId,
    ctx: Ctx<'static>,
}

/// How a layer came to be, which decides what it may spawn.
#[derive(Clone, Default)]
struct Ctx<'a> {
    /// Decoded layers between this one and the text (re-spellings do not count).
    depth: usize,
    /// The bytes an escape decoding changed (sorted ranges): only candidates touching them are
    /// new, the rest were candidates of the parent already, which keeps escape layers from
    /// re-decoding the same runs at every depth. `None`: every byte is new.
    fresh: Option<Vec<(usize, usize)>>,
    /// The layer's whitespace masks, when the caller has them.
    seps: Option<&'a [u64]>,
    /// The escape family that produced the layer.
    from_fam: Option<usize>,
    /// The layer is a reversal, or comes from one without a decoding since: no reversed child.
    reversed: bool,
    /// The layer is a canonical form, or comes from one without a decoding since: no canonical
    /// child.
    canonical: bool,
}

impl Ctx<'_> {
    /// The context of a layer decoded from this one.
    fn decoded(&self, fresh: Option<Vec<(usize, usize)>>, fam: Option<usize>) -> Ctx<'static> {
        Ctx { depth: self.depth + 1, fresh, seps: None, from_fam: fam, reversed: false, canonical: false }
    }

    /// The context of a re-spelling of this layer (reversed or canonical): same depth.
    fn respelled(&self, reversed: bool, canonical: bool) -> Ctx<'static> {
        Ctx {
            depth: self.depth,
            fresh: None,
            seps: None,
            from_fam: None,
            reversed: self.reversed || reversed,
            canonical: self.canonical || canonical,
        }
    }
}

impl Pass<'_> {
    /// Charges `n` bytes of work; false (and `exhausted`) when the cap is reached.
    fn charge(&mut self, n: usize) -> bool {
        if self.out.work.saturating_add(n) > self.budget {
            self.out.exhausted = true;
            return false;
        }
        self.out.work += n;
        true
    }

    /// Matches a decoded or re-spelled layer and maps its hits back; scans a re-spelling at
    /// once, and a decoded layer when its level comes (or at once when the layers waiting for
    /// their level hold [`FRONTIER_FACTOR`] times the text).
    fn child(&mut self, bytes: Vec<u8>, step: Step, ctx: Ctx<'static>) {
        if bytes.len() < self.floor || !self.charge(bytes.len()) {
            return;
        }
        let map = self.maps.push(step);
        self.hits.clear();
        (self.find)(&bytes, &mut self.hits);
        for i in 0..self.hits.len() {
            let (s, e, l) = self.hits[i];
            let (a, b) = self.maps.span(map, s, e);
            self.out.found.push((a, b, l));
        }
        if ctx.depth >= MAX_DEPTH {
            return;
        }
        let cost = bytes.len() + LAYER_OVERHEAD;
        if ctx.depth > self.level && bytes.len() >= MIN_WAITING && self.held + cost <= self.hold_cap {
            self.held += cost;
            self.queued += 1;
            self.waiting[ctx.depth].push(Waiting { bytes, map, ctx });
            return;
        }
        // A re-spelling, or a decoded layer the queue has no room for: scanned now. When
        // nothing under it waits, its steps are dropped with it (stack order).
        let queued = self.queued;
        self.layer(&bytes, map, ctx);
        if self.queued == queued {
            self.maps.truncate(map);
        }
    }

    /// Finds candidates in `bytes` and decodes each into a child layer; spawns the layer's
    /// canonical form and the reversals of its candidate regions.
    fn layer(&mut self, bytes: &[u8], map: MapId, ctx: Ctx<'_>) {
        // Nothing made from fewer bytes than the shortest pattern holds a hit (`Matching`).
        if ctx.depth >= MAX_DEPTH || self.out.exhausted || bytes.len() < self.floor || (self.skip_inert && inert(bytes)) {
            return;
        }
        if !ctx.canonical && crate::normalize::canonical_changes(bytes) {
            for (a, b) in canonical_regions(bytes, self.reach) {
                let mut canon = crate::normalize::canonical(&bytes[a..b]);
                let canon_bytes = std::mem::take(&mut canon.bytes);
                self.child(canon_bytes, Step::Canon { parent: map, canon: Box::new(canon), base: a }, ctx.respelled(false, true));
                if self.out.exhausted {
                    return;
                }
            }
        }
        let fresh = ctx.fresh.as_deref();
        let new = |a: usize, b: usize| -> bool {
            fresh.is_none_or(|f| {
                let i = f.partition_point(|&(_, e)| e <= a);
                f.get(i).is_some_and(|&(s, _)| s < b)
            })
        };
        let mut c = match ctx.seps {
            Some(w) => scan(bytes, w),
            None => scan(bytes, &crate::normalize::sep_words(bytes)),
        };
        c.block_runs.retain(|&(a, b)| new(a, b));
        c.sep_runs.retain(|&(a, b, _)| new(a, b));
        c.hex_sep_runs.retain(|&(a, b, _)| new(a, b));
        // Hex pairs with a non-blank separator are class runs themselves. (Separated single
        // characters are found by the word scan; spaces and line breaks between single
        // characters are the normalisation pass's job, which also runs on decoded layers.)
        for &(a, b) in &c.block_runs {
            let mut p = a;
            while p + 2 < b {
                let x = bytes[p];
                if SEPARATORS.contains(&x) && x > b' ' && bytes.get(p + 3) == Some(&x) {
                    if let Some(r) = sep_run(bytes, p, 3) {
                        c.hex_sep_runs.push(r);
                        p = r.1;
                        continue;
                    }
                }
                p += 1;
            }
        }
        // The runs join escapes that lie far apart into one region (below).
        let mut joins: Vec<(usize, usize)> = c.block_runs.clone();
        joins.extend(c.sep_runs.iter().chain(&c.hex_sep_runs).map(|&(a, b, _)| (a, b)));
        // A run with no alphabet sub-run long enough to decode (`quarterly,`) decodes to
        // nothing in either direction: neither it nor its reversal is a layer.
        c.block_runs.retain(|&(a, b)| decodable(&bytes[a..b]));
        for &(a, b) in &c.block_runs {
            self.block_run(bytes, (a, b), map, &ctx);
        }
        for &(a, b, sep) in &c.sep_runs {
            let (dec, local) = collapse(bytes, a, b, sep, 1);
            let step = self.maps.compose(map, local);
            self.child(dec, step, ctx.decoded(None, None));
        }
        for &(a, b, sep) in &c.hex_sep_runs {
            let (dec, local) = collapse_hex(bytes, a, b, sep);
            let step = self.maps.compose(map, local);
            self.child(dec, step, ctx.decoded(None, None));
        }
        let triggers = Triggers::find(bytes);
        for (at, dec, local) in hex_token_runs(bytes, &triggers.hx) {
            if new(at, at + dec.len() * 4) {
                let step = self.maps.compose(map, local);
                self.child(dec, step, ctx.decoded(None, None));
            }
        }
        let escapes = Escapes::find(bytes, &triggers, self.reach, joins);
        for (j, fam) in Family::ALL.into_iter().enumerate() {
            // Canonical order: in a layer that family `i` produced, a family before `i` decodes
            // only escapes the decoding created (true nesting, `&#37;41`); the rest of a mixed
            // span is reached by decoding the families in order. Without this, dense text is
            // re-decoded once per order of the families.
            let strict = ctx.from_fam.is_some_and(|i| j < i);
            let regions = escapes.regions(j, &new, strict);
            for (a, b) in regions {
                if let Some((dec, esc, changed)) = decode_escapes(bytes, a, b, fam) {
                    self.child(dec, Step::Esc { parent: map, esc }, ctx.decoded(Some(changed), Some(j)));
                }
                if self.out.exhausted {
                    return;
                }
            }
        }
        if !ctx.reversed {
            for (a, b) in reversal_regions(bytes, &c.block_runs, &c.hex_sep_runs, &triggers, &new) {
                let rev = reverse_units(&bytes[a..b]);
                self.child(rev, Step::Rev { parent: map, a, b }, ctx.respelled(true, false));
                if self.out.exhausted {
                    return;
                }
            }
        }
    }

    /// Base64, base32 and hex decodings of the sub-runs of the encoded-looking run `[a, b)`.
    fn block_run(&mut self, bytes: &[u8], (a, b): (usize, usize), map: MapId, ctx: &Ctx<'_>) {
        // Filled by every sub-run (most are too short to decode: `c`, `e` of a word read as hex).
        let (mut chars, mut segs) = (Vec::new(), Vec::new());
        for kind in [Block::Base64, Block::Base32, Block::Hex] {
            let mut i = a;
            while i < b {
                let e = kind.sub_run(bytes, i, b, &mut chars, &mut segs);
                let mut end = e;
                while bytes.get(end) == Some(&b'=') {
                    end += 1;
                }
                i = e.max(i + 1);
                if chars.len() < kind.min_chars() {
                    continue;
                }
                // One copy of the segments for the decodings at every offset.
                let segs: std::rc::Rc<[(usize, usize)]> = segs.as_slice().into();
                for off in 0..kind.offsets() {
                    // A shorter decoding holds at most the secret itself, whose encodings are
                    // listed variants, or less than the shortest pattern (and the decodings
                    // only get shorter).
                    if (chars.len() - off) * kind.bits() as usize / 8 < MIN_BLOCK_BYTES.max(self.floor) {
                        break;
                    }
                    if self.out.exhausted {
                        return;
                    }
                    let dec = kind.decode(&chars[off..]);
                    let step = Step::Block { parent: map, segs: std::rc::Rc::clone(&segs), end, off, bits: kind.bits() as usize };
                    self.child(dec, step, ctx.decoded(None, None));
                }
            }
        }
    }
}

/// Bytes that start an escape ([`Family::trigger`]) or a `0x` hex token, forwards or
/// backwards (`x`, `X`).
const TRIGGER_BYTES: [u8; 6] = [b'%', b'\\', b'&', b'=', b'x', b'X'];

/// True when [`Pass::layer`] finds nothing to decode or re-spell in `bytes`, told in one pass
/// without its scans: no escape or hex-token trigger, no character the canonical form changes,
/// and no run of [`MIN_BLOCK_RUN`] ASCII bytes. Every other candidate lies in such a run: an
/// encoded run holds at least [`MIN_BLOCK_RUN`] alphabet characters in a row (a wrapped one
/// crosses only `\n` and `\r\n` between lines longer still), a separated run
/// [`MIN_SEP_CHARS`] characters and the separators between them, a reversal region one of
/// those or trigger tokens. Most layers decoded from ordinary words are such bytes (ten bytes
/// of binary from `content-length` read as base64), as are short keys and values.
fn inert(bytes: &[u8]) -> bool {
    // A separated run is MIN_SEP_CHARS characters and the separators between them.
    const _: () = assert!(MIN_BLOCK_RUN < 2 * MIN_SEP_CHARS, "a separated run is an ASCII run this long");
    let mut run = 0;
    for &c in bytes {
        if c >= 0x80 {
            run = 0;
            continue;
        }
        run += 1;
        if run >= MIN_BLOCK_RUN || TRIGGER_BYTES.contains(&c) {
            return false;
        }
    }
    !crate::normalize::canonical_changes(bytes)
}

/// The regions of a layer whose reversal is decoded too (a reversed encoding, or an encoding of
/// a reversed one): every encoded-looking run with the `=` padding and neighbouring lines of
/// encoded characters around it, every run of separated hex pairs, and the token (see
/// [`token`]) around every escape that decodes when read backwards (`14%` is `%41` reversed)
/// and every `0x` written backwards. (Forward escapes are decoded over a window of the longest
/// pattern around them; a backward one only over its token, since ordinary text is full of
/// escapes read backwards, `100%` is `%001`, and a window each would cost more than the rest of
/// the scan.) Regions closer than 3 bytes are merged, so a wrapped run whose line breaks were
/// reversed (`\n\r`) is one region. Only regions touching new bytes are kept.
fn reversal_regions(
    bytes: &[u8],
    block_runs: &[(usize, usize)],
    hex_sep_runs: &[(usize, usize, u8)],
    triggers: &Triggers,
    new: &dyn Fn(usize, usize) -> bool,
) -> Vec<(usize, usize)> {
    let mut regions: Vec<(usize, usize)> = Vec::with_capacity(block_runs.len());
    // Read backwards, a wrapped encoding starts with its short last line and its line breaks are
    // `\n\r`: the encoded characters on both sides of a line break join the region whatever the
    // length of the line.
    let enc = |c: u8| is_cls(c) || c == b'=';
    let brk = |c: u8| c == b'\n' || c == b'\r';
    for &(mut a, mut b) in block_runs {
        loop {
            while a > 0 && enc(bytes[a - 1]) {
                a -= 1;
            }
            let k = (1..=2).take_while(|&k| a >= k && brk(bytes[a - k])).last().unwrap_or(0);
            if k > 0 && a > k && enc(bytes[a - k - 1]) {
                a -= k;
            } else {
                break;
            }
        }
        loop {
            while bytes.get(b).is_some_and(|&c| enc(c)) {
                b += 1;
            }
            let k = (0..2).take_while(|&k| bytes.get(b + k).is_some_and(|&c| brk(c))).count();
            if k > 0 && bytes.get(b + k).is_some_and(|&c| enc(c)) {
                b += k;
            } else {
                break;
            }
        }
        regions.push((a, b));
    }
    for &(a, b, _) in hex_sep_runs {
        regions.push((a, b));
    }
    // `0xde` written backwards is `edx0`. (A token shorter than a secret is dropped at once:
    // ordinary text has many, such as `100%`.)
    let min = crate::variants::MIN_SECRET_LEN;
    let mut tokens: Vec<(usize, usize)> = Vec::new();
    // A list of them (`da0x, ed0x`) is one region: tokens at most a two-byte separator apart.
    for &p in &triggers.rhx {
        let (a, b) = (p - 2, (p + 2).min(bytes.len()));
        match tokens.last_mut() {
            Some(last) if a <= last.1 + 2 => last.1 = b,
            _ => tokens.push((a, b)),
        }
    }
    for fam in Family::ALL {
        for &p in triggers.of(fam) {
            // Escapes of one token are seen once.
            if tokens.last().is_some_and(|&(a, b)| a <= p && p < b) {
                continue;
            }
            if decodes_backwards(bytes, p, fam) {
                tokens.push(token(bytes, p));
            }
        }
    }
    regions.extend(tokens.into_iter().filter(|&(a, b)| b - a >= min));
    regions.sort_unstable();
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(regions.len());
    for (a, b) in regions {
        match out.last_mut() {
            Some(last) if a <= last.1 + 2 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out.retain(|&(a, b)| b - a >= min && new(a, b));
    out
}

/// The regions of a layer whose canonical form is decoded: around every character the
/// canonical form changes, the run of non-blank bytes that holds it and `reach` bytes on both
/// sides of that run, merged, on character boundaries. An encoded secret re-spelled in part
/// either holds no blank, and then it lies inside the run whatever its length (a nested
/// encoding is many times the secret's length: hex in HTML entities is about 36 bytes a
/// byte), or it is a spaced run (one blank between every character or pair), which is taken
/// whole ([`spaced_run`]), or it is written with other blanks, and then the re-spelled
/// character is within its length of its ends. Text with no re-spelled character is not copied at all; prose dense with them
/// is copied whole once.
fn canonical_regions(bytes: &[u8], reach: usize) -> Vec<(usize, usize)> {
    let cont = |c: u8| (0x80..0xc0).contains(&c);
    let blank = |c: u8| c <= b' ' || c == 0x7f;
    let mut out: Vec<(usize, usize)> = Vec::new();
    let mut run_end = 0;
    let mut at = 0;
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid();
        for (i, c) in valid.char_indices() {
            if c.is_ascii() || !crate::normalize::changes_char(c) {
                continue;
            }
            let p = at + i;
            // Inside the run of the last one: its region is recorded (and each run is walked
            // once, so the whole is linear).
            if p < run_end {
                continue;
            }
            let mut run_a = p;
            while run_a > 0 && !blank(bytes[run_a - 1]) {
                run_a -= 1;
            }
            let mut run_b = p + c.len_utf8();
            while run_b < bytes.len() && !blank(bytes[run_b]) {
                run_b += 1;
            }
            (run_a, run_b) = spaced_run(bytes, run_a, run_b);
            run_end = run_b;
            let mut a = run_a.saturating_sub(reach);
            while a > 0 && cont(bytes[a]) {
                a -= 1;
            }
            let mut b = (run_b + reach).min(bytes.len());
            while b < bytes.len() && cont(bytes[b]) {
                b += 1;
            }
            match out.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        at += valid.len() + chunk.invalid().len();
    }
    out
}

/// The run `[a, b)` of non-blank bytes, widened to the whole spaced run around it when it is one
/// of short tokens (at most two characters) separated by single blanks: `s e c r e t`,
/// `de ad be ef`, or an encoding of an encoding written one character per line, which can be
/// many times the secret's length, so `reach` bytes around the re-spelled token would not cover
/// it. Each step walks one token, and a run is widened once (`canonical_regions` skips what it
/// covers), so the whole stays linear.
fn spaced_run(bytes: &[u8], mut a: usize, mut b: usize) -> (usize, usize) {
    let blank = |c: u8| c <= b' ' || c == 0x7f;
    let short = |a: usize, b: usize| std::str::from_utf8(&bytes[a..b]).map_or(b - a <= 2, |t| t.chars().nth(2).is_none());
    if !short(a, b) {
        return (a, b);
    }
    while a >= 2 && blank(bytes[a - 1]) && !blank(bytes[a - 2]) {
        let mut t = a - 2;
        while t > 0 && !blank(bytes[t - 1]) {
            t -= 1;
        }
        if !short(t, a - 1) {
            break;
        }
        a = t;
    }
    while b + 1 < bytes.len() && blank(bytes[b]) && !blank(bytes[b + 1]) {
        let mut t = b + 2;
        while t < bytes.len() && !blank(bytes[t]) {
            t += 1;
        }
        if !short(b + 1, t) {
            break;
        }
        b = t;
    }
    (a, b)
}

/// The token around byte `p`: the run of non-blank bytes that holds it, continued across a
/// quoted-printable soft line break written backwards (`\n=` or `\n\r=`). An escaped secret is
/// one token unless it holds literal blanks.
fn token(bytes: &[u8], p: usize) -> (usize, usize) {
    let blank = |c: u8| c <= b' ';
    let mut a = p;
    loop {
        while a > 0 && !blank(bytes[a - 1]) {
            a -= 1;
        }
        // A soft break read backwards: the line break comes before its `=`.
        let k = (1..=2).take_while(|&k| a >= k && matches!(bytes[a - k], b'\n' | b'\r')).last().unwrap_or(0);
        if k > 0 && bytes[a] == b'=' && a > k && !blank(bytes[a - k - 1]) {
            a -= k;
        } else {
            break;
        }
    }
    let mut b = p + 1;
    loop {
        while b < bytes.len() && !blank(bytes[b]) {
            b += 1;
        }
        let k = (0..2).take_while(|&k| bytes.get(b + k).is_some_and(|&c| matches!(c, b'\n' | b'\r'))).count();
        if k > 0 && bytes.get(b + k) == Some(&b'=') {
            b += k;
        } else {
            break;
        }
    }
    (a, b)
}

/// `b` written backwards as a person (or a `reverse()` function) writes it: UTF-8 characters
/// stay whole, other bytes are reversed one by one.
fn reverse_units(b: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; b.len()];
    let mut end = b.len();
    for chunk in b.utf8_chunks() {
        let mut buf = [0u8; 4];
        for c in chunk.valid().chars() {
            let e = c.encode_utf8(&mut buf).as_bytes();
            out[end - e.len()..end].copy_from_slice(e);
            end -= e.len();
        }
        for &x in chunk.invalid() {
            end -= 1;
            out[end] = x;
        }
    }
    out
}

/// The longest escape any family decodes (`\uXXXX\uXXXX`, `&#x0010FFFF;`).
const MAX_ESCAPE: usize = 14;

/// True when the bytes ending at `p` (an escape trigger of `fam`), read backwards, start with an
/// escape of `fam`: the trigger of a reversed escape comes last.
fn decodes_backwards(bytes: &[u8], p: usize, fam: Family) -> bool {
    let lo = (p + 1).saturating_sub(MAX_ESCAPE);
    let mut buf = [0u8; MAX_ESCAPE];
    let n = p + 1 - lo;
    for (k, &x) in bytes[lo..=p].iter().rev().enumerate() {
        buf[k] = x;
    }
    let mut scratch = Vec::new();
    fam.decode_at(&buf[..n], 0, &mut scratch).is_some()
}

/// Candidates found in one layer.
#[derive(Default)]
struct Candidates {
    /// Encoded-looking runs `[a, b)`.
    block_runs: Vec<(usize, usize)>,
    /// `c s c s c` runs `[a, b)` and their separator.
    sep_runs: Vec<(usize, usize, u8)>,
    /// `hh s hh s hh` runs `[a, b)` and their separator.
    hex_sep_runs: Vec<(usize, usize, u8)>,
}

const H: u64 = 0x8080_8080_8080_8080;

#[inline(always)]
const fn splat(b: u8) -> u64 {
    0x0101_0101_0101_0101u64 * b as u64
}

/// High bit of each byte set where the byte (all < 0x80) is in `[lo, hi]`.
#[inline(always)]
fn in_range(v7: u64, lo: u8, hi: u8) -> u64 {
    let ge = v7.wrapping_add(splat(0x80 - lo));
    let gt = v7.wrapping_add(splat(0x7f - hi));
    ge & !gt & H
}

/// The encoded-looking class the block scan uses (a superset of the base64, base32 and hex
/// alphabets and of the separators inside hex dumps): ASCII letters, digits, `+,-./:` and the
/// bytes that fold onto `a-z{|}~DEL` with bit 5 set (`[\]^_`). Must agree with the SWAR form.
#[inline(always)]
fn is_cls(b: u8) -> bool {
    b < 0x80 && ((0x61..=0x7f).contains(&(b | 0x20)) || (0x2b..=0x3a).contains(&b))
}

/// Scans a layer for block and hex-separator candidates from its whitespace masks `seps` (one
/// bit per byte, see `normalize::sep_words`), 64 bytes per step: byte `j` of a mask is the
/// whitespace of word `j`. A word without whitespace may be part of an encoded run; a word whose
/// whitespace is exactly every third byte (`0x49`, `0x92`) may be part of `de ad be ef` (words
/// are tested at four phases two bytes apart, so a run holds one with three separators; the
/// pattern with two, `0x24`, is not tested: it fires on `is to be`). Separators that are class
/// bytes (`:-.,_/|`) are found inside class runs. Only those words reach the exact (slower)
/// tests.
fn scan(bytes: &[u8], seps: &[u64]) -> Candidates {
    let mut c = Candidates::default();
    let mut ends = RunEnds::default();
    for (k, &m) in seps.iter().enumerate() {
        // High bit of each mask byte that is interesting: no whitespace in its word, whitespace
        // every third byte, or every other byte. Only those words are visited.
        let zero = has_byte(m, 0);
        let every3 = has_byte(m, 0x49) | has_byte(m, 0x92);
        let every2 = has_byte(m, 0x55) | has_byte(m, 0xaa);
        // The same words shifted by 2, 4 and 6 bytes (bytes 8j+2 .. 8j+10 and so on): a run
        // of 9 or more class bytes holds a whole word at one of the four phases, so no run of
        // [`MIN_BLOCK_RUN`] escapes by where it starts; a run of [`MIN_SEP_CHARS`] characters
        // with a blank between each (11 bytes) holds a whole word; and a run of as many
        // blank-separated hex pairs (17 bytes) holds whole words at five consecutive even
        // offsets, whose phases mod 3 take every value, so one of them has three separators.
        let next = seps.get(k + 1).copied().unwrap_or(u64::MAX);
        let shifted = |s: u32| {
            let w = (m >> s) | (next << (64 - s));
            Phase { zero: has_byte(w, 0), every3: has_byte(w, 0x49) | has_byte(w, 0x92), every2: has_byte(w, 0x55) | has_byte(w, 0xaa) }
        };
        let quarters = [(2, shifted(2)), (4, shifted(4)), (6, shifted(6))];
        let word = zero | every3 | every2;
        let mut visit = word;
        for (_, q) in &quarters {
            visit |= q.zero | q.every3 | q.every2;
        }
        while visit != 0 {
            let j = (visit.trailing_zeros() / 8) as usize;
            let bit = visit & visit.wrapping_neg();
            visit &= visit - 1;
            let i = k * 64 + j * 8;
            // In position order (the word at 8j, then the shifted ones): a run is found from any
            // of them, and `ends` keeps it recorded once.
            if word & bit != 0 && i + 8 <= bytes.len() {
                full_word(bytes, seps, i, (m >> (8 * j)) as u8, &mut c, &mut ends);
            }
            for (off, q) in &quarters {
                let h = i + off;
                if h + 8 > bytes.len() {
                    break;
                }
                if q.zero & bit != 0 {
                    half_word(bytes, seps, h, &mut c, &mut ends);
                } else if q.every2 & bit != 0 {
                    sep_run_at(bytes, h, &mut c, &mut ends);
                } else if q.every3 & bit != 0 && hex_or_blank_word(word_at(bytes, h)) {
                    scan_word(bytes, h, WordClass { all_cls: false, s3: true }, &mut c, &mut ends);
                }
            }
        }
    }
    c
}

/// Which words of one shifted phase of [`scan`] are visited (high bit of each byte): no
/// whitespace, whitespace every third byte, whitespace every other byte.
struct Phase {
    zero: u64,
    every3: u64,
    every2: u64,
}

/// The tests of [`scan`] on the word at `i` whose whitespace mask byte is `lw` (no whitespace,
/// or whitespace every second or third byte).
#[inline(always)]
fn full_word(bytes: &[u8], seps: &[u64], i: usize, lw: u8, c: &mut Candidates, ends: &mut RunEnds) {
    // `s e c r e t`, one blank between every character: whitespace every other byte. (The
    // normalisation pass finds it too, but a form that must then be decoded, such as partial
    // percent-encoding, needs the collapsed layer.)
    if lw == 0x55 || lw == 0xaa {
        sep_run_at(bytes, i, c, ends);
        return;
    }
    let v = word_at(bytes, i);
    // The exact class test inline: most whitespace-free words of prose fail it (`@`, `'`, `(`)
    // or are too short a run.
    let cls = lw == 0 && i >= ends.block && is_cls_word(v) && may_be_long(bytes, seps, i) && long_enough(bytes, i);
    let s3 = lw != 0 && hex_or_blank_word(v);
    if cls || s3 {
        scan_word(bytes, i, WordClass { all_cls: cls, s3 }, c, ends);
    }
    if lw == 0 {
        sep_word(bytes, i, v, c, ends);
    }
}

/// `s-e-c-r-e-t`, `!.#.$`: bytes 0,2,4,6 (or 1,3,5,7) of the whitespace-free word `v` at `i`
/// equal. A separated run of [`MIN_SEP_CHARS`] characters spans 11 bytes, so it holds a whole
/// word at one of the four phases of [`scan`].
#[inline(always)]
fn sep_word(bytes: &[u8], i: usize, v: u64, c: &mut Candidates, ends: &mut RunEnds) {
    let t2 = v ^ (v >> 16);
    if (t2 & 0x0000_00ff_00ff_00ff == 0) | (t2 & 0x0000_ff00_ff00_ff00 == 0) {
        sep_run_at(bytes, i, c, ends);
    }
}

/// Records the separated run through byte `i` or `i + 1` (one separator between every
/// character), unless one was recorded past `i` already.
#[inline(always)]
fn sep_run_at(bytes: &[u8], i: usize, c: &mut Candidates, ends: &mut RunEnds) {
    if i < ends.sep {
        return;
    }
    for p in [i, i + 1] {
        if let Some(r) = sep_run(bytes, p, 2) {
            ends.sep = r.1;
            c.sep_runs.push(r);
            break;
        }
    }
}

/// The block and separated-run tests of [`scan`] on the whitespace-free word at `h` (a shifted
/// phase).
#[inline(always)]
fn half_word(bytes: &[u8], seps: &[u64], h: usize, c: &mut Candidates, ends: &mut RunEnds) {
    let v = word_at(bytes, h);
    if h >= ends.block && is_cls_word(v) && may_be_long(bytes, seps, h) && long_enough(bytes, h) {
        scan_word(bytes, h, WordClass { all_cls: true, s3: false }, c, ends);
    }
    sep_word(bytes, h, v, c, ends);
}

/// A necessary condition for [`long_enough`], from the whitespace masks alone: the run of
/// non-whitespace bytes around the whitespace-free word at `i` reaches [`MIN_BLOCK_RUN`], or
/// one of its ends is a line break (class bytes are never whitespace, so the class run lies
/// inside this run and a break next to the class run is next to this run).
#[inline(always)]
fn may_be_long(bytes: &[u8], seps: &[u64], i: usize) -> bool {
    let need = MIN_BLOCK_RUN - 8;
    let bit = |p: usize| seps.get(p / 64).is_none_or(|w| (w >> (p % 64)) & 1 == 1);
    let mut l = 0;
    while l < need && i > l && !bit(i - 1 - l) {
        l += 1;
    }
    let mut r = 0;
    while l + r < need && !bit(i + 8 + r) {
        r += 1;
    }
    if l + r >= need {
        return true;
    }
    let brk = |p: usize| matches!(bytes.get(p), Some(b'\n' | b'\r'));
    (i > l && brk(i - 1 - l)) || brk(i + 8 + r)
}

/// The 8 bytes at `i` (`i + 8 <= bytes.len()`) as a little-endian word.
#[inline(always)]
fn word_at(bytes: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap_or([0; 8]))
}

/// True when every byte of `v` is a hex digit or at most a space (the blanks of `de ad be ef`):
/// prose whose blanks fall every third byte (`is to be`) fails it before any run is walked.
#[inline(always)]
fn hex_or_blank_word(v: u64) -> bool {
    let hi = v & H;
    let v7 = v & !H;
    let ok = in_range(v7 | splat(0x20), 0x61, 0x66) | in_range(v7, 0x30, 0x39) | in_range(v7, 0x00, 0x20);
    ok & !hi == H
}

/// True when all 8 bytes of `v` are class bytes ([`is_cls`]).
#[inline(always)]
fn is_cls_word(v: u64) -> bool {
    let hi = v & H;
    let v7 = v & !H;
    let cls = in_range(v7 | splat(0x20), 0x61, 0x7f) | in_range(v7, 0x2b, 0x3a);
    cls & !hi == H
}

/// High bit set in each byte of `x` that equals `b` (exact as a whole: nonzero iff any does).
#[inline(always)]
fn has_byte(x: u64, b: u8) -> u64 {
    let y = x ^ splat(b);
    y.wrapping_sub(splat(1)) & !y & H
}

/// What the fast tests of [`scan`] found in one 8-byte word.
#[derive(Clone, Copy)]
struct WordClass {
    /// It passed the class tests: the start of an encoded-looking run.
    all_cls: bool,
    /// Its whitespace is every third byte: maybe `de ad be ef`.
    s3: bool,
}

/// Where the last block run, separated-hex run and separated run ended, so a run is recorded
/// once.
#[derive(Default)]
struct RunEnds {
    block: usize,
    hex: usize,
    sep: usize,
}

/// The slow path of [`scan`] for the word at `i`.
#[inline(never)]
fn scan_word(bytes: &[u8], i: usize, word: WordClass, c: &mut Candidates, ends: &mut RunEnds) {
    if word.all_cls && i >= ends.block {
        let (a, b) = extend_block(bytes, i, i + 8);
        ends.block = b;
        if b - a >= MIN_BLOCK_RUN {
            c.block_runs.push((a, b));
        }
    }
    if word.s3 && i >= ends.hex {
        for p in [i, i + 1, i + 2] {
            if let Some((a, b, sep)) = sep_run(bytes, p, 3) {
                ends.hex = b;
                c.hex_sep_runs.push((a, b, sep));
                break;
            }
        }
    }
}

/// Quick reject for the usual case, a long word of prose: the class run around the word at `i`
/// (not crossing line breaks) is shorter than [`MIN_BLOCK_RUN`] and no line break is next to
/// it.
#[inline(always)]
fn long_enough(bytes: &[u8], i: usize) -> bool {
    let need = MIN_BLOCK_RUN - 8;
    let mut l = 0;
    while l < need && i > l && is_cls(bytes[i - 1 - l]) {
        l += 1;
    }
    let mut r = 0;
    while l + r < need && bytes.get(i + 8 + r).is_some_and(|&c| is_cls(c)) {
        r += 1;
    }
    l + r >= need || (i > l && break_at(bytes, i - 1 - l) > 0) || break_at(bytes, i + 8 + r) > 0
}

/// Wrapped encodings (MIME 76, PEM 64, most others) have full lines at least this long; a line
/// break is crossed only after such a line, so that two short words on consecutive lines of
/// prose are not joined into a candidate.
const MIN_WRAP_LINE: usize = 16;

/// Length of the line break (`\n` or `\r\n`) starting at `i`, or 0.
fn break_at(bytes: &[u8], i: usize) -> usize {
    match bytes.get(i) {
        Some(b'\n') => 1,
        Some(b'\r') if bytes.get(i + 1) == Some(&b'\n') => 2,
        _ => 0,
    }
}

/// The maximal run around `[a, b)` of class bytes, crossing single line breaks (`\n`, `\r\n`)
/// that follow a line of at least [`MIN_WRAP_LINE`] class bytes and precede a class byte.
fn extend_block(bytes: &[u8], mut a: usize, mut b: usize) -> (usize, usize) {
    let n = bytes.len();
    // Right first: `line` counts the class bytes since the last break.
    let mut line = b - a;
    loop {
        if b < n && is_cls(bytes[b]) {
            b += 1;
            line += 1;
            continue;
        }
        let k = break_at(bytes, b);
        if k > 0 && line >= MIN_WRAP_LINE && bytes.get(b + k).is_some_and(|&c| is_cls(c)) {
            b += k;
            line = 0;
            continue;
        }
        break;
    }
    loop {
        while a > 0 && is_cls(bytes[a - 1]) {
            a -= 1;
        }
        // Cross the break above only if the line above is a full wrapped line.
        let k = if a >= 2 && bytes[a - 1] == b'\n' && bytes[a - 2] == b'\r' {
            2
        } else if a >= 1 && bytes[a - 1] == b'\n' {
            1
        } else {
            0
        };
        if k == 0 || a < k + MIN_WRAP_LINE || !bytes[a - k - MIN_WRAP_LINE..a - k].iter().all(|&c| is_cls(c)) {
            break;
        }
        a -= k;
    }
    (a, b)
}

/// A run of units (`unit` = 1: one character; 2: two hex digits) each followed by the same
/// separator, the last one not, through separator position `p` (or `None`). Returns the covering
/// range and the separator.
fn sep_run(bytes: &[u8], p: usize, stride: usize) -> Option<(usize, usize, u8)> {
    let sep = *bytes.get(p)?;
    if !SEPARATORS.contains(&sep) {
        return None;
    }
    let unit = stride - 1;
    let ok_unit = |at: usize| -> bool {
        (0..unit).all(|k| {
            bytes.get(at + k).is_some_and(|&c| {
                if unit == 2 {
                    c.is_ascii_hexdigit()
                } else {
                    c > 0x20 && c < 0x7f && c != sep
                }
            })
        })
    };
    // A unit must precede p.
    if p < unit || !ok_unit(p - unit) {
        return None;
    }
    let mut first = p - unit; // start of the first unit
    while first >= stride && bytes[first - 1] == sep && ok_unit(first - stride) {
        first -= stride;
    }
    let mut last = p + 1; // start of the last unit
    if !ok_unit(last) {
        return None;
    }
    while bytes.get(last + unit) == Some(&sep) && ok_unit(last + stride) {
        last += stride;
    }
    let units = (last - first) / stride + 1;
    (units >= MIN_SEP_CHARS).then_some((first, last + unit, sep))
}

/// The units of a separated run without their separators, each byte mapped to itself.
fn collapse(bytes: &[u8], a: usize, b: usize, sep: u8, unit: usize) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut out = Vec::with_capacity((b - a) / 2 + 1);
    let mut map = Vec::with_capacity(out.capacity());
    let mut i = a;
    while i < b {
        for k in 0..unit {
            out.push(bytes[i + k]);
            map.push((i + k, i + k + 1));
        }
        i += unit;
        debug_assert!(i >= b || bytes[i] == sep);
        i += 1;
    }
    (out, map)
}

/// A run of `0x` tokens: where it starts, the bytes it stands for, and each byte's token.
type HexTokenRun = (usize, Vec<u8>, Vec<(usize, usize)>);

/// The bytes a `hh s hh s hh` run stands for (hex pairs separated by `sep`), each mapped to its
/// pair: one layer, not a layer of hex digits and another of bytes.
fn collapse_hex(bytes: &[u8], a: usize, b: usize, sep: u8) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut out = Vec::with_capacity((b - a) / 3 + 1);
    let mut map = Vec::with_capacity(out.capacity());
    let mut i = a;
    while i + 1 < b {
        out.push(hex_val(bytes[i]).unwrap_or(0) << 4 | hex_val(bytes[i + 1]).unwrap_or(0));
        map.push((i, i + 2));
        i += 2;
        debug_assert!(i >= b || bytes[i] == sep);
        i += 1;
    }
    (out, map)
}

/// `0xde,0xad`, `0xde, 0xad`, `0XDE 0XAD`: runs of `0x`-prefixed (either case) hex pairs with one
/// consistent separator of one or two non-alphanumeric bytes, decoded to the bytes they stand
/// for (one layer, not two).
fn hex_token_runs(bytes: &[u8], starts: &[usize]) -> Vec<HexTokenRun> {
    let mut out = Vec::new();
    let mut skip_to = 0usize;
    let tok = |at: usize| -> bool {
        bytes.get(at) == Some(&b'0')
            && matches!(bytes.get(at + 1), Some(b'x' | b'X'))
            && bytes.get(at + 2).is_some_and(u8::is_ascii_hexdigit)
            && bytes.get(at + 3).is_some_and(u8::is_ascii_hexdigit)
        // (What follows the two digits is not checked: the last token may run into other text.)
    };
    for &p in starts {
        {
            if p < skip_to || !tok(p) {
                continue;
            }
            // The separator: what lies between this token and the next `0x`.
            let sep_len = match (0..=2).find(|&k| tok(p + 4 + k)) {
                Some(k) if k > 0 && bytes[p + 4..p + 4 + k].iter().all(|c| !c.is_ascii_alphanumeric()) => k,
                _ => continue,
            };
            let sep = &bytes[p + 4..p + 4 + sep_len];
            let (mut dec, mut map) = (Vec::new(), Vec::new());
            let mut at = p;
            loop {
                dec.push(hex_val(bytes[at + 2]).unwrap_or(0) << 4 | hex_val(bytes[at + 3]).unwrap_or(0));
                map.push((at, at + 4));
                let next = at + 4 + sep_len;
                if bytes.get(at + 4..next) == Some(sep) && tok(next) {
                    at = next;
                } else {
                    break;
                }
            }
            skip_to = at + 4;
            if dec.len() >= MIN_SEP_CHARS {
                out.push((p, dec, map));
            }
        }
    }
    out
}

/// True when some block alphabet has a run of at least its [`Block::min_chars`] characters in
/// `run` (a class run), or `run` crosses a line break (a wrapped encoding, left to
/// [`Block::sub_run`]).
fn decodable(run: &[u8]) -> bool {
    let kinds = [Block::Base64, Block::Base32, Block::Hex];
    let mut len = [0usize; 3];
    for &c in run {
        if c == b'\n' || c == b'\r' {
            return true;
        }
        for (k, kind) in kinds.iter().enumerate() {
            len[k] = if kind.val(c).is_some() { len[k] + 1 } else { 0 };
            if len[k] >= kind.min_chars() {
                return true;
            }
        }
    }
    false
}

/// The block encodings tried on encoded-looking runs.
#[derive(Clone, Copy)]
enum Block {
    Base64,
    Base32,
    Hex,
}

fn b64_val(c: u8) -> Option<u8> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' | b'-' => 62,
        b'/' | b'_' => 63,
        _ => return None,
    })
}

fn b32_val(c: u8) -> Option<u8> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a',
        b'2'..=b'7' => c - b'2' + 26,
        _ => return None,
    })
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

impl Block {
    fn val(self, c: u8) -> Option<u8> {
        match self {
            Block::Base64 => b64_val(c),
            Block::Base32 => b32_val(c),
            Block::Hex => hex_val(c),
        }
    }

    fn bits(self) -> u32 {
        match self {
            Block::Base64 => 6,
            Block::Base32 => 5,
            Block::Hex => 4,
        }
    }

    /// Character offsets to decode at (one per possible quantum alignment).
    fn offsets(self) -> usize {
        match self {
            Block::Base64 => 4,
            Block::Base32 => 8,
            Block::Hex => 2,
        }
    }

    /// The fewest characters that hold [`MIN_BLOCK_BYTES`] bytes; shorter runs are left to the
    /// generated variants.
    fn min_chars(self) -> usize {
        (MIN_BLOCK_BYTES * 8).div_ceil(self.bits() as usize)
    }

    /// The next maximal alphabet run at or after `i` (before `b`), crossing line breaks: where it
    /// ends; its characters (6-bit/5-bit/4-bit values) in `vals` and its segments (index of the
    /// first character of each line, and that character's position) in `segs`, both cleared
    /// first.
    fn sub_run(self, bytes: &[u8], mut i: usize, b: usize, vals: &mut Vec<u8>, segs: &mut Vec<(usize, usize)>) -> usize {
        while i < b && self.val(bytes[i]).is_none() {
            i += 1;
        }
        vals.clear();
        segs.clear();
        segs.push((0, i));
        let mut e = i;
        while i < b {
            if let Some(v) = self.val(bytes[i]) {
                if i != e {
                    segs.push((vals.len(), i));
                }
                vals.push(v);
                i += 1;
                e = i;
                continue;
            }
            let line = vals.len() - segs[segs.len() - 1].0;
            let k = break_at(bytes, i);
            if k > 0 && line >= MIN_WRAP_LINE && i + k < b && self.val(bytes[i + k]).is_some() {
                i += k;
            } else {
                break;
            }
        }
        e
    }

    /// Decodes character values (leniently: trailing partial bits are dropped).
    fn decode(self, vals: &[u8]) -> Vec<u8> {
        let bits = self.bits();
        let mut out = Vec::with_capacity(vals.len() * bits as usize / 8 + 1);
        let (mut acc, mut have) = (0u32, 0u32);
        for &v in vals {
            acc = (acc << bits) | v as u32;
            have += bits;
            if have >= 8 {
                have -= 8;
                out.push((acc >> have) as u8);
                acc &= (1 << have) - 1;
            }
        }
        out
    }
}

/// Escape families, decoded one per layer so that a character that is an escape in one family
/// and literal in another (`=41` inside a JSON string) is not decoded twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    /// `%XX`.
    Percent,
    /// `\uXXXX` (UTF-16, surrogate pairs joined), `\u{X..}`, `\xXX` (a byte), `\n \r \t \b \f \0
    /// \" \' \\ \/`.
    Backslash,
    /// `&#NN;`, `&#xNN;` (any case, leading zeros, `;` optional), named references for the ASCII
    /// characters that have them (`&amp;`, `&lt;`...; `;` optional for the legacy five).
    Html,
    /// Quoted-printable `=XX` and soft line breaks `=\r\n`, `=\n`.
    Qp,
}

impl Family {
    const ALL: [Family; 4] = [Family::Percent, Family::Backslash, Family::Html, Family::Qp];

    fn trigger(self) -> u8 {
        match self {
            Family::Percent => b'%',
            Family::Backslash => b'\\',
            Family::Html => b'&',
            Family::Qp => b'=',
        }
    }

    /// Decodes the escape at `i` (which holds the trigger): the bytes it stands for (appended to
    /// `out`) and its length, or `None` when it is not an escape.
    fn decode_at(self, b: &[u8], i: usize, out: &mut Vec<u8>) -> Option<usize> {
        let hex2 = |at: usize| -> Option<u8> { Some(hex_val(*b.get(at)?)? << 4 | hex_val(*b.get(at + 1)?)?) };
        match self {
            Family::Percent => {
                out.push(hex2(i + 1)?);
                Some(3)
            }
            Family::Qp => {
                if let Some(x) = hex2(i + 1) {
                    out.push(x);
                    return Some(3);
                }
                match (b.get(i + 1), b.get(i + 2)) {
                    (Some(b'\n'), _) => Some(2),
                    (Some(b'\r'), Some(b'\n')) => Some(3),
                    _ => None,
                }
            }
            Family::Backslash => {
                let c = *b.get(i + 1)?;
                let simple = match c {
                    b'n' => Some(b'\n'),
                    b'r' => Some(b'\r'),
                    b't' => Some(b'\t'),
                    b'b' => Some(8),
                    b'f' => Some(12),
                    b'0' => Some(0),
                    b'"' | b'\'' | b'\\' | b'/' => Some(c),
                    _ => None,
                };
                if let Some(s) = simple {
                    out.push(s);
                    return Some(2);
                }
                match c {
                    b'x' | b'X' => {
                        out.push(hex2(i + 2)?);
                        Some(4)
                    }
                    b'u' | b'U' if b.get(i + 2) == Some(&b'{') => {
                        let mut cp = 0u32;
                        let mut k = i + 3;
                        while k < b.len() && k < i + 11 && b[k] != b'}' {
                            cp = cp << 4 | hex_val(b[k])? as u32;
                            k += 1;
                        }
                        if b.get(k) != Some(&b'}') || k == i + 3 {
                            return None;
                        }
                        push_char(out, cp)?;
                        Some(k + 1 - i)
                    }
                    b'u' | b'U' => {
                        // Python's `\UXXXXXXXX`: eight digits, a code point (else `\U` is a JSON
                        // `\u` upper-cased).
                        if c == b'U' && (2..10).all(|k| b.get(i + k).is_some_and(u8::is_ascii_hexdigit)) {
                            let cp = (2..10).fold(0u32, |cp, k| cp << 4 | u32::from(hex_val(b[i + k]).unwrap_or(0)));
                            if push_char(out, cp).is_some() {
                                return Some(10);
                            }
                        }
                        let u1 = u16::from(hex2(i + 2)?) << 8 | u16::from(hex2(i + 4)?);
                        // (`\U` too: a JSON string upper-cased.)
                        if (0xd800..0xdc00).contains(&u1)
                            && b.get(i + 6) == Some(&b'\\')
                            && matches!(b.get(i + 7), Some(b'u' | b'U'))
                        {
                            if let (Some(x), Some(y)) = (hex2(i + 8), hex2(i + 10)) {
                                let u2 = u16::from(x) << 8 | u16::from(y);
                                if (0xdc00..0xe000).contains(&u2) {
                                    let cp = 0x10000 + ((u32::from(u1) - 0xd800) << 10) + (u32::from(u2) - 0xdc00);
                                    push_char(out, cp)?;
                                    return Some(12);
                                }
                            }
                        }
                        push_char(out, u32::from(u1))?;
                        Some(6)
                    }
                    _ => None,
                }
            }
            Family::Html => {
                if b.get(i + 1) == Some(&b'#') {
                    let hex = matches!(b.get(i + 2), Some(b'x' | b'X'));
                    let mut k = i + 2 + hex as usize;
                    let start = k;
                    let mut cp = 0u32;
                    while k < b.len() && k < start + 10 {
                        let d = if hex { hex_val(b[k]) } else { (b[k] as char).to_digit(10).map(|d| d as u8) };
                        let Some(d) = d else { break };
                        cp = cp.saturating_mul(if hex { 16 } else { 10 }).saturating_add(d as u32);
                        k += 1;
                    }
                    if k == start {
                        return None;
                    }
                    push_char(out, cp)?;
                    // The `;` is optional (browsers accept `&#65` followed by a non-digit).
                    return Some(k - i + (b.get(k) == Some(&b';')) as usize);
                }
                const NAMED: &[(&[u8], u8, bool)] = &[
                    (b"amp", b'&', true),
                    (b"lt", b'<', true),
                    (b"gt", b'>', true),
                    (b"quot", b'"', true),
                    (b"apos", b'\'', false),
                    (b"nbsp", b' ', false),
                    (b"colon", b':', false),
                    (b"sol", b'/', false),
                    (b"equals", b'=', false),
                    (b"plus", b'+', false),
                    (b"num", b'#', false),
                    (b"excl", b'!', false),
                    (b"quest", b'?', false),
                    (b"percnt", b'%', false),
                    (b"commat", b'@', false),
                    (b"lpar", b'(', false),
                    (b"rpar", b')', false),
                    (b"comma", b',', false),
                    (b"period", b'.', false),
                    (b"semi", b';', false),
                    (b"lowbar", b'_', false),
                    (b"dollar", b'$', false),
                    (b"ast", b'*', false),
                    (b"bsol", b'\\', false),
                    (b"lsqb", b'[', false),
                    (b"rsqb", b']', false),
                    (b"lbrack", b'[', false),
                    (b"rbrack", b']', false),
                    (b"lcub", b'{', false),
                    (b"rcub", b'}', false),
                    (b"lbrace", b'{', false),
                    (b"rbrace", b'}', false),
                    (b"verbar", b'|', false),
                    (b"vert", b'|', false),
                    (b"Hat", b'^', false),
                    (b"grave", b'`', false),
                    (b"tilde", b'~', false),
                    (b"hyphen", b'-', false),
                    (b"dash", b'-', false),
                    (b"newline", b'\n', false),
                    (b"tab", b'\t', false),
                ];
                let rest = &b[i + 1..];
                // Longest name first where one is a prefix of another (`comma`/`commat`).
                let mut best: Option<(usize, u8)> = None;
                for &(name, ch, legacy) in NAMED {
                    if rest.starts_with(name) {
                        let semi = rest.get(name.len()) == Some(&b';');
                        if semi || legacy {
                            let len = 1 + name.len() + semi as usize;
                            if best.is_none_or(|(l, _)| len > l) {
                                best = Some((len, ch));
                            }
                        }
                    }
                }
                let (len, ch) = best?;
                out.push(ch);
                Some(len)
            }
        }
    }
}

fn push_char(out: &mut Vec<u8>, cp: u32) -> Option<()> {
    let c = char::from_u32(cp)?;
    let mut buf = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    Some(())
}

/// Positions of the escape trigger bytes and of `0x` (or `0X`): two `memchr3` passes (`x` is
/// rare enough in prose that checking for a `0` before it is cheaper than a separate substring
/// search).
struct Triggers {
    pct: Vec<usize>,
    bsl: Vec<usize>,
    amp: Vec<usize>,
    eq: Vec<usize>,
    hx: Vec<usize>,
    /// `x0` (or `X0`) after two hex digits: a `0x` token written backwards.
    rhx: Vec<usize>,
}

impl Triggers {
    fn find(bytes: &[u8]) -> Triggers {
        let mut t = Triggers {
            pct: Vec::new(),
            bsl: Vec::new(),
            amp: Vec::new(),
            eq: Vec::new(),
            hx: Vec::new(),
            rhx: Vec::new(),
        };
        for p in memchr::memchr3_iter(b'%', b'\\', b'&', bytes) {
            match bytes[p] {
                b'%' => t.pct.push(p),
                b'\\' => t.bsl.push(p),
                _ => t.amp.push(p),
            }
        }
        for p in memchr::memchr3_iter(b'=', b'x', b'X', bytes) {
            if bytes[p] == b'=' {
                t.eq.push(p);
                continue;
            }
            if p > 0 && bytes[p - 1] == b'0' {
                t.hx.push(p - 1);
            }
            // Both at once for `a0x0`: `0x0a` written backwards, whose digit `0` precedes the `x`.
            if p >= 2
                && bytes.get(p + 1) == Some(&b'0')
                && bytes[p - 1].is_ascii_hexdigit()
                && bytes[p - 2].is_ascii_hexdigit()
            {
                t.rhx.push(p);
            }
        }
        t
    }

    fn of(&self, fam: Family) -> &[usize] {
        match fam {
            Family::Percent => &self.pct,
            Family::Backslash => &self.bsl,
            Family::Html => &self.amp,
            Family::Qp => &self.eq,
        }
    }
}

/// The escapes of one layer and the regions they are decoded over.
///
/// A region is a connected span of windows `[pos - reach, pos + reach]` around escapes of any
/// family and of the layer's candidate runs (encoded-looking, separated and hex-pair runs). An
/// escaped secret's escapes lie within its length of one another, so the windows alone hold a
/// secret escaped directly; when the escaped text is a longer encoding of it (`&` escaped as
/// `&amp;` inside a separated, partly `\u`-escaped form), its escapes can lie farther apart, but
/// what lies between them is the encoding: a run, or escapes of another family, which join the
/// windows into one region.
struct Escapes {
    /// `(position, length, family index)` of every escape that decodes, by position.
    sites: Vec<(usize, usize, usize)>,
    /// The connected spans, by position.
    spans: Vec<(usize, usize)>,
}

impl Escapes {
    fn find(bytes: &[u8], triggers: &Triggers, reach: usize, mut joins: Vec<(usize, usize)>) -> Escapes {
        let mut sites = Vec::new();
        let mut scratch = Vec::new();
        for (j, fam) in Family::ALL.into_iter().enumerate() {
            for &p in triggers.of(fam) {
                scratch.clear();
                if let Some(len) = fam.decode_at(bytes, p, &mut scratch) {
                    sites.push((p, len, j));
                }
            }
        }
        if sites.is_empty() {
            return Escapes { sites, spans: Vec::new() };
        }
        sites.sort_unstable();
        joins.extend(sites.iter().map(|&(p, _, _)| (p.saturating_sub(reach), (p + reach).min(bytes.len()))));
        joins.sort_unstable();
        let mut spans: Vec<(usize, usize)> = Vec::with_capacity(joins.len());
        for (a, b) in joins {
            match spans.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => spans.push((a, b)),
            }
        }
        Escapes { sites, spans }
    }

    /// The spans holding an escape of family `j`, keeping those that touch new bytes.
    /// `strict`: only escapes that touch new bytes count.
    fn regions(&self, j: usize, new: &dyn Fn(usize, usize) -> bool, strict: bool) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut k = 0;
        for &(a, b) in &self.spans {
            let mut seeded = false;
            while let Some(&(p, len, fam)) = self.sites.get(k) {
                if p >= b {
                    break;
                }
                k += 1;
                seeded |= p >= a && fam == j && (!strict || new(p, p + len));
            }
            // A region with no new byte was decoded in the parent layer already. (Whole
            // regions, not single escapes: a span mixing two families needs each decoded after
            // the other.)
            if seeded && new(a, b) {
                out.push((a, b));
            }
        }
        out
    }
}

/// Where the bytes of an escape decoding came from: bytes between escapes are copied one for
/// one, and every byte an escape produced comes from the whole escape.
struct EscapeMap {
    /// The parent position of layer byte 0.
    start: usize,
    /// `(layer start, layer end, parent start, parent end)` of every escape, by position (a
    /// soft line break produces no byte: its layer range is empty).
    escapes: Vec<(usize, usize, usize, usize)>,
}

impl EscapeMap {
    /// The parent range layer byte `i` came from.
    fn source(&self, i: usize) -> (usize, usize) {
        let k = self.escapes.partition_point(|&(ls, _, _, _)| ls <= i);
        match k.checked_sub(1).map(|k| self.escapes[k]) {
            Some((_, le, ps, pe)) if i < le => (ps, pe),
            Some((_, le, _, pe)) => (pe + i - le, pe + i - le + 1),
            None => (self.start + i, self.start + i + 1),
        }
    }
}

/// Decoded bytes, where they came from, and the output ranges that escapes produced.
type EscapeLayer = (Vec<u8>, EscapeMap, Vec<(usize, usize)>);

/// Decodes the escapes of `fam` in `bytes[a..b]`, copying other bytes; `None` when there were
/// none.
fn decode_escapes(bytes: &[u8], a: usize, b: usize, fam: Family) -> Option<EscapeLayer> {
    let mut out = Vec::with_capacity(b - a);
    let mut map = EscapeMap { start: a, escapes: Vec::new() };
    let mut changed: Vec<(usize, usize)> = Vec::new();
    let t = fam.trigger();
    let mut i = a;
    // Decoding reads past `b` only to finish an escape that starts before it.
    while i < b {
        // Copy up to the next trigger at once.
        let next = memchr::memchr(t, &bytes[i..b]).map_or(b, |k| i + k);
        out.extend_from_slice(&bytes[i..next]);
        i = next;
        if i >= b {
            break;
        }
        let before = out.len();
        match fam.decode_at(bytes, i, &mut out) {
            Some(len) => {
                let end = (i + len).min(bytes.len());
                map.escapes.push((before, out.len(), i, end));
                // (A soft line break produces nothing but joins its neighbours: mark them.)
                let (cs, ce) = (before.saturating_sub(1), (out.len() + 1).max(before + 1));
                match changed.last_mut() {
                    Some(last) if cs <= last.1 => last.1 = last.1.max(ce),
                    _ => changed.push((cs, ce)),
                }
                i = end;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    if map.escapes.is_empty() || out.is_empty() {
        return None;
    }
    Some((out, map, changed))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, ..Default::default() })]

        /// The sparse map of an escape decoding gives every byte the source a per-byte map
        /// gives it: the escape that produced it, or the byte it was copied from (texts dense
        /// with triggers, hex digits, escape letters and line breaks, any region, every family).
        #[test]
        fn escape_map_agrees_with_per_byte_map(
            text in proptest::collection::vec(proptest::sample::select(b"%&=\\#;xuU{}0123456789abcdefABCDEFamplgtn\r\n zq".to_vec()), 0..80),
            cut in 0usize..80,
            fam in proptest::sample::select(Family::ALL.to_vec()),
        ) {
            let a = cut.min(text.len());
            let mut reference: Vec<(usize, usize)> = Vec::new();
            let mut out = Vec::new();
            let mut i = a;
            while i < text.len() {
                if text[i] == fam.trigger() {
                    let before = out.len();
                    if let Some(len) = fam.decode_at(&text, i, &mut out) {
                        let end = (i + len).min(text.len());
                        reference.extend(std::iter::repeat_n((i, end), out.len() - before));
                        i = end;
                        continue;
                    }
                }
                out.push(text[i]);
                reference.push((i, i + 1));
                i += 1;
            }
            match decode_escapes(&text, a, text.len(), fam) {
                Some((dec, map, _)) => {
                    proptest::prop_assert_eq!(&dec, &out);
                    for (k, &r) in reference.iter().enumerate() {
                        proptest::prop_assert_eq!(map.source(k), r, "byte {}", k);
                    }
                }
                None => proptest::prop_assert!(out.is_empty() || reference.iter().all(|&(s, e)| e == s + 1)),
            }
        }

        /// The mask pre-check of the block scan never rejects a word [`long_enough`] accepts:
        /// texts of class bytes, blanks, line breaks and other punctuation, every aligned word.
        #[test]
        fn may_be_long_is_necessary_for_long_enough(
            text in proptest::collection::vec(proptest::sample::select(b"aZ09+/=-.:_ \t\n\r@'(".to_vec()), 0..300)
        ) {
            let seps = crate::normalize::sep_words(&text);
            let mut i = 0;
            while i + 8 <= text.len() {
                if long_enough(&text, i) {
                    proptest::prop_assert!(may_be_long(&text, &seps, i), "word at {} of {:?}", i, String::from_utf8_lossy(&text));
                }
                i += 2;
            }
        }

        /// The scan finds every run it promises wherever it starts: an encoded-looking run of
        /// [`MIN_BLOCK_RUN`] bytes or more, [`MIN_SEP_CHARS`] characters or more with one
        /// separator (blank or not) between each, and as many hex pairs with one blank between
        /// each, among arbitrary text: a recorded candidate covers it.
        #[test]
        fn scan_finds_every_run_wherever_it_starts(
            before in proptest::collection::vec(proptest::sample::select(b"aZ09+/-.:_ \t\n@'(&%".to_vec()), 0..80),
            after in proptest::collection::vec(proptest::sample::select(b"aZ09+/-.:_ \t\n@'(&%".to_vec()), 0..80),
            kind in 0usize..3,
            len in 0usize..24,
            units in proptest::collection::vec(proptest::sample::select(b"aZ09+/=!xQf".to_vec()), 48),
            sep in proptest::sample::select(SEPARATORS.to_vec()),
            blank in proptest::sample::select(b" \t\n".to_vec()),
        ) {
            let run: Vec<u8> = match kind {
                0 => units.iter().map(|&u| if u == b'=' || u == b'!' { b'A' } else { u }).take(MIN_BLOCK_RUN + len).collect(),
                1 => units.iter().filter(|&&u| u != sep).take(MIN_SEP_CHARS + len % 8)
                    .flat_map(|&u| [sep, u]).skip(1).collect(),
                _ => (0..MIN_SEP_CHARS + len % 8).flat_map(|k| {
                    let pair = [b"0123456789abcdef"[units[k] as usize % 16], b"0123456789ABCDEF"[units[k + 1] as usize % 16]];
                    [blank, pair[0], pair[1]]
                }).skip(1).collect(),
            };
            let text: Vec<u8> = before.iter().chain(&run).chain(&after).copied().collect();
            let (s, e) = (before.len(), before.len() + run.len());
            let c = scan(&text, &crate::normalize::sep_words(&text));
            let covers = |&(a, b): &(usize, usize)| a <= s && e <= b;
            let found = match kind {
                0 => c.block_runs.iter().any(covers),
                1 => c.sep_runs.iter().map(|&(a, b, _)| (a, b)).any(|r| covers(&r)),
                _ => c.hex_sep_runs.iter().map(|&(a, b, _)| (a, b)).any(|r| covers(&r)),
            };
            proptest::prop_assert!(found, "kind {} not found in {:?}", kind, String::from_utf8_lossy(&text));
        }
    }

    #[test]
    fn class_swar_agrees_with_scalar() {
        for b0 in 0u8..=255 {
            let v = u64::from_le_bytes([b0, b'a', b'a', b'a', b'a', b'a', b'a', b'a']);
            assert_eq!(is_cls_word(v), is_cls(b0), "{b0:#x}");
        }
    }

    #[test]
    fn hex_or_blank_swar_agrees_with_scalar() {
        for b0 in 0u8..=255 {
            for pos in 0..8 {
                let mut w = *b"0 a 9 F ";
                w[pos] = b0;
                let scalar = b0.is_ascii_hexdigit() || b0 <= b' ';
                assert_eq!(hex_or_blank_word(u64::from_le_bytes(w)), scalar, "{b0:#x} at {pos}");
            }
        }
    }

    /// A piece of a generated text for the [`inert`] properties: ASCII runs of every length
    /// around its threshold, high bytes, characters the canonical form changes, triggers and
    /// escapes.
    fn inert_piece() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        use proptest::sample::select;
        prop_oneof![
            6 => proptest::collection::vec(select(b"aZ09+/-.:_ \t\n\r@'(;#{}uU".to_vec()), 1..12),
            3 => proptest::collection::vec(select(b"QmFzZTY0aGV4AZaz09+/".to_vec()), 8..12),
            3 => proptest::collection::vec(0x80u8..=0xff, 1..3),
            2 => select(vec!["\u{ff21}", "\u{200b}", "\u{430}", "\u{e9}", "\u{ff58}", "\u{ff05}", "\u{a0}"]).prop_map(|s| s.as_bytes().to_vec()),
            1 => select(TRIGGER_BYTES.to_vec()).prop_map(|b| vec![b]),
            3 => select(vec!["%41", "\\x41", "&#65;", "=41", "0x41", "14x0", "0x4", "4x0"]).prop_map(|s| s.as_bytes().to_vec()),
        ]
    }

    /// Hits of `needle` in a layer, for the equivalence property.
    fn find_needle(needle: &[u8], layer: &[u8], out: &mut Vec<Found>) {
        if needle.len() <= layer.len() {
            out.extend((0..=layer.len() - needle.len()).filter(|&i| &layer[i..i + needle.len()] == needle).map(|i| (i, i + needle.len(), 0)));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 3000, ..Default::default() })]

        /// A text [`inert`] accepts makes no layer at all when scanned in full: no
        /// decoding, no canonical form, no reversal (the text itself is the most a layer may
        /// spawn from: a decoded or re-spelled layer only spawns less from the same bytes).
        #[test]
        fn inert_text_spawns_no_layer(pieces in proptest::collection::vec(inert_piece(), 0..10)) {
            let text = pieces.concat();
            if inert(&text) {
                let layers = std::cell::Cell::new(0usize);
                let find = |_: &[u8], _: &mut Vec<Found>| layers.set(layers.get() + 1);
                let d = run_passes(&text, &crate::normalize::sep_words(&text), &Matching { find: &find, reach: 40, shortest: 0 }, false);
                proptest::prop_assert_eq!(layers.get(), 0, "{:?}", String::from_utf8_lossy(&text));
                proptest::prop_assert_eq!(d.work, 0);
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 400, ..Default::default() })]

        /// Skipping inert layers changes nothing: the same hits, work and cap, on texts of
        /// words and binary (whose base64 readings are inert layers) around a secret encoded
        /// once or twice, forwards or reversed.
        #[test]
        fn skipping_inert_layers_finds_the_same(
            secret in proptest::collection::vec(proptest::sample::select(b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ0123456789_-".to_vec()), 6..14),
            before in proptest::collection::vec(inert_piece(), 0..6),
            after in proptest::collection::vec(inert_piece(), 0..6),
            words in proptest::collection::vec(proptest::sample::select(vec!["content-length", "text/plain", "charset=utf-8", "path_or_url", "headers", "truncated", "Sat, 05 Dec 2026 07:32:24 GMT"]), 0..4),
            form in 0usize..6,
        ) {
            use base64::Engine as _;
            let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b).into_bytes();
            let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>().into_bytes();
            let enc = match form {
                0 => b64(&secret),
                1 => crate::variants::reversed(&b64(&secret)),
                2 => b64(&b64(&secret)),
                3 => hex(&b64(&secret)),
                4 => b64(&hex(&secret)),
                _ => crate::variants::reversed(&hex(&secret)),
            };
            let mut text = before.concat();
            for w in &words {
                text.extend_from_slice(w.as_bytes());
                text.push(b' ');
            }
            text.extend_from_slice(&enc);
            text.extend_from_slice(&after.concat());
            let find = |l: &[u8], out: &mut Vec<Found>| find_needle(&secret, l, out);
            let seps = crate::normalize::sep_words(&text);
            let (a, b) = {
                let m = Matching { find: &find, reach: 40, shortest: 0 };
                (run_passes(&text, &seps, &m, true), run_passes(&text, &seps, &m, false))
            };
            let sorted = |mut f: Vec<Found>| { f.sort_unstable(); f };
            proptest::prop_assert_eq!(sorted(a.found), sorted(b.found));
            proptest::prop_assert_eq!((a.work, a.exhausted), (b.work, b.exhausted));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 600, ..Default::default() })]

        /// Not making layers shorter than the shortest pattern (`Matching::shortest`) changes
        /// no hit: generated secrets of 6 to 40 bytes under chains of one to three decodings and
        /// re-spellings (base64, base32, hex, percent escapes, hex pairs with separators,
        /// separated characters, wrapped lines, full-width letters, reversal), in generated text,
        /// matched with the secret alone as the one pattern, find the same with the floor at the
        /// secret's length as with none; and the floor never adds work.
        #[test]
        fn the_floor_changes_no_hit(
            secret in proptest::collection::vec(proptest::sample::select(b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ0123456789_-.+/".to_vec()), 6..40),
            chain in proptest::collection::vec(0usize..10, 1..4),
            before in proptest::collection::vec(inert_piece(), 0..5),
            after in proptest::collection::vec(inert_piece(), 0..5),
        ) {
            use base64::Engine as _;
            let mut enc = secret.clone();
            for step in &chain {
                enc = match step {
                    0 => base64::engine::general_purpose::STANDARD.encode(&enc).into_bytes(),
                    1 => crate::variants::base32_encode(&enc),
                    2 => enc.iter().map(|x| format!("{x:02x}")).collect::<String>().into_bytes(),
                    3 => enc.iter().map(|x| format!("%{x:02X}")).collect::<String>().into_bytes(),
                    4 => enc.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":").into_bytes(),
                    5 => enc.iter().map(|&x| x as char).map(String::from).collect::<Vec<_>>().join("-").into_bytes(),
                    6 => enc.chunks(12).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join("\n").into_bytes(),
                    7 => String::from_utf8_lossy(&enc).chars().map(|c| if c.is_ascii_alphanumeric() { char::from_u32(c as u32 - 0x21 + 0xff01).unwrap() } else { c }).collect::<String>().into_bytes(),
                    8 => crate::variants::reversed(&enc),
                    _ => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&enc).into_bytes(),
                };
            }
            let mut text = before.concat();
            text.push(b' ');
            text.extend_from_slice(&enc);
            text.push(b' ');
            text.extend_from_slice(&after.concat());
            let find = |l: &[u8], out: &mut Vec<Found>| find_needle(&secret, l, out);
            let seps = crate::normalize::sep_words(&text);
            let floored = run_passes(&text, &seps, &Matching { find: &find, reach: 40, shortest: secret.len() }, true);
            let full = run_passes(&text, &seps, &Matching { find: &find, reach: 40, shortest: 0 }, true);
            proptest::prop_assert!(!full.exhausted);
            let sorted = |mut f: Vec<Found>| { f.sort_unstable(); f.dedup(); f };
            proptest::prop_assert_eq!(sorted(floored.found), sorted(full.found), "{:?}", String::from_utf8_lossy(&text));
            proptest::prop_assert!(floored.work <= full.work);
        }
    }

    #[test]
    fn what_is_inert() {
        for t in ["", "body", "date", "11", "GET", "status", "headers", "200 OK", "\u{e9}t\u{e9}"] {
            assert!(inert(t.as_bytes()), "{t:?}");
        }
        // Ten ASCII bytes in a row, a trigger, a character the canonical form changes.
        for t in ["content-length", "abcdefghij", "a%b", "a\\b", "x", "a=b", "a&b", "\u{ff21}bc"] {
            assert!(!inert(t.as_bytes()), "{t:?}");
        }
        // A base64 reading of a word is binary: `content-length` from its first character.
        let layer = Block::Base64.decode(&b"content-length".iter().map(|&c| b64_val(c).unwrap()).collect::<Vec<_>>());
        assert_eq!(layer[..4], [b'r', 0x89, 0xed, b'z']);
        assert!(inert(&layer));
    }

    #[test]
    fn block_decoders_round_trip() {
        let data = b"hello, world: 0123456789";
        let vals: Vec<u8> = crate::variants::base32_encode(data).iter().map(|&c| b32_val(c).unwrap()).collect();
        assert_eq!(Block::Base32.decode(&vals), data);
        let hex: Vec<u8> = data.iter().flat_map(|b| format!("{b:02x}").into_bytes()).map(|c| hex_val(c).unwrap()).collect();
        assert_eq!(Block::Hex.decode(&hex), data);
    }

    #[test]
    fn separated_runs_are_found() {
        let t = b"xx s-e-c-r-e-t-1 yy";
        let (a, b, sep) = sep_run(t, 4, 2).unwrap();
        assert_eq!((&t[a..b], sep), (&b"s-e-c-r-e-t-1"[..], b'-'));
        let t = b"mac de:ad:be:ef:00:11 ok";
        let (a, b, _) = sep_run(t, 6, 3).unwrap();
        assert_eq!(&t[a..b], b"de:ad:be:ef:00:11");
        assert_eq!(collapse(t, a, b, b':', 2).0, b"deadbeef0011");
        assert_eq!(collapse_hex(t, a, b, b':').0, [0xde, 0xad, 0xbe, 0xef, 0x00, 0x11]);
    }

    #[test]
    fn escapes_decode_with_maps() {
        let t = b"u:p%40ss%3Aw%2Frd@h";
        let (d, m, _) = decode_escapes(t, 0, t.len(), Family::Percent).unwrap();
        assert_eq!(d, b"u:p@ss:w/rd@h");
        assert_eq!(m.source(3), (3, 6));
        assert_eq!(m.source(4), (6, 7));
        assert_eq!(m.source(12), (18, 19));
        let t = b"\\ud83d\\ude00&#x41&#065;&amp&lt;";
        let (d, _, _) = decode_escapes(t, 0, t.len(), Family::Backslash).unwrap();
        assert_eq!(d, "\u{1F600}&#x41&#065;&amp&lt;".as_bytes());
        let (d, _, _) = decode_escapes(t, 0, t.len(), Family::Html).unwrap();
        assert_eq!(d, b"\\ud83d\\ude00AA&<");
    }
}


