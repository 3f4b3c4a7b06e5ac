"""A real broker for the client's tests: ``airlock serve`` (the binary in ``AIRLOCK_BIN``) on a free
loopback port and a Unix socket, in front of a real HTTP upstream on 127.0.0.1 that echoes the
credential airlock injects, so a result that were not scrubbed would carry it.

The secret and the tokens are random per run and never printed: checks on them compute a bool
first (pytest would otherwise show the compared values when an assertion fails).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, List, Optional, Tuple

import httpx
import pytest

if TYPE_CHECKING:
    from airlock_client import AirlockClient

ROOT = Path(__file__).resolve().parents[3]

# Cedar: `bot` may ask a person for a plain secret (README "Requests for a secret").
POLICY = """@id("bot-may-ask")
permit(principal == Airlock::Agent::"bot", action == Airlock::Action::"request_secret", resource)
when { resource.requested && resource.kind == "generic" };
"""


def airlock_bin() -> str:
    b = os.environ.get("AIRLOCK_BIN")
    if b:
        # The broker runs in its own directory: a relative path is taken from here.
        return str(Path(b).resolve())
    for cand in (ROOT / "target/debug/airlock", ROOT / "target/release/airlock"):
        if cand.exists():
            return str(cand)
    found = shutil.which("airlock")
    if found:
        return found
    pytest.skip("no airlock binary: set AIRLOCK_BIN (cargo test --test python_client does)")
    raise AssertionError("unreachable")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Seen:
    method: str
    path: str
    authorization: Optional[str] = field(repr=False)


class Upstream:
    """An HTTP API on 127.0.0.1:0 that answers every request with the Authorization header it got."""

    def __init__(self) -> None:
        self.seen: List[Seen] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n).decode("utf-8", "replace") if n else ""
                auth = self.headers.get("Authorization")
                seen.append(Seen(self.command, self.path, auth))
                out = json.dumps({"path": self.path, "method": self.command, "authorization": auth, "body": body}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = _answer
            do_POST = _answer

            def log_message(self, *args: Any) -> None:  # quiet: the request line is not printed
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Broker:
    """The running broker and what the tests need to check it."""

    dir: Path
    base_url: str
    socket: Path
    token: str = field(repr=False)
    secret: str = field(repr=False)
    upstream: Upstream = field(repr=False)
    outbox: Path
    log: Path

    def leaks(self, value: Any) -> bool:
        """Whether ``value`` (any object; checked as its JSON and its repr) holds the secret or the
        token, in clear or in a common encoding. A bool, so a failing assert prints neither."""
        try:
            text = json.dumps(value, default=repr) + repr(value)
        except (TypeError, ValueError):
            text = repr(value)
        forms = set()
        for s in (self.secret, self.token):
            b = s.encode()
            forms |= {s, base64.b64encode(b).decode().rstrip("="), base64.urlsafe_b64encode(b).decode().rstrip("="), b.hex()}
        return any(f in text for f in forms)

    def assert_clean(self, value: Any, what: str = "the client's result") -> None:
        """Fails, naming only ``what``, when ``value`` holds the secret or the token. Tests call it
        first on everything they got, so that no later assertion can print a leaked value."""
        leaked = self.leaks(value)
        assert not leaked, f"{what} holds the secret or the token"

    @staticmethod
    def echo_args(path: str = "/v1/echo", method: str = "GET", handle: str = "API") -> dict:
        """http_request arguments for the echo upstream."""
        return {"credential_handle": handle, "method": method, "path_or_url": path}

    @staticmethod
    def body_of(result: dict) -> Tuple[int, dict]:
        """The status and the upstream's JSON answer inside an http_request result."""
        return int(result["status"]), json.loads(result["body"])

    def outbox_lines(self) -> List[dict]:
        if not self.outbox.exists():
            return []
        return [json.loads(line) for line in self.outbox.read_text().splitlines() if line.strip()]


