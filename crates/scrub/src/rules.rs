//! Pattern rules for secrets airlock does not hold (a token stored in a database row, a key in a
//! config file an endpoint returns).
//!
//! The rules and their ids are derived from gitleaks' default configuration
//! (<https://github.com/gitleaks/gitleaks>, `config/gitleaks.toml`), Copyright (c) 2019 Zachary
//! Rice, MIT licence; see `THIRD_PARTY.md`. Some expressions are simplified or slightly widened
//! for redaction (which prefers a false positive to a leak); `generic-api-key` is narrower than
//! gitleaks' own to keep ordinary output intact.
//!
//! Speed: every rule's match starts with one of a few literals. A SIMD literal search over the
//! case-sensitive literals, memmem for the 2-byte ones, and one over the generic keywords (case
//! insensitive) find the candidate positions; each rule's regex then runs only in windows that
//! start at its candidates, with the whole text as look-around context. Matching stays linear
//! time (`regex` engines, no backtracking). Each thread searches with caches of its own: a
//! regex's shared cache pool serves only the thread that used it first without a lock, and
//! under contention hands the others a cold cache for one search.

use regex_automata::meta::{Cache, Regex};
use regex_automata::util::iter::Searcher;
use regex_automata::{Anchored, Input, Match};
use std::cell::RefCell;

/// The longest span an anchored rule search may cover (a JWT or a PEM body is rarely longer).
const MAX_RULE_SPAN: usize = 16 * 1024;
/// How far a PEM header may be from its footer.
const MAX_PEM_SPAN: usize = 64 * 1024;

/// One rule: a gitleaks id, the literals every match starts with, and the expression.
struct RuleDef {
    id: &'static str,
    literals: &'static [&'static str],
    /// ASCII case-insensitive literals (the generic keyword rule).
    nocase: bool,
    regex: &'static str,
}

const RULES: &[RuleDef] = &[
    RuleDef {
        id: "aws-access-token",
        literals: &["AKIA", "ASIA", "ABIA", "ACCA", "A3T"],
        nocase: false,
        regex: r"\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}\b",
    },
    RuleDef { id: "github-pat", literals: &["ghp_"], nocase: false, regex: r"ghp_[0-9A-Za-z]{36}" },
    RuleDef { id: "github-oauth", literals: &["gho_"], nocase: false, regex: r"gho_[0-9A-Za-z]{36}" },
    RuleDef {
        id: "github-app-token",
        literals: &["ghu_", "ghs_"],
        nocase: false,
        regex: r"(?:ghu|ghs)_[0-9A-Za-z]{36}",
    },
    RuleDef {
        id: "github-refresh-token",
        literals: &["ghr_"],
        nocase: false,
        regex: r"ghr_[0-9A-Za-z]{36}",
    },
    RuleDef {
        id: "github-fine-grained-pat",
        literals: &["github_pat_"],
        nocase: false,
        regex: r"github_pat_[0-9A-Za-z_]{82}",
    },
    RuleDef { id: "gitlab-pat", literals: &["glpat-"], nocase: false, regex: r"glpat-[0-9A-Za-z_-]{20,}" },
    RuleDef {
        id: "slack-bot-token",
        literals: &["xoxb-"],
        nocase: false,
        regex: r"xoxb-[0-9]{8,14}-[0-9A-Za-z-]{10,}",
    },
    RuleDef {
        id: "slack-user-token",
        literals: &["xoxp-", "xoxe-"],
        nocase: false,
        regex: r"xox[pe](?:-[0-9]{10,13}){3}-[0-9A-Za-z-]{28,34}",
    },
    RuleDef {
        id: "slack-legacy-workspace-token",
        literals: &["xoxa-", "xoxr-"],
        nocase: false,
        regex: r"xox[ar]-(?:[0-9]-)?[0-9A-Za-z]{8,48}",
    },
    RuleDef {
        id: "slack-legacy-token",
        literals: &["xoxs-", "xoxo-"],
        nocase: false,
        regex: r"xox[os]-[0-9]+-[0-9]+-[0-9]+-[0-9A-Fa-f]+",
    },
    RuleDef {
        id: "slack-webhook-url",
        literals: &["hooks.slack.com/"],
        nocase: false,
        regex: r"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/]{43,56}",
    },
    RuleDef {
        id: "stripe-access-token",
        literals: &["sk_live_", "sk_test_", "sk_prod_", "rk_live_", "rk_test_", "rk_prod_"],
        nocase: false,
        regex: r"\b(?:sk|rk)_(?:test|live|prod)_[0-9A-Za-z]{10,99}\b",
    },
    RuleDef {
        id: "anthropic-api-key",
        literals: &["sk-ant-"],
        nocase: false,
        regex: r"\bsk-ant-(?:api|admin|sid)[0-9]{2}-[0-9A-Za-z_-]{32,}",
    },
    RuleDef {
        id: "openai-api-key",
        literals: &["sk-"],
        nocase: false,
        regex: r"\bsk-(?:(?:proj|svcacct|admin)-[0-9A-Za-z_-]{40,}|[0-9A-Za-z_-]{20,}T3BlbkFJ[0-9A-Za-z_-]{20,})",
    },
    RuleDef { id: "gcp-api-key", literals: &["AIza"], nocase: false, regex: r"\bAIza[0-9A-Za-z_-]{35}\b" },
    RuleDef {
        id: "jwt",
        literals: &["eyJ"],
        nocase: false,
        regex: r"\beyJ[0-9A-Za-z_-]{15,}\.eyJ[0-9A-Za-z/\\_-]{15,}\.(?:[0-9A-Za-z/\\_-]{10,}={0,2})?",
    },
    RuleDef {
        id: "sendgrid-api-token",
        literals: &["SG."],
        nocase: false,
        regex: r"\bSG\.[0-9A-Za-z_-]{22}\.[0-9A-Za-z_-]{43}\b",
    },
    RuleDef { id: "twilio-api-key", literals: &["SK"], nocase: false, regex: r"\bSK[0-9a-fA-F]{32}\b" },
    // The header only; the span is completed in code (footer or base64 body).
    RuleDef {
        id: "private-key",
        literals: &["-----BEGIN"],
        nocase: false,
        regex: r"-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----",
    },
    // Conservative: a keyword, an assignment, and a value of 8+ characters with letters and
    // digits and some entropy (checked in code). Only the value is redacted.
    RuleDef {
        id: "generic-api-key",
        literals: &["password", "passwd", "secret", "api_key", "api-key", "apikey", "token"],
        nocase: true,
        regex: r#"(?i)(?:password|passwd|secret|api[_-]?key|token)[0-9a-z_.-]{0,30}["']?[ \t]{0,5}(?:=>|:=|=|:)[ \t]{0,5}["']?(?P<v>[^\s"'`,;&<>()\[\]{}]{8,200})"#,
    },
];

