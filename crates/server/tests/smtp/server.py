"""A real SMTP server (aiosmtpd) with AUTH for airlock's send_email tests.

Usage: server.py PORT OUT_FILE; the expected user and password come from the environment
(SMTP_TEST_USER, SMTP_TEST_PASSWORD), never argv. Every AUTH attempt and every message that
arrives is appended to OUT_FILE as one JSON line. Prints READY when listening.
"""
import json
import logging
import os
import sys
import time
import warnings

# AUTH without TLS is what this loopback test server is for; keep its warnings out of test output.
warnings.simplefilter("ignore")
logging.getLogger("mail.log").setLevel(logging.ERROR)

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, out_path = int(sys.argv[1]), sys.argv[2]
user = os.environ["SMTP_TEST_USER"].encode()
password = os.environ["SMTP_TEST_PASSWORD"].encode()


def record(obj):
    with open(out_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj) + "\n")
        f.flush()


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == user and auth_data.password == password
    record({"auth": {"mechanism": mechanism, "login": auth_data.login.decode("utf-8", "replace") if isinstance(auth_data, LoginPassword) else None, "ok": ok}})
    return AuthResult(success=ok)


class Handler:
    async def handle_DATA(self, server, session, envelope):
        record({
            "message": {
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "data": envelope.content.decode("utf-8", "replace"),
                "authenticated": bool(session.authenticated),
            }
        })
        return "250 OK"


controller = Controller(
    Handler(),
    hostname="127.0.0.1",
    port=port,
    authenticator=authenticator,
    auth_required=True,
    auth_require_tls=False,
)
controller.start()
print("READY", flush=True)
try:
    while True:
        time.sleep(3600)
finally:
    controller.stop()
