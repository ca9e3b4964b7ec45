#!/usr/bin/env python3
"""OAuth2 client-credentials token endpoint, as Databricks' /oidc/v1/token.

  python3 scripts/testservers/oauth.py [--port N] [--client-id ID]
      [--client-secret S] [--scope all-apis] [--expires-in SECONDS]
      [--token-secret S]

Prints its base URL as the first line. POST /oidc/v1/token with
Content-Type application/x-www-form-urlencoded and the body
grant_type=client_credentials&scope=all-apis; the client authenticates with
HTTP Basic (client_id:client_secret) or with client_id and client_secret in the
form. Answers
  200 {"access_token": ..., "token_type": "Bearer", "expires_in": N, "scope": "all-apis"}
  400 {"error": "invalid_request" | "unsupported_grant_type" | "invalid_scope", ...}
  401 {"error": "invalid_client", ...}   (unknown client or wrong secret)

Tokens are signed with --token-secret (default: random), carry their issue and
expiry times, and are checked by the MLflow test server started with the same
--token-secret (or by mlflow.py --oauth, which serves this endpoint itself).

/_control keys besides the common ones (scripts/testservers/common.py):
  {"expires_in": SECONDS}   lifetime of the tokens issued from now on
/_stats adds token_requests (every POST to the token path) and tokens_issued.
"""

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
from urllib.parse import parse_qs

import common

TOKEN_PATH = "/oidc/v1/token"


class TokenAuthority:
    """Issues and checks signed, expiring bearer tokens; thread-safe."""

    def __init__(self, secret, client_id, client_secret, scope, expires_in):
        self.secret = secret.encode()
        self.client_id, self.client_secret = client_id, client_secret
        self.scope, self.expires_in = scope, expires_in
        self.lock = threading.Lock()
        self.revoked_before = 0
        self.token_requests = 0
        self.tokens_issued = 0

    def sign(self, payload):
        return hmac.new(self.secret, payload.encode(), hashlib.sha256).hexdigest()[:32]

    def new_token(self, expires_in):
        iat = common.now_ms()
        payload = f"{iat}.{iat + int(expires_in * 1000)}.{secrets.token_hex(6)}"
        body = base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
        return f"dapi-test.{body}.{self.sign(payload)}"

    def check(self, token):
        """None when token is valid now, else why not."""
        if not token:
            return "Credential was not sent or was of an unsupported type for this API."
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != "dapi-test":
            return "Invalid access token."
        try:
            payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)).decode()
            iat, exp, _ = payload.split(".")
            iat, exp = int(iat), int(exp)
        except (ValueError, UnicodeDecodeError):
            return "Invalid access token."
        if not hmac.compare_digest(self.sign(payload), parts[2]):
            return "Invalid access token."
        if exp <= common.now_ms():
            return "Token expired."
        with self.lock:
            if iat < self.revoked_before:
                return "Token revoked."
        return None

    def revoke(self):
        """Tokens issued until now answer 401 from now on."""
        with self.lock:
            self.revoked_before = common.now_ms() + 1

    def client(self, headers, form):
        """(client_id, client_secret) from Basic auth or the form."""
        auth = headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                raw = base64.b64decode(auth[6:].strip(), validate=True).decode()
                cid, _, sec = raw.partition(":")
                return cid, sec
            except (ValueError, UnicodeDecodeError):
                return None, None
        return form.get("client_id", [None])[0], form.get("client_secret", [None])[0]

    def token_endpoint(self, method, headers, body):
        """(status, body) of one token request."""
        with self.lock:
            self.token_requests += 1
        if method != "POST":
            return 405, {"error": "invalid_request", "error_description": "use POST"}
        if common.media_type(headers) != "application/x-www-form-urlencoded":
            return 400, {"error": "invalid_request",
                         "error_description": "Content-Type must be application/x-www-form-urlencoded"}
        form = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
        cid, sec = self.client(headers, form)
        if cid != self.client_id or not hmac.compare_digest(str(sec or ""), self.client_secret):
            return 401, {"error": "invalid_client", "error_description": "Client authentication failed"}
        if form.get("grant_type", [""])[0] != "client_credentials":
            return 400, {"error": "unsupported_grant_type",
                         "error_description": "grant_type must be client_credentials"}
        scopes = form.get("scope", [""])[0].split()
        if self.scope not in scopes:
            return 400, {"error": "invalid_scope", "error_description": f"scope must be {self.scope}"}
        with self.lock:
            self.tokens_issued += 1
            expires_in = self.expires_in
        return 200, {"access_token": self.new_token(expires_in), "token_type": "Bearer",
                     "expires_in": int(expires_in) if expires_in == int(expires_in) else expires_in,
                     "scope": self.scope}

    def control(self, req):
        if "expires_in" in req:
            v = req["expires_in"]
            if not isinstance(v, (int, float)) or v <= 0:
                raise ValueError("expires_in must be a number of seconds > 0")
            with self.lock:
                self.expires_in = v
        if req.get("reset"):
            with self.lock:
                self.token_requests = self.tokens_issued = 0
        return {"expires_in": self.expires_in}

    def stats(self):
        with self.lock:
            return {"token_requests": self.token_requests, "tokens_issued": self.tokens_issued}


def add_arguments(p):
    p.add_argument("--client-id", default="sluice-test-client")
    p.add_argument("--client-secret", default="sluice-test-secret")
    p.add_argument("--scope", default="all-apis")
    p.add_argument("--expires-in", type=float, default=3600, help="token lifetime in seconds (default 3600)")
    p.add_argument("--token-secret", default=None,
                   help="key that signs the tokens; give the MLflow test server the same one")


def authority_from(args):
    secret = args.token_secret or os.environ.get("SLUICE_TEST_TOKEN_SECRET") or secrets.token_hex(16)
    return TokenAuthority(secret, args.client_id, args.client_secret, args.scope, args.expires_in)


class OAuthHandler(common.Handler):
    authority = None

    def serve(self, method, path, query, headers, body, spec):
        if path != TOKEN_PATH:
            raise common.Answer(404, {"error": "not_found"})
        status, out = self.authority.token_endpoint(method, headers, body)
        return status, out, {"Cache-Control": "no-store"}

    def error_body(self, status, spec):
        return {"error": "server_error", "error_description": f"HTTP {status}"}

    def control_extra(self, req):
        return self.authority.control(req)

    def stats_extra(self):
        return self.authority.stats()


def main():
    p = common.arg_parser(__doc__)
    add_arguments(p)
    args = p.parse_args()
    OAuthHandler.state = common.State(())
    OAuthHandler.authority = authority_from(args)
    common.serve_forever(OAuthHandler, args.port, args.verbose)


if __name__ == "__main__":
    main()