const PEM_FOOTER: &str = r"-----END[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----";
const PEM_BODY: &str = r"(?:(?:[ \t\r\n]|\\[nr])*(?:[A-Za-z0-9+/=]{16,}|[A-Za-z-]+: [^\r\n\\]{1,200}))+";

/// A rule match: byte range and rule index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleHit {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
    /// Index of the rule.
    pub rule: usize,
}

/// The compiled rule set.
pub struct Rules {
    regexes: Vec<Regex>,
    /// Alternation of the case-sensitive literals of 3+ bytes (a SIMD literal search).
    literals_cs: Regex,
    /// Case-sensitive literals with their rule, to attribute a hit.
    cs: Vec<(&'static str, usize)>,
    /// Literals shorter than 3 bytes, searched with memmem (they would slow the SIMD search).
    short: Vec<(memchr::memmem::Finder<'static>, usize)>,
    /// Alternation of the case-insensitive keywords (generic rule).
    literals_ci: Regex,
    pem_footer: Regex,
    pem_body: Regex,
    pem_rule: usize,
    generic_rule: usize,
    /// Each thread's search caches: a regex's own cache pool serves only the thread that used
    /// it first without a lock, and the broker's threads all scrub.
    caches: thread_local::ThreadLocal<RefCell<Caches>>,
}

/// One thread's search caches: the two literal searches' (which run on every text), and each
/// other expression's once the thread first searches with it.
struct Caches {
    cs: Cache,
    ci: Cache,
    rules: Vec<Option<Cache>>,
    pem_footer: Option<Cache>,
    pem_body: Option<Cache>,
}

/// `slot`'s cache for `re`, made on first use.
fn cache_for<'c>(slot: &'c mut Option<Cache>, re: &Regex) -> &'c mut Cache {
    slot.get_or_insert_with(|| re.create_cache())
}

/// Every match of `re` in `input`, in order, as `Regex::find_iter` gives them, searched with
/// `cache`.
fn each_match(re: &Regex, cache: &mut Cache, input: Input<'_>, mut f: impl FnMut(Match)) {
    let mut it = Searcher::new(input);
    while let Some(m) = it.advance(|i| Ok(re.search_with(cache, i))) {
        f(m);
    }
}

/// Ids of all rules, in order.
pub fn rule_ids() -> impl Iterator<Item = &'static str> {
    RULES.iter().map(|r| r.id)
}

