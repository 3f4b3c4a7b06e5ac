//! Pattern rules (gitleaks-derived): a positive and a negative example for each rule, and a
//! negative corpus of ordinary output that must pass untouched.

use airlock_scrub::Scrubber;

/// Deterministic pseudo-random characters from `alphabet` (fixtures are built at run time so that
/// no token-shaped literal sits in the source).
fn chars(alphabet: &str, n: usize, seed: u64) -> String {
    let a: Vec<char> = alphabet.chars().collect();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            a[(x % a.len() as u64) as usize]
        })
        .collect()
}

const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER27: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const HEX: &str = "0123456789abcdef";
const URLSAFE: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

fn expect_rule(text: &str, token: &str, rule: &str) {
    let s = Scrubber::empty();
    let (out, n) = s.scrub_str(text);
    assert!(n >= 1, "{rule}: nothing in {text:?}");
    assert!(out.contains(&format!("[REDACTED:{rule}]")), "{rule}: {out}");
    assert!(!out.contains(token), "{rule}: token left in {out}");
}

fn expect_clean(text: &str) {
    let (out, n) = Scrubber::empty().scrub_str(text);
    assert_eq!(n, 0, "false positive: {text:?} -> {out:?}");
}

fn positive_and_negative(rule: &str, token: String, negatives: &[String]) {
    expect_rule(&format!("value: {token}\n"), &token, rule);
    expect_rule(&format!("{{\"k\":\"{token}\"}}"), &token, rule);
    for n in negatives {
        expect_clean(n);
    }
}

#[test]
fn rule_aws_access_token() {
    let t = format!("AKIA{}", chars(UPPER27, 16, 1));
    positive_and_negative(
        "aws-access-token",
        t.clone(),
        &[format!("AKIA{}", chars(UPPER27, 12, 1)), format!("XAKIA{}", chars(UPPER27, 16, 1)), "AKIA is a prefix".into()],
    );
    expect_rule(&format!("id=ASIA{}", chars(UPPER27, 16, 2)), "ASIA", "aws-access-token");
}

#[test]
fn rule_github_tokens() {
    for (prefix, id) in [
        ("ghp_", "github-pat"),
        ("gho_", "github-oauth"),
        ("ghu_", "github-app-token"),
        ("ghs_", "github-app-token"),
        ("ghr_", "github-refresh-token"),
    ] {
        let t = format!("{prefix}{}", chars(ALNUM, 36, 3));
        positive_and_negative(id, t, &[format!("{prefix}{}", chars(ALNUM, 20, 3)), format!("{prefix} is short")]);
    }
    let fg = format!("github_pat_{}_{}", chars(ALNUM, 22, 4), chars(ALNUM, 59, 5));
    positive_and_negative("github-fine-grained-pat", fg, &["github_pat_tooshort".into()]);
}

#[test]
fn rule_gitlab_pat() {
    positive_and_negative(
        "gitlab-pat",
        format!("glpat-{}", chars(URLSAFE, 20, 6)),
        &["glpat-short".into(), "see glpat- docs".into()],
    );
}

#[test]
fn rule_slack_tokens_and_webhook() {
    positive_and_negative(
        "slack-bot-token",
        format!("xoxb-{}-{}-{}", chars("0123456789", 12, 7), chars("0123456789", 13, 8), chars(ALNUM, 24, 9)),
        &["xoxb-not-a-token".into()],
    );
    positive_and_negative(
        "slack-user-token",
        format!(
            "xoxp-{}-{}-{}-{}",
            chars("0123456789", 12, 10),
            chars("0123456789", 12, 11),
            chars("0123456789", 12, 12),
            chars(HEX, 32, 13)
        ),
        &["xoxp-123".into()],
    );
    positive_and_negative(
        "slack-legacy-workspace-token",
        format!("xoxa-2-{}", chars(ALNUM, 40, 14)),
        &["xoxa-2".into()],
    );
    positive_and_negative(
        "slack-legacy-token",
        format!("xoxs-{}-{}-{}-{}", 1234567890, 2345678901u64, 3456789012u64, chars(HEX, 64, 15)),
        &["xoxs-1-2".into()],
    );
    positive_and_negative(
        "slack-webhook-url",
        format!(
            "https://hooks.slack.com/services/T{}/B{}/{}",
            chars(UPPER27, 8, 16),
            chars(UPPER27, 8, 17),
            chars(ALNUM, 24, 18)
        ),
        &["https://hooks.slack.com/services/".into(), "hooks.slack.com is Slack".into()],
    );
}