def run(bin: str, d: Path, args: List[str], stdin: str = "") -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("AIRLOCK_TOKEN", "AIRLOCK_TOKEN_FILE", "RUST_LOG")}
    env["AIRLOCK_CONFIG"] = str(d / "airlock.toml")
    p = subprocess.run([bin, *args], cwd=d, env=env, input=stdin, capture_output=True, text=True, timeout=60)
    # The command and its stderr only: `agent add` prints a token on stdout.
    assert p.returncode == 0, f"airlock {args[0]} failed: {p.stderr}"
    return p.stdout.strip()


def config(port: int, up: int, d: Path) -> str:
    return f"""
[server]
listen = "127.0.0.1:{port}"
socket = "{d / 'run' / 'airlock.sock'}"

[store]
data_dir = "airlock-data"

[limits]
rate_per_minute = 100000

[policy]
files = ["{d / 'requests.cedar'}"]

[handles.API]
kind = "http"
secret = "local:API"
description = "echo API"
[handles.API.http]
destinations = [{{ url = "http://127.0.0.1:{up}/v1/", methods = ["GET", "POST"] }}]
inject = {{ type = "header", name = "Authorization", format = "Bearer {{}}" }}

[handles.OTHER_API]
kind = "http"
secret = "local:OTHER_API"
[handles.OTHER_API.http]
destinations = [{{ url = "http://127.0.0.1:{up}/v1/" }}]
inject = {{ type = "header", name = "Authorization", format = "Bearer {{}}" }}

[handles.SHARED]
kind = "generic"
secret = "local:SHARED"
description = "a password for people"

[shares]
base_url = "http://127.0.0.1:{port}"
[shares.channels.box]
type = "outbox"
path = "{d / 'outbox.jsonl'}"
[shares.recipients]
"alice@example.com" = "box"

[agents.bot]
grants = [
  {{ handle = "API", tools = ["http_request"] }},
  {{ handle = "SHARED", tools = ["share_secret"] }},
]

[agents.nobody]
grants = []
"""


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    bin = airlock_bin()
    d = tmp_path_factory.mktemp("airlock")
    run(bin, d, ["init"])
    upstream = Upstream()
    port = free_port()
    (d / "run").mkdir(exist_ok=True)
    (d / "requests.cedar").write_text(POLICY)
    (d / "airlock.toml").write_text(config(port, upstream.port, d))
    secret = "pyCanary_" + secrets.token_urlsafe(24)
    run(bin, d, ["secret", "put", "API"], stdin=secret)
    run(bin, d, ["secret", "put", "OTHER_API"], stdin="other_" + secrets.token_urlsafe(24))
    run(bin, d, ["secret", "put", "SHARED"], stdin="shared_" + secrets.token_urlsafe(24))
    token = run(bin, d, ["agent", "add", "bot"])
    one_word = bool(token) and len(token.split()) == 1
    assert one_word, "agent add did not print one token"

    log = d / "serve.log"
    env = {k: v for k, v in os.environ.items() if k not in ("AIRLOCK_TOKEN", "AIRLOCK_TOKEN_FILE")}
    env["AIRLOCK_CONFIG"] = str(d / "airlock.toml")
    env["RUST_LOG"] = "warn"
    with open(log, "wb") as logf:
        proc = subprocess.Popen([bin, "serve"], cwd=d, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=logf)
    base = f"http://127.0.0.1:{port}"
    sock = d / "run" / "airlock.sock"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"airlock serve exited ({proc.returncode}):\n{log.read_text()}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200 and sock.exists():
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "airlock serve did not start"
            time.sleep(0.1)
        yield Broker(dir=d, base_url=base, socket=sock, token=token, secret=secret, upstream=upstream, outbox=d / "outbox.jsonl", log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        upstream.stop()


@pytest.fixture()
def client(broker: Broker) -> Iterator["AirlockClient"]:
    from airlock_client import AirlockClient

    with AirlockClient(broker.base_url, broker.token, timeout=30) as c:
        yield c