impl Rules {
    /// Compiles the rule set. The expressions are constants; a failure is a bug caught by tests.
    pub fn new() -> Result<Self, crate::BuildError> {
        let compile = |re: &str| Regex::new(re).map_err(|e| crate::BuildError::Rule(e.to_string()));
        let regexes = RULES.iter().map(|r| compile(r.regex)).collect::<Result<Vec<_>, _>>()?;
        let (mut cs, mut short, mut cs_alt, mut ci_alt) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (i, r) in RULES.iter().enumerate() {
            for l in r.literals {
                if r.nocase {
                    ci_alt.push(regex_syntax::escape(l));
                } else if l.len() < 3 {
                    short.push((memchr::memmem::Finder::new(l.as_bytes()), i));
                } else {
                    cs.push((*l, i));
                    cs_alt.push(regex_syntax::escape(l));
                }
            }
        }
        let pos = |id: &str| RULES.iter().position(|r| r.id == id).unwrap_or(usize::MAX);
        Ok(Rules {
            regexes,
            literals_cs: compile(&cs_alt.join("|"))?,
            cs,
            short,
            literals_ci: compile(&format!("(?i:{})", ci_alt.join("|")))?,
            pem_footer: compile(PEM_FOOTER)?,
            pem_body: compile(PEM_BODY)?,
            pem_rule: pos("private-key"),
            generic_rule: pos("generic-api-key"),
            caches: thread_local::ThreadLocal::new(),
        })
    }