#[test]
fn rule_stripe() {
    for p in ["sk_live_", "rk_live_", "sk_test_"] {
        positive_and_negative(
            "stripe-access-token",
            format!("{p}{}", chars(ALNUM, 24, 19)),
            &[format!("{p}short"), "task_live_stream".into()],
        );
    }
}

#[test]
fn rule_openai() {
    positive_and_negative(
        "openai-api-key",
        format!("sk-proj-{}", chars(URLSAFE, 120, 20)),
        &["a task-proj-planning note".into(), "sk-proj-short".into()],
    );
    positive_and_negative(
        "openai-api-key",
        format!("sk-{}T3BlbkFJ{}", chars(ALNUM, 20, 21), chars(ALNUM, 20, 22)),
        &["risk-free, desk-bound".into()],
    );
}

#[test]
fn rule_anthropic() {
    positive_and_negative(
        "anthropic-api-key",
        format!("sk-ant-api03-{}AA", chars(URLSAFE, 93, 23)),
        &["sk-ant-api03-short".into(), "the sk-ant- prefix".into()],
    );
}

#[test]
fn rule_google_api_key() {
    positive_and_negative(
        "gcp-api-key",
        format!("AIza{}", chars(URLSAFE, 35, 24)),
        &["AIza is short".into(), format!("AIza{}", chars(URLSAFE, 20, 24))],
    );
}

#[test]
fn rule_private_key_pem_block() {
    let body: Vec<String> = (0..6).map(|i| chars(&format!("{ALNUM}+/"), 64, 30 + i)).collect();
    let pem = format!(
        "-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----",
        body.join("\n")
    );
    let s = Scrubber::empty();
    let text = format!("before\n{pem}\nafter text here");
    let (out, n) = s.scrub_str(&text);
    assert_eq!(n, 1);
    assert_eq!(out, "before\n[REDACTED:private-key]\nafter text here");
    // Inside a JSON string (escaped newlines) and PKCS#8 / OpenSSH headers.
    let json = serde_json::json!({ "key": pem.replace("RSA PRIVATE", "PRIVATE") }).to_string();
    let (out, _) = s.scrub_str(&json);
    assert_eq!(out, "{\"key\":\"[REDACTED:private-key]\"}");
    let ssh = pem.replace("RSA PRIVATE", "OPENSSH PRIVATE");
    assert_eq!(s.scrub_str(&ssh).0, "[REDACTED:private-key]");
    // Truncated output without a footer: the body still goes.
    let truncated = format!("-----BEGIN PRIVATE KEY-----\n{}\n{}", body[0], body[1]);
    let (out, _) = s.scrub_str(&truncated);
    assert_eq!(out, "[REDACTED:private-key]");
    // Negatives: public keys and certificates, prose about keys.
    expect_clean(&pem.replace("RSA PRIVATE KEY", "PUBLIC KEY"));
    expect_clean(&pem.replace("RSA PRIVATE KEY", "CERTIFICATE"));
    expect_clean("-----BEGIN is how PEM starts; a PRIVATE KEY block follows.");
}

#[test]
fn rule_private_key_many_headers_stay_linear() {
    // T20: many headers without footers must not rescan the text for each one.
    let text = "-----BEGIN PRIVATE KEY-----\nAAAAAAAAAAAAAAAAAAAA\n".repeat(20_000);
    let t0 = std::time::Instant::now();
    let (out, n) = Scrubber::empty().scrub_str(&text);
    assert!(n >= 1 && !out.contains("AAAAAAAAAAAAAAAA"));
    assert!(t0.elapsed() < std::time::Duration::from_secs(5), "{:?}", t0.elapsed());
}

#[test]
fn rule_jwt() {
    let header = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";
    let payload = format!("eyJ{}", chars(URLSAFE, 40, 40));
    let sig = chars(URLSAFE, 43, 41);
    positive_and_negative(
        "jwt",
        format!("{header}.{payload}.{sig}"),
        &["eyJ".into(), format!("{header} alone"), "they key eyJust.eyJoking".into()],
    );
}

#[test]
fn rule_sendgrid() {
    positive_and_negative(
        "sendgrid-api-token",
        format!("SG.{}.{}", chars(URLSAFE, 22, 42), chars(URLSAFE, 43, 43)),
        &["SG.short.token".into(), "Singapore (SG.) office".into()],
    );
}

