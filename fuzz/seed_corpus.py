#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/) from airlock's test suite:
the SQL statements, URLs, share links and vectors, MCP/REST requests, secrets and texts, and TOML
configurations the tests use. Deterministic: running it again gives the same files. Each corpus is
capped (MAX_PER_TARGET); file names are the SHA-1 of the content, as libFuzzer names its own.

    python3 fuzz/seed_corpus.py            # rewrite every corpus
    python3 fuzz/seed_corpus.py scrub      # one target

Inputs of the targets whose property reads a header byte (see fuzz/props/*.rs):
  sql_validate      [selector] sql            selector % 72: dialect, scope, allow-list, ...
  http_destination  [selector] url \\n method   selector % 6: the bound destinations
  scrub             [len, pos, cut] secret text
"""
import base64
import hashlib
import json
import os
import re
import sys
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ = os.path.join(ROOT, "fuzz")
MAX_PER_TARGET = 300

STR = re.compile(r'r(#*)"(.*?)"\1|"((?:[^"\\]|\\.)*)"', re.S)


def rust_strings(path):
    """Every string literal of a Rust file (raw strings as written, escapes decoded)."""
    try:
        text = open(path, encoding="utf-8").read()
    except OSError:
        return []
    out = []
    for m in STR.finditer(text):
        if m.group(2) is not None:
            out.append(m.group(2))
            continue
        s = m.group(3)
        s = re.sub(r"\\\n\s*", "", s)  # line continuations
        s = re.sub(r"\\u\{([0-9a-fA-F]+)\}", lambda x: chr(int(x.group(1), 16)), s)
        s = s.replace("\\n", "\n").replace("\\t", "\t").replace("\\r", "\r").replace("\\0", "\0")
        s = s.replace('\\"', '"').replace("\\'", "'").replace("\\\\", "\\")
        out.append(s)
    return out


def files(*dirs, ext=".rs"):
    for d in dirs:
        d = os.path.join(ROOT, d)
        if os.path.isfile(d):
            yield d
            continue
        for base, _, names in os.walk(d):
            for n in sorted(names):
                if n.endswith(ext) and n != "fuzz_regressions.rs":
                    yield os.path.join(base, n)


def dedupe(items):
    seen, out = set(), []
    for i in items:
        if i not in seen:
            seen.add(i)
            out.append(i)
    return out


def cap(items):
    """At most MAX_PER_TARGET items, spread over the whole list."""
    items = dedupe(items)
    if len(items) <= MAX_PER_TARGET:
        return items
    step = len(items) / MAX_PER_TARGET
    return [items[int(i * step)] for i in range(MAX_PER_TARGET)]


def write(target, seeds):
    d = os.path.join(FUZZ, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for n in os.listdir(d):
        os.remove(os.path.join(d, n))
    seeds = cap([s if isinstance(s, bytes) else s.encode() for s in seeds])
    for s in seeds:
        with open(os.path.join(d, hashlib.sha1(s).hexdigest()), "wb") as f:
            f.write(s)
    print(f"{target}: {len(seeds)} seeds")


SQL_START = re.compile(
    r"^\s*\(*\s*(SELECT|WITH|INSERT|UPDATE|DELETE|MERGE|CALL|VALUES|TABLE|EXPLAIN|COPY|SET|SHOW|CREATE|DROP|"
    r"ALTER|PRAGMA|BEGIN|GRANT|LOCK|DO|LOAD|REPLACE|HANDLER|ATTACH|VACUUM|PREPARE|EXECUTE|TRUNCATE|COMMIT|"
    r"ROLLBACK|START|USE|DECLARE|LISTEN|NOTIFY|REINDEX)\b",
    re.I,
)


def sql_seeds():
    stmts = []
    for f in files("crates/exec/sql/src/validate", "crates/exec/sql/tests", "crates/exec/sql/benches",
                   "crates/server/tests"):
        stmts += [s for s in rust_strings(f) if SQL_START.match(s) and len(s) < 4000]
    stmts = dedupe(stmts)
    seeds = []
    for i, s in enumerate(stmts):
        # Spread the statements over the 72 handles; PostgreSQL-looking ones on PostgreSQL.
        sel = (i * 7) % 72
        if "$1" in s or "::" in s or "pg_" in s.lower():
            sel -= sel % 3
        seeds.append(bytes([sel]) + s.encode())
    return seeds


def http_seeds():
    urls = []
    for f in files("crates/exec/http/tests", "crates/exec/http/src/validate.rs", "crates/server/tests"):
        urls += [s for s in rust_strings(f) if re.match(r"^(/|https?://|[a-z]+://)", s) and len(s) < 500]
    seeds = []
    for i, u in enumerate(dedupe(urls)):
        if "127.0.0.1" in u or "localhost" in u:
            sel = 1
        elif "[::1]" in u:
            sel = 2
        elif "uploads" in u:
            sel = 3
        elif "10.0.0.5" in u:
            sel = 5
        else:
            sel = [0, 3, 4][i % 3]
        method = ["GET", "POST", "get", "PUT", "DELETE", "HEAD"][i % 6]
        extra = "\nX-Trace: 1\n\nbody" if i % 5 == 0 else ""
        seeds.append(bytes([sel]) + f"{u}\n{method}{extra}".encode())
    # The paths of those URLs on each handle's own destinations, mostly admitted.
    bases = [(0, "https://api.example.com/v1/", "GET"), (1, "http://127.0.0.1:8080/", "POST"),
             (2, "https://[::1]:8443/api/", "GET"), (3, "https://uploads.example.com:8443/in/", "PUT"),
             (4, "https://xn--bcher-kva.example/", "DELETE"), (5, "http://10.0.0.5/internal/", "PATCH"),
             (0, "/v1/", "POST"), (1, "/", "HEAD"), (3, "/v1/", "GET")]
    paths = dedupe(urllib.parse.urlsplit(u).path.strip("/") + (("?" + urllib.parse.urlsplit(u).query)
                                                               if urllib.parse.urlsplit(u).query else "")
                   for u in urls if urllib.parse.urlsplit(u).path not in ("", "/"))
    for i, p in enumerate(paths[:200]):
        sel, base, method = bases[i % len(bases)]
        seeds.append(bytes([sel]) + f"{base}{p}\n{method}".encode())
    return seeds


def share_seeds():
    seeds = []
    vec = json.load(open(os.path.join(ROOT, "crates/share/tests/vectors.json")))
    for v in vec["vectors"]:
        for k in ["link", "key", "proof", "proof_hash", "id", "ciphertext"]:
            seeds.append(v[k])
        seeds.append(base64.urlsafe_b64decode(v["ciphertext"] + "=" * (-len(v["ciphertext"]) % 4)))
    for f in files("crates/share", "crates/server/tests", "tests", "src"):
        seeds += [s for s in rust_strings(f) if "/s/" in s and len(s) < 500]
    # Padded plaintexts: length prefix, content, padding (some malformed).
    for n, body, pad in [(3, b"abc", b""), (0, b"", b""), (252, b"x" * 252, b""), (3, b"abc", b"\x00\x01"),
                         (300, b"y" * 10, b""), (253, b"z" * 253, b"")]:
        seeds.append(n.to_bytes(4, "big") + body + pad)
    return seeds


def mcp_seeds():
    seeds = []
    tools = {
        "query_db": {"credential_handle": "DB_PROD", "query": "SELECT id FROM orders WHERE id = $1", "params": [1]},
        "http_request": {"credential_handle": "API", "method": "GET", "path_or_url": "/v1/users?id=1",
                         "headers": {"Accept": "application/json"}},
        "send_email": {"credential_handle": "MAIL", "to": ["ops@example.com"], "subject": "hi", "body": "text"},
        "run_command": {"credential_handle": "DEPLOY", "args": {"env": "staging"}},
        "share_secret": {"credential_handle": "API", "recipient": "ops", "views": 1, "expires_in": 600},
        "request_lease": {"credential_handle": "DB_PROD", "scope": "read_only", "ttl_seconds": 300,
                          "tables": ["orders"]},
        "s3_object": {"credential_handle": "S3__L1A2B3C", "operation": "get", "bucket": "reports", "key": "a.csv"},
        "connect_account": {"credential_handle": "GITHUB", "owner": "alice"},
        "connect_status": {"credential_handle": "GITHUB", "connect_id": "abc"},
    }
    for i, (name, args) in enumerate(tools.items()):
        seeds.append(json.dumps({"jsonrpc": "2.0", "id": i + 1, "method": "tools/call",
                                 "params": {"name": name, "arguments": args}}))
        seeds.append(json.dumps({"tool": name, "arguments": args}))
        seeds.append(json.dumps({k: v for k, v in args.items() if k != "credential_handle"}))
    seeds += [
        json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {"elicitation": {"url": {}}},
            "clientInfo": {"name": "fuzz", "version": "1"}}}),
        json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json.dumps({"jsonrpc": "2.0", "id": "x", "method": "tools/list", "params": {"cursor": "c"}}),
        json.dumps({"jsonrpc": "2.0", "id": 9, "method": "ping"}),
        json.dumps({"jsonrpc": "2.0", "method": "notifications/airlock/token", "params": {"token": "t"}}),
        json.dumps({"jsonrpc": "2.0", "id": 3, "result": {}}),
        json.dumps({"name": "child-1", "grants": [{"handle": "DB_PROD", "tools": ["query_db"]}], "ttl_seconds": 60}),
        '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"query_db"}}\n{"jsonrpc":"2.0","id":2,"method":"ping"}',
    ]
    # JSON bodies written in the tests (json!({...}) without Rust expressions, and string literals).
    for f in files("crates/mcp/tests", "crates/server/tests", "tests"):
        text = open(f, encoding="utf-8").read()
        for m in re.finditer(r"json!\(", text):
            depth, j = 0, m.end()
            while j < len(text):
                c = text[j]
                depth += c in "([{"
                depth -= c in ")]}"
                if depth < 0:
                    break
                j += 1
            body = re.sub(r",(\s*[}\]])", r"\1", text[m.end():j])
            try:
                v = json.loads(body)
            except ValueError:
                continue
            if isinstance(v, dict) and v:
                seeds.append(json.dumps(v))
        for s in rust_strings(f):
            if s.startswith("{") and len(s) < 3000:
                try:
                    json.loads(s)
                    seeds.append(s)
                except ValueError:
                    pass
    return seeds


def scrub_seeds():
    secrets, texts = [], []
    for f in files("crates/scrub/tests", "crates/scrub/src", "crates/server/tests/canary.rs"):
        text = open(f, encoding="utf-8").read()
        for m in re.finditer(r'(?:scrubber_for|from_str_value|secret|const [A-Z_]+: &str =)\(?\s*"((?:[^"\\]|\\.)*)"', text):
            s = m.group(1).replace('\\"', '"').replace("\\\\", "\\")
            if 8 <= len(s.encode()) <= 64:
                secrets.append(s)
        texts += [s for s in rust_strings(f) if 10 <= len(s) <= 300 and " " in s]
    secrets = dedupe(secrets)[:60]
    texts = dedupe(texts)[:40] or ["plain text around the secret"]
    seeds = []
    for i, s in enumerate(secrets):
        b = s.encode()
        forms = [
            texts[i % len(texts)],
            "b64: " + base64.b64encode(b).decode() + " hex: " + b.hex(),
            "url: https://x.test/?k=" + urllib.parse.quote(s, safe=""),
            json.dumps({"rows": [[s[: len(s) // 2], s[len(s) // 2:]]]}),
            "-".join(s) + " " + s[::-1],
        ]
        for j, t in enumerate(forms):
            seeds.append(bytes([len(b) - 8, (i * 37 + j * 11) % 256, (i + j) % 256]) + b + t.encode())
    return seeds


def config_seeds():
    td = os.path.join(ROOT, "crates/core/src/config/testdata")
    full = open(os.path.join(td, "full.toml"), encoding="utf-8").read()
    seeds = [open(os.path.join(td, n), encoding="utf-8").read() for n in sorted(os.listdir(td)) if n.endswith(".toml")
             and n != "problems.toml"]
    try:
        import tomllib
        cases = tomllib.load(open(os.path.join(td, "problems.toml"), "rb"))["case"]
        for c in cases:
            if c["replace"] in full:
                seeds.append(full.replace(c["replace"], c["with"], 1))
    except (ImportError, KeyError):
        pass
    for f in files("crates/core/src/config", "crates/server/tests", "tests"):
        seeds += [s for s in rust_strings(f) if re.search(r"^\s*\[[a-z]", s, re.M) and "=" in s and len(s) < 20000]
    return seeds


def dict_entry(tok):
    out = []
    for b in tok.encode():
        if b in (0x22, 0x5C):
            out.append("\\" + chr(b))
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append("\\x%02X" % b)
    return '"' + "".join(out) + '"'


def write_dict(target, tokens):
    d = os.path.join(FUZZ, "dicts")
    os.makedirs(d, exist_ok=True)
    tokens = sorted(set(t for t in tokens if t))
    with open(os.path.join(d, target + ".dict"), "w") as f:
        f.write("# libFuzzer dictionary of " + target + " (written by fuzz/seed_corpus.py)\n")
        for t in tokens:
            f.write(dict_entry(t) + "\n")
    print(f"{target}: {len(tokens)} dictionary entries")


def sql_dict():
    toks = """SELECT FROM WHERE WITH RECURSIVE UNION ALL INTERSECT EXCEPT MINUS INSERT INTO VALUES UPDATE SET
    DELETE MERGE USING WHEN MATCHED NOT THEN CALL TABLE JOIN LEFT RIGHT FULL CROSS NATURAL ON AS ORDER BY GROUP
    HAVING LIMIT OFFSET FETCH FIRST ROWS ONLY FOR SHARE NOWAIT SKIP LOCKED LATERAL RETURNING OUTFILE DUMPFILE COPY TO
    PROGRAM EXPLAIN ANALYZE DISTINCT CASE END ELSE CAST COLLATE ESCAPE LIKE ILIKE BETWEEN IN IS NULL EXISTS ANY SOME
    OVER PARTITION WINDOW FILTER WITHIN MATERIALIZED PRAGMA ATTACH DATABASE SHOW BEGIN COMMIT ROLLBACK ROLE SESSION
    TRANSACTION READ WRITE DO LOAD DATA INFILE REPLACE IGNORE DUPLICATE KEY HANDLER LOCK TABLES TRUNCATE GRANT
    VACUUM PREPARE EXECUTE DECLARE CURSOR LISTEN NOTIFY""".split()
    toks += ["/*!", "/*!50000", "*/", "/*", "--", "-- ", "#", ";", "$1", "$2", "?", "::", "||", "->>", "->", "@@",
             "@x", "'", "''", '"', "`", "$$", "$tag$", "E'", "X'", "N'", "U&'", "\\", "(", ")", ",", "*",
             "orders", "public.customers", "shop.items", "customers", "items", "users", "public", "shop", "main",
             "pg_catalog", "pg_catalog.pg_authid", "information_schema", "information_schema.tables", "mysql.user",
             "performance_schema", "sys", "pg_toast", "sqlite_master", "sqlite_schema", "pragma_table_info", "dbstat",
             "my_func", "ssn", "id", "total", "generate_series", "json_each", "unnest"]
    text = open(os.path.join(ROOT, "crates/exec/sql/src/validate/functions.rs"), encoding="utf-8").read()
    toks += re.findall(r'"([a-z_][a-z0-9_]*)"', text)
    toks += re.findall(r'"([a-z_0-9]+)"', open(os.path.join(FUZZ, "props/sql_validate.rs")).read())
    return toks


def http_dict():
    return ["https://", "http://", "api.example.com", "127.0.0.1", "[::1]", "::1", ":443", ":8080", ":8443", ":80",
            "/v1/", "/v1", "/api", "/in", "/internal/", "uploads.example.com", "xn--bcher-kva.example",
            "b\u00fccher.example", "10.0.0.5", "%2e", "%2E", "%2f", "%2F", "%5c", "%252e", "%00", "..", ".", ";",
            "..;", "@", "#", "?", "&", "=", "?api_key=", "?token=", "api_key", "token", "\\", "//", "/./", "/../",
            "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "get", "0x7f.1", "2130706433", "0177.0.0.1",
            "[::ffff:127.0.0.1]", "localhost", "attacker.test", "user:pw@", ":0", ":65535", ":99999",
            "X-API-Key", "Authorization", "Host", "X-Forwarded-For", "x_forwarded_host", "Range", "Accept-Encoding",
            "Content-Length", "Transfer-Encoding", "Cookie", "\u3002", "\uff0e", "\u200b"]


def mcp_dict():
    toks = ['"jsonrpc"', '"2.0"', '"id"', '"method"', '"params"', '"name"', '"arguments"', '"result"', '"error"',
            '"tools/call"', '"tools/list"', '"initialize"', '"ping"', '"notifications/initialized"',
            '"notifications/airlock/token"', '"_meta"', '"cursor"', '"tool"', "null", "true", "false", "{}", "[]",
            "1e400", "-0", "\\u0000", "\\ud800"]
    for k in ["credential_handle", "query", "params", "method", "path_or_url", "headers", "body", "to", "cc",
              "subject", "reply_to", "args", "recipient", "views", "expires_in", "scope", "ttl_seconds", "tables",
              "buckets", "task_id", "operation", "bucket", "key", "owner", "connect_id", "grants", "tools",
              "read_only", "read_write", "query_db", "http_request", "send_email", "run_command", "share_secret",
              "request_lease", "s3_object", "connect_account", "connect_status", "mcp", "openai", "anthropic",
              "DB_PROD", "API", "get", "put", "list", "delete"]:
        toks.append('"' + k + '"')
    return toks


def config_dict():
    text = open(os.path.join(ROOT, "crates/core/src/config/testdata/full.toml"), encoding="utf-8").read()
    toks = re.findall(r"^\s*([a-z_]+)\s*=", text, re.M)
    toks += re.findall(r"^\s*(\[\[?[^\]\n]+\]\]?)", text, re.M)
    toks += re.findall(r'"([a-z_:]+)"', text)
    toks += ["= ", '"', "'''", '"""', "[", "]", "{", "}", ",", "\n", "0o", "0x", "1e9", "inf", "nan", "true",
             "false", "1979-05-27T07:32:00Z", "env:", "file:", "local:", "openbao:", "vault:"]
    return toks


DICTS = {"sql_validate": sql_dict, "http_destination": http_dict, "mcp_request": mcp_dict, "config_load": config_dict}

TARGETS = {
    "sql_validate": sql_seeds,
    "http_destination": http_seeds,
    "share_envelope": share_seeds,
    "mcp_request": mcp_seeds,
    "scrub": scrub_seeds,
    "config_load": config_seeds,
}

if __name__ == "__main__":
    for t in sys.argv[1:] or TARGETS:
        write(t, TARGETS[t]())
        if t in DICTS:
            write_dict(t, DICTS[t]())