    /// The id of rule `i`.
    pub fn id(&self, i: usize) -> &'static str {
        RULES[i].id
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        RULES.len()
    }

    /// Never true: the built-in set is not empty.
    pub fn is_empty(&self) -> bool {
        RULES.is_empty()
    }

    /// Every rule match in `text` (spans may overlap; the caller merges).
    ///
    /// The literal passes give candidate positions per rule; each rule's regex then searches
    /// (unanchored, leftmost-first) the merged windows `[hit, hit + MAX_RULE_SPAN)`, so every byte
    /// is scanned at most once per rule however many candidates there are (T20).
    pub fn find_all(&self, text: &str, out: &mut Vec<RuleHit>) {
        let mut hits: Vec<Vec<usize>> = vec![Vec::new(); RULES.len()];
        let caches = self.caches.get_or(|| {
            RefCell::new(Caches {
                cs: self.literals_cs.create_cache(),
                ci: self.literals_ci.create_cache(),
                rules: self.regexes.iter().map(|_| None).collect(),
                pem_footer: None,
                pem_body: None,
            })
        });
        // Not re-entered: nothing below calls back into `find_all`.
        let caches = &mut *caches.borrow_mut();
        // Every position where some literal starts (a search resumes one byte after each hit).
        let mut at = 0;
        while let Some(m) = self.literals_cs.search_with(&mut caches.cs, &Input::new(text).span(at..text.len())) {
            let rest = &text.as_bytes()[m.start()..];
            for (l, rule) in &self.cs {
                if rest.starts_with(l.as_bytes()) {
                    hits[*rule].push(m.start());
                }
            }
            at = m.start() + 1;
        }
        for (finder, rule) in &self.short {
            hits[*rule].extend(finder.find_iter(text.as_bytes()));
        }
        let mut at = 0;
        while let Some(m) = self.literals_ci.search_with(&mut caches.ci, &Input::new(text).span(at..text.len())) {
            hits[self.generic_rule].push(m.start());
            at = m.start() + 1;
        }
        for (rule, positions) in hits.iter_mut().enumerate() {
            if positions.is_empty() {
                continue;
            }
            positions.sort_unstable();
            let mut windows: Vec<(usize, usize)> = Vec::new();
            for &p in positions.iter() {
                let end = (p + MAX_RULE_SPAN).min(text.len());
                match windows.last_mut() {
                    Some((_, e)) if p <= *e => *e = (*e).max(end),
                    _ => windows.push((p, end)),
                }
            }
            let mut pem = PemCursor { scanned: 0, next: None };
            for (s, e) in windows {
                if rule == self.pem_rule {
                    self.pem_in(text, s, e, &mut pem, caches, out);
                } else if rule == self.generic_rule {
                    self.generic_in(text, s, e, cache_for(&mut caches.rules[rule], &self.regexes[rule]), out);
                } else {
                    each_match(&self.regexes[rule], cache_for(&mut caches.rules[rule], &self.regexes[rule]), Input::new(text).span(s..e), |m| {
                        out.push(RuleHit { start: m.start(), end: m.end(), rule });
                    });
                }
            }
        }
    }

    /// Every rule match by searching each rule's regex unanchored over the whole text (the
    /// reference the literal prefilter must agree with; the PEM and generic rules excepted).
    #[doc(hidden)]
    pub fn find_all_unfiltered(&self, text: &str, out: &mut Vec<RuleHit>) {
        for (rule, re) in self.regexes.iter().enumerate() {
            if rule == self.pem_rule || rule == self.generic_rule {
                continue;
            }
            for m in re.find_iter(text) {
                out.push(RuleHit { start: m.start(), end: m.end(), rule });
            }
        }
    }

    /// As `Regex::captures_iter` over the window, searched with `cache`.
    fn generic_in(&self, text: &str, s: usize, e: usize, cache: &mut Cache, out: &mut Vec<RuleHit>) {
        let re = &self.regexes[self.generic_rule];
        let mut caps = re.create_captures();
        let mut it = Searcher::new(Input::new(text).span(s..e));
        loop {
            let _ = it.advance(|i| {
                re.search_captures_with(cache, i, &mut caps);
                Ok(caps.get_match())
            });
            if !caps.is_match() {
                break;
            }
            if let Some(v) = caps.get_group_by_name("v") {
                if looks_like_secret(&text[v.start..v.end]) {
                    out.push(RuleHit { start: v.start, end: v.end, rule: self.generic_rule });
                }
            }
        }
    }

    /// PEM private keys in a window: from each header to the first footer within
    /// [`MAX_PEM_SPAN`], or, when none follows (truncated output), through the base64 body.
    fn pem_in(&self, text: &str, s: usize, e: usize, cur: &mut PemCursor, caches: &mut Caches, out: &mut Vec<RuleHit>) {
        let mut headers = Vec::new();
        let re = &self.regexes[self.pem_rule];
        each_match(re, cache_for(&mut caches.rules[self.pem_rule], re), Input::new(text).span(s..e), |m| headers.push(m));
        for h in headers {
            let from = h.end();
            let limit = (from + MAX_PEM_SPAN).min(text.len());
            if !matches!(cur.next, Some((fs, _)) if fs >= from) {
                // Headers come in increasing order, so each byte is searched for a footer once:
                // after a miss, nothing before `scanned` holds one; after a hit used by earlier
                // headers, the search resumes at this header.
                let start = if cur.next.is_some() { from } else { from.max(cur.scanned) };
                cur.next = self.first_footer(text, start, limit, cache_for(&mut caches.pem_footer, &self.pem_footer));
                if cur.next.is_none() {
                    cur.scanned = limit;
                }
            }
            let end = match cur.next {
                Some((fs, fe)) if fs <= limit => fe,
                _ => {
                    let body = Input::new(text).span(from..limit).anchored(Anchored::Yes);
                    self.pem_body.search_with(cache_for(&mut caches.pem_body, &self.pem_body), &body).map_or(from, |m| m.end())
                }
            };
            out.push(RuleHit { start: h.start(), end, rule: self.pem_rule });
        }
    }

    /// The first PEM footer starting in `[from, limit]`.
    fn first_footer(&self, text: &str, from: usize, limit: usize, cache: &mut Cache) -> Option<(usize, usize)> {
        let finder = memchr::memmem::Finder::new("-----END");
        let hay = &text.as_bytes()[..(limit + 8).min(text.len())];
        let mut pos = from;
        while pos <= hay.len() {
            let s = pos + finder.find(&hay[pos..])?;
            let input = Input::new(text).span(s..text.len()).anchored(Anchored::Yes);
            if let Some(m) = self.pem_footer.search_with(cache, &input) {
                return Some((m.start(), m.end()));
            }
            pos = s + 1;
        }
        None
    }
}

/// Where the footer search for PEM headers stands.
struct PemCursor {
    /// After a miss: no footer starts before this.
    scanned: usize,
    /// The first footer found at or after the last search start.
    next: Option<(usize, usize)>,
}