#[test]
fn rule_twilio() {
    positive_and_negative(
        "twilio-api-key",
        format!("SK{}", chars(HEX, 32, 44)),
        &["SKU-12345".into(), format!("SK{}", chars(HEX, 20, 44)), format!("ASK{}", chars(HEX, 32, 44))],
    );
}

#[test]
fn rule_generic_password_assignments() {
    let v = "Zx9qP2vL7mT4";
    for text in [
        format!("password={v}"),
        format!("DB_PASSWORD: \"{v}\""),
        format!("client_secret = '{v}'"),
        format!("{{\"api_key\": \"{v}\"}}"),
        format!("access_token => {v}"),
        format!("PASSWD={v} next"),
    ] {
        let (out, n) = Scrubber::empty().scrub_str(&text);
        assert_eq!(n, 1, "{text}");
        assert!(out.contains("[REDACTED:generic-api-key]") && !out.contains(v), "{out}");
        // The key name stays readable.
        assert!(out.len() > "[REDACTED:generic-api-key]".len());
    }
    for text in [
        "password=changeme",
        "password: ${DB_PASSWORD}",
        "api_key=YOUR_API_KEY_HERE",
        "secret=true",
        "the password is stored in the vault",
        "token: 12345678",
        "tokens = 100000000",
        "password: [REDACTED:DB_PROD]",
        "Forgot password? Click here.",
    ] {
        expect_clean(text);
    }
}

#[test]
fn negative_corpus_passes_untouched() {
    let corpus = [
        "The quick brown fox jumps over the lazy dog. Skies are blue; ask the desk-side team.",
        "550e8400-e29b-41d4-a716-446655440000 and 123e4567-e89b-12d3-a456-426614174000",
        "commit 3f786850e387550fdab836ed7e6dc881de23001b (HEAD -> main)",
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "colors: #ff00aa #FFF #1e90ff rgb(0, 0, 0)",
        "SKU-20240101 shipped via AKIA Logistics; ghost_protocol; xoxo from Ana",
        "Call sk-learn's fit(); a risk-averse task-based plan; eyJ is the prefix.",
        "SELECT id, name FROM users WHERE token_count > 10 AND secret_level = 3;",
        "Base64 of hello is aGVsbG8= and hex is 68656c6c6f.",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
        "https://example.com/path?query=1&page=2#section",
        "2024-01-01T12:00:00Z INFO request_id=01HZX4ZK3V8Q status=200 latency=12ms",
    ];
    for text in corpus {
        expect_clean(text);
    }
}

#[test]
fn rule_prefilter_agrees_with_full_regex_scan() {
    // The literal prefilter must find exactly what each rule's regex finds on the whole text.
    use airlock_scrub::rules::Rules;
    let rules = Rules::new().unwrap();
    let tokens = [
        format!("AKIA{}", chars(UPPER27, 16, 50)),
        format!("ghp_{}", chars(ALNUM, 36, 51)),
        format!("glpat-{}", chars(URLSAFE, 24, 52)),
        format!("sk_live_{}", chars(ALNUM, 30, 53)),
        format!("AIza{}", chars(URLSAFE, 35, 54)),
        format!("SK{}", chars(HEX, 32, 55)),
        format!("SG.{}.{}", chars(URLSAFE, 22, 56), chars(URLSAFE, 43, 57)),
        format!("sk-proj-{}", chars(URLSAFE, 60, 58)),
        format!("xoxb-123456789012-{}", chars(ALNUM, 20, 59)),
    ];
    let words = ["alpha ", "beta ", "sk-", "SK", "AIza", "ghp_", "\n", "eyJ", "x.", "AKIA"];
    for seed in 0..200u64 {
        let mut text = String::new();
        let picks = chars("0123456789abcdefghij", 60, seed + 100);
        for (i, c) in picks.chars().enumerate() {
            let d = c.to_digit(20).unwrap() as usize;
            if d < words.len() {
                text.push_str(words[d]);
            } else {
                text.push_str(&tokens[(d + i) % tokens.len()]);
                text.push(if i % 2 == 0 { ' ' } else { ',' });
            }
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        rules.find_all(&text, &mut a);
        rules.find_all_unfiltered(&text, &mut b);
        let key = |h: &airlock_scrub::rules::RuleHit| (h.rule, h.start, h.end);
        let mut a: Vec<_> = a.iter().filter(|h| !matches!(rules.id(h.rule), "private-key" | "generic-api-key")).map(key).collect();
        let mut b: Vec<_> = b.iter().map(key).collect();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{text}");
    }
}
