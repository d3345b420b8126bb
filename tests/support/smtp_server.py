"""A real SMTP server for the email tests: aiosmtpd on 127.0.0.1:PORT.

Each message it accepts becomes one JSON line in --received: the envelope, the AUTH login used,
the raw message, and its headers and parts as Python's email package reads them, so the tests
check what an SMTP server received, not what our code meant to send.

--user/--password require AUTH (PLAIN or LOGIN, allowed without TLS: this is loopback). --reject
and --defer answer RCPT for an address with 550 or 451. It prints "ready" once it accepts
connections, and stops when its stdin closes, so it never outlives the test that started it.
"""

import argparse
import json
import sys
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from email import policy
from email.parser import BytesParser


class Recorder:
    def __init__(self, path, reject, defer):
        self.path = path
        self.reject = set(reject)
        self.defer = set(defer)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.reject:
            return "550 5.1.1 <%s>: no such user here" % address
        if address in self.defer:
            return "451 4.3.0 <%s>: mailbox busy, try again later" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        message = BytesParser(policy=policy.default).parsebytes(raw)
        text = message.get_body(preferencelist=("plain",))
        html = message.get_body(preferencelist=("html",))
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "auth_login": login,
            "raw": raw.decode("utf-8", "replace"),
            "headers": {name: str(value) for name, value in message.items()},
            "content_type": message.get_content_type(),
            "parts": [part.get_content_type() for part in message.iter_parts()] if message.is_multipart() else [],
            "text": text.get_content() if text is not None else None,
            "html": html.get_content() if html is not None else None,
        }
        with open(self.path, "a", encoding="utf-8") as received:
            received.write(json.dumps(record) + "\n")
        return "250 2.0.0 Message accepted for delivery"


def authenticator(user, password):
    def check(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user \
            and auth_data.password.decode() == password
        # handled=False: aiosmtpd then answers a failure with 535 itself (by default it leaves that to us).
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)
    return check


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--received", required=True)
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--reject", action="append", default=[])
    parser.add_argument("--defer", action="append", default=[])
    args = parser.parse_args()

    options = {}
    if args.user is not None:
        # Plain-text AUTH is the point here (loopback, a test password), not a mistake to warn of.
        warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
        options = dict(authenticator=authenticator(args.user, args.password), auth_required=True,
                       auth_require_tls=False)
    controller = Controller(Recorder(args.received, args.reject, args.defer), hostname="127.0.0.1",
                            port=args.port, **options)
    controller.start()
    print("ready", flush=True)
    sys.stdin.read()
    controller.stop()


if __name__ == "__main__":
    main()