/// The generic rule's value test: letters and digits, at least 8 characters, not a placeholder,
/// and a Shannon entropy of at least 3 bits per character.
fn looks_like_secret(v: &str) -> bool {
    let b = v.as_bytes();
    if b.len() < 8 || matches!(b[0], b'$' | b'%' | b'*') {
        return false;
    }
    if !b.iter().any(u8::is_ascii_alphabetic) || !b.iter().any(u8::is_ascii_digit) {
        return false;
    }
    let mut counts = [0u32; 256];
    for &c in b {
        counts[c as usize] += 1;
    }
    let n = b.len() as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum();
    entropy >= 3.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_rules_compile_and_ids_are_unique_kebab_case() {
        let r = Rules::new().unwrap();
        assert_eq!(r.len(), RULES.len());
        let mut ids: Vec<_> = rule_ids().collect();
        assert!(ids.iter().all(|i| i.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')));
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), RULES.len());
    }

    #[test]
    fn every_rule_starts_with_one_of_its_literals() {
        // The prefilter is sound only if each regex cannot match without starting at a literal:
        // check that each expression, with its leading assertion removed, begins with a literal.
        for r in RULES {
            let body = r.regex.trim_start_matches("(?i)").trim_start_matches(r"\b");
            let body = body.replace('\\', "");
            let ok = r.literals.iter().any(|l| body.starts_with(l))
                || body.starts_with("(?:A3T")
                || body.starts_with("(?:password")
                || body.starts_with("(?:ghu|ghs)")
                || body.starts_with("xox[")
                || body.starts_with("(?:sk|rk)")
                || body.starts_with("sk-(?:");
            assert!(ok, "{}", r.id);
        }
    }

    /// Each text's hits by `r` on the calling thread, as (start, end, rule).
    fn hits_of(r: &Rules, texts: &[String]) -> Vec<Vec<(usize, usize, usize)>> {
        texts
            .iter()
            .map(|t| {
                let mut out = Vec::new();
                r.find_all(t, &mut out);
                out.iter().map(|h| (h.start, h.end, h.rule)).collect()
            })
            .collect()
    }

    #[test]
    fn each_thread_finds_the_same_hits_with_its_own_search_caches() {
        let r = std::sync::Arc::new(Rules::new().unwrap());
        let texts = [
            "key AKIAIOSFODNN7EXAMPLE and ghp_0123456789abcdefghijABCDEFGHIJ012345 here".to_owned(),
            "API_KEY = \"Zx9qP2vL7mKw8RtY3\" ; Password: Zx9!qP2#vL7m-Kw8".to_owned(),
            "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n".to_owned(),
            "nothing to see".to_owned(),
        ];
        let here = hits_of(&r, &texts);
        assert!(here[..3].iter().all(|h| !h.is_empty()), "{here:?}");
        assert!(here[3].is_empty());
        // Twice on one thread (its caches reused), then on threads of their own at once.
        assert_eq!(hits_of(&r, &texts), here);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (r, texts) = (r.clone(), texts.clone());
                std::thread::spawn(move || hits_of(&r, &texts))
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), here);
        }
    }

    use proptest::prelude::*;

    proptest::proptest! {
        /// Whatever a thread's caches hold from earlier texts, a text gets the hits a fresh
        /// thread gets: generated texts of every rule's literals, keyword assignments, PEM
        /// headers and footers, and filler, searched on two threads in opposite orders.
        #[test]
        fn a_threads_earlier_searches_change_no_hit(
            texts in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::prop_oneof![
                        proptest::sample::select(RULES.iter().flat_map(|r| r.literals.iter().copied()).collect::<Vec<_>>()).prop_map(str::to_owned),
                        proptest::sample::select(vec!["-----BEGIN RSA PRIVATE KEY-----\n", "-----END RSA PRIVATE KEY-----", " = \"", "': ", "=>", "\n"]).prop_map(str::to_owned),
                        "[A-Za-z0-9+/_.-]{1,40}",
                        "[ -~]{0,12}",
                    ],
                    0..12,
                ).prop_map(|pieces| pieces.concat()),
                1..6,
            ),
        ) {
            static SHARED: std::sync::OnceLock<std::sync::Arc<Rules>> = std::sync::OnceLock::new();
            let r = SHARED.get_or_init(|| std::sync::Arc::new(Rules::new().unwrap())).clone();
            let run = |r: std::sync::Arc<Rules>, texts: Vec<String>| std::thread::spawn(move || hits_of(&r, &texts)).join().unwrap();
            let forward = run(r.clone(), texts.clone());
            let mut backward = run(r.clone(), texts.iter().rev().cloned().collect());
            backward.reverse();
            prop_assert_eq!(&forward, &backward);
            // A fresh rule set, so fresh caches everywhere, agrees too.
            let fresh = run(std::sync::Arc::new(Rules::new().unwrap()), texts.clone());
            prop_assert_eq!(forward, fresh);
        }
    }

    #[test]
    fn entropy_gate() {
        assert!(looks_like_secret("Zx9!qP2#vL7m"));
        assert!(!looks_like_secret("changeme"));
        assert!(!looks_like_secret("aaaaaaaa1"));
        assert!(!looks_like_secret("${DB_PASSWORD}"));
        assert!(!looks_like_secret("YOUR_API_KEY_HERE"));
    }
}
