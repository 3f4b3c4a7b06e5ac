//! T24 through the whole broker: a secret that straddles an executor's size cap leaves no prefix
//! in the result, for every cut position inside it (http_request's body, run_command's stdout).

mod common;

use common::*;
use serde_json::json;

/// Where the token starts in the echo endpoint's body: `{"raw":"Bearer <token>"...`.
const TOKEN_AT: usize = r#"{"raw":"Bearer "#.len();

fn leaked(out: &str, secret: &str) -> Option<usize> {
    (airlock_scrub::MIN_CUT_FRAGMENT..=secret.len()).rev().find(|&k| out.contains(&secret[..k]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t24_http_body_cut_inside_the_secret_keeps_no_prefix_at_any_position() {
    let cuts: Vec<usize> = (TOKEN_AT + 1..TOKEN_AT + API_TOKEN.len()).collect();
    let f = Fixture::start_with(|t| {
        let mut t = t;
        let mut grants = String::new();
        for c in &cuts {
            let port = t.split("http://127.0.0.1:").nth(1).unwrap().split('/').next().unwrap().to_owned();
            t += &format!(
                "\n[handles.API_C{c}]\nkind = \"http\"\nsecret = \"local:API\"\n[handles.API_C{c}.http]\n\
                 destinations = [{{ url = \"http://127.0.0.1:{port}/v1/\", methods = [\"GET\"] }}]\n\
                 inject = {{ type = \"header\", name = \"Authorization\", format = \"Bearer {{}}\" }}\n\
                 max_response_bytes = {c}\n"
            );
            grants += &format!("  {{ handle = \"API_C{c}\", tools = [\"http_request\"] }},\n");
        }
        t.replace("  { handle = \"API\", tools = [\"http_request\"] },\n", &format!("  {{ handle = \"API\", tools = [\"http_request\"] }},\n{grants}"))
    })
    .await;
    for c in cuts {
        let (status, v) = f
            .invoke("http_request", json!({"credential_handle": format!("API_C{c}"), "method": "GET", "path_or_url": "/v1/echo"}))
            .await;
        assert_eq!(status, 200, "cap {c}: {v}");
        assert_eq!(v["result"]["truncated"], true, "cap {c}: {v}");
        let body = v["result"]["body"].as_str().unwrap();
        assert!(leaked(body, API_TOKEN).is_none(), "cap {c}: {body:?} keeps {:?} bytes of the token", leaked(body, API_TOKEN));
        let kept = c - TOKEN_AT;
        if kept >= airlock_scrub::MIN_CUT_FRAGMENT {
            // A short fragment may begin several secrets (here `cana` also begins SECRET_ONLY's
            // value): any marker will do, the fragment is gone.
            let marker_at = body.rfind("[REDACTED:").unwrap_or_else(|| panic!("cap {c}: {body:?}"));
            assert!(body.ends_with(']') && marker_at == TOKEN_AT, "cap {c}: {body:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t24_command_stdout_cut_inside_the_secret_keeps_no_prefix() {
    std::env::set_var("AIRLOCK_TEST_T24_SECRET", "t24CmdCanary_Vb6Nq1Rz8Lk3Xw");
    let secret = "t24CmdCanary_Vb6Nq1Rz8Lk3Xw";
    // The program prints 10 bytes, then the secret from its environment.
    let caps: Vec<usize> = (11..10 + secret.len()).step_by(3).collect();
    let f = Fixture::start_with(|t| {
        let mut t = t;
        let mut grants = String::new();
        for c in &caps {
            t += &format!(
                "\n[handles.CMD_C{c}]\nkind = \"command\"\nsecret = \"env:AIRLOCK_TEST_T24_SECRET\"\n[handles.CMD_C{c}.command]\n\
                 program = \"/bin/sh\"\nargs = [\"-c\", \"printf 0123456789; printf %s \\\"$S\\\"\"]\n\
                 secret_via = \"env\"\nsecret_env = \"S\"\nmax_output_bytes = {c}\n"
            );
            grants += &format!("  {{ handle = \"CMD_C{c}\", tools = [\"run_command\"] }},\n");
        }
        t.replace("  { handle = \"API\", tools = [\"http_request\"] },\n", &format!("  {{ handle = \"API\", tools = [\"http_request\"] }},\n{grants}"))
    })
    .await;
    for c in caps {
        let (status, v) = f.invoke("run_command", json!({"credential_handle": format!("CMD_C{c}"), "args": {}})).await;
        assert_eq!(status, 200, "cap {c}: {v}");
        assert_eq!(v["result"]["truncated"], true, "cap {c}: {v}");
        let out = v["result"]["stdout"].as_str().unwrap();
        assert!(out.starts_with("0123456789"), "cap {c}: {out:?}");
        assert!(leaked(out, secret).is_none(), "cap {c}: {out:?}");
    }
}

/// A failed call's detail reaches the operator's log bounded: a program that exits 1 with a line
/// that reads like bubblewrap's own failure (`bwrap: ...`) has that line quoted in the detail, with
/// its secret at every cut position of the bound the executor used to apply (300 characters of
/// the line) and of the one the broker applies to every detail (4,096 characters). No log line
/// keeps a prefix of the secret, and the agent's answer stays `command-failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t24_a_program_line_cut_in_the_operator_log_keeps_no_prefix() {
    capture_logs();
    std::env::set_var("AIRLOCK_TEST_T24_LOG_SECRET", "t24LogCanary_Qe4Wd7Hk2Pn9Zs");
    let secret = "t24LogCanary_Qe4Wd7Hk2Pn9Zs";
    let line_head = "bwrap: ";
    // `handle CMD_Dn: sandbox: ` with n of four digits is the detail's head before the line.
    let detail_head = "handle CMD_D0000: sandbox: ".len() + line_head.len();
    let mut pads: Vec<usize> = Vec::new();
    for kept in 1..secret.len() {
        pads.push(300 - line_head.len() - kept);
        pads.push(4096 - detail_head - kept);
    }
    let f = Fixture::start_with(|t| {
        let mut t = t;
        let mut grants = String::new();
        for (i, pad) in pads.iter().enumerate() {
            let filler = "x".repeat(*pad);
            t += &format!(
                "\n[handles.CMD_D{i:04}]\nkind = \"command\"\nsecret = \"env:AIRLOCK_TEST_T24_LOG_SECRET\"\n[handles.CMD_D{i:04}.command]\n\
                 program = \"/bin/sh\"\nargs = [\"-c\", \"printf '{line_head}{filler}' >&2; printf %s \\\"$S\\\" >&2; exit 1\"]\n\
                 secret_via = \"env\"\nsecret_env = \"S\"\n"
            );
            grants += &format!("  {{ handle = \"CMD_D{i:04}\", tools = [\"run_command\"] }},\n");
        }
        t.replace("  { handle = \"API\", tools = [\"http_request\"] },\n", &format!("  {{ handle = \"API\", tools = [\"http_request\"] }},\n{grants}"))
    })
    .await;
    for (i, pad) in pads.iter().enumerate() {
        let (status, v) = f.invoke("run_command", json!({"credential_handle": format!("CMD_D{i:04}"), "args": {}})).await;
        assert_eq!(v["error"]["code"], "command-failed", "pad {pad}: {status} {v}");
        let answer = v.to_string();
        assert!(leaked(&answer, secret).is_none(), "pad {pad}: {answer}");
    }
    let logs = captured_logs();
    assert!(logs.lines().any(|l| l.contains("CMD_D") && l.contains("bwrap: xxx")), "the detail was not logged");
    for l in logs.lines() {
        assert!(leaked(l, secret).is_none(), "a log line keeps {:?} bytes of the secret: {l}", leaked(l, secret));
    }
}
