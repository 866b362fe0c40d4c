#!/usr/bin/env python3
"""A Docker-registry token server (the Bearer flow Forgejo and ghcr use), for tests.

    token_server.py --dir DIR --port PORT --user U --password P
                    [--service test_registry] [--issuer test-issuer]
                    [--ttl SECONDS] [--anonymous-pull]

On start it creates (or reuses) DIR/token.key + DIR/token.crt, a self-signed
RSA-2048 certificate for the distribution registry's `auth.token.rootcertbundle`,
then serves on 127.0.0.1:PORT:

  GET  /v2/token?service=S&scope=repository:NAME:pull,push[&scope=…]
       with HTTP Basic credentials U:P  -> 200 {"token", "access_token",
       "expires_in", "issued_at"}; the JWT is RS256, header {alg, typ, kid, x5c},
       claims iss, sub, aud (= service), exp, nbf, iat, jti, access.
  POST /v2/token  (form: grant_type=password, username, password, service,
       scope) -> the same, the OAuth2 flavour some clients use.
  GET  /healthz   -> 200 "ok" (readiness probe, not logged).
  Wrong credentials -> 401. No credentials -> 401, unless --anonymous-pull,
  which then grants only the `pull` actions (like a public ghcr package).

Every request is appended to DIR/token.log as one JSON line:
  {"time", "method", "path", "authorization": "basic"|"bearer"|"other"|null,
   "user", "status", "scopes"}  — never a password or token.

--ttl sets the tokens' lifetime: `expires_in` = ttl, and the registry rejects
the token ttl seconds after issue. (distribution 2.8 accepts a JWT until
exp + 60 s — verified here — so the exp claim is iat + ttl - --leeway, which is
before iat when ttl < 60; clients should go by expires_in.) A short ttl (e.g. 3)
lets a test force a token to expire in the middle of a push. Works with python3-cryptography
38 (Debian 12) and newer.
"""

import argparse
import base64
import datetime
import hmac
import json
import os
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def libtrust_key_id(public_key) -> str:
    """The `kid` distribution/libtrust derives from a key: base32 of the first
    240 bits of SHA-256(DER SubjectPublicKeyInfo), in 12 groups of 4."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    b32 = base64.b32encode(digest.finalize()[:30]).decode("ascii")
    return ":".join(b32[i : i + 4] for i in range(0, 48, 4))


def load_or_create_key(directory: str):
    key_path = os.path.join(directory, "token.key")
    crt_path = os.path.join(directory, "token.crt")
    if os.path.exists(key_path) and os.path.exists(crt_path):
        with open(key_path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
        with open(crt_path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        return key, cert
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "guildhall-image test token signer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    tmp = key_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    os.chmod(tmp, 0o600)
    os.replace(tmp, key_path)
    with open(crt_path + ".tmp", "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(crt_path + ".tmp", crt_path)
    return key, cert


def parse_scopes(scopes, pull_only: bool):
    """'repository:a/b:pull,push' -> {"type","name","actions"}; names may hold ':' (ports)."""
    access = []
    for scope in scopes:
        for item in scope.split(" "):
            parts = item.split(":")
            if len(parts) < 3:
                continue
            rtype, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
            actions = [a for a in actions if a and (not pull_only or a == "pull")]
            access.append({"type": rtype, "name": name, "actions": actions})
    return access


class TokenServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, args, key, cert):
        super().__init__(("127.0.0.1", args.port), Handler)
        self.args = args
        self.key = key
        self.cert_der_b64 = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        self.kid = libtrust_key_id(key.public_key())
        self.log_lock = threading.Lock()
        self.log_path = os.path.join(args.dir, "token.log")

    def make_jwt(self, subject: str, service: str, access) -> dict:
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid, "x5c": [self.cert_der_b64]}
        claims = {
            "iss": self.args.issuer,
            "sub": subject,
            "aud": service,
            # distribution accepts a token until exp + 60 s (its fixed leeway);
            # subtract that so the registry rejects it exactly --ttl s after iat.
            "exp": now + self.args.ttl - self.args.leeway,
            "nbf": now - 1,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = (
            b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        sig = self.key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        token = signing_input + "." + b64url(sig)
        issued = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
        return {
            "token": token,
            "access_token": token,
            "expires_in": self.args.ttl,
            "issued_at": issued.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    def log_request_line(self, entry: dict):
        with self.log_lock, open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")


class Handler(BaseHTTPRequestHandler):
    server_version = "guildhall-test-token-server/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # stderr stays quiet; token.log is the record
        pass

    def _send(self, status: int, body: dict, extra_headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in extra_headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _credentials(self):
        """-> (kind, user, password) from the Authorization header."""
        value = self.headers.get("Authorization")
        if value is None:
            return None, None, None
        scheme, _, rest = value.partition(" ")
        if scheme.lower() != "basic":
            return ("bearer" if scheme.lower() == "bearer" else "other"), None, None
        try:
            user, _, password = base64.b64decode(rest.strip()).decode("utf-8").partition(":")
        except Exception:
            return "basic", None, None
        return "basic", user, password

    def _issue(self, kind, user, password, service, scopes):
        args = self.server.args
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "method": self.command,
            "path": urlsplit(self.path).path,
            "authorization": kind,
            "user": user,
            "scopes": scopes,
        }
        ok = (
            kind == "basic"
            and user is not None
            and hmac.compare_digest(user.encode(), args.user.encode())
            and hmac.compare_digest((password or "").encode(), args.password.encode())
        )
        if ok:
            status, body = 200, self.server.make_jwt(user, service, parse_scopes(scopes, False))
        elif kind is None and args.anonymous_pull:
            status, body = 200, self.server.make_jwt("", service, parse_scopes(scopes, True))
        else:
            status, body = 401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
        entry["status"] = status
        self.server.log_request_line(entry)
        headers = [("WWW-Authenticate", 'Basic realm="guildhall-test-token"')] if status == 401 else []
        self._send(status, body, headers)

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/healthz":
            data = b"ok"
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(data)
            return
        if url.path != "/v2/token":
            self.server.log_request_line({"method": "GET", "path": url.path, "status": 404,
                                          "authorization": self._credentials()[0]})
            self._send(404, {"errors": [{"code": "NOT_FOUND"}]})
            return
        q = parse_qs(url.query)
        kind, user, password = self._credentials()
        self._issue(kind, user, password, q.get("service", [self.server.args.service])[0], q.get("scope", []))

    def do_POST(self):
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace")) if length else {}
        if url.path != "/v2/token":
            self._send(404, {"errors": [{"code": "NOT_FOUND"}]})
            return
        kind, user, password = self._credentials()
        if form.get("grant_type", [""])[0] == "password":
            kind, user, password = "basic", form.get("username", [""])[0], form.get("password", [""])[0]
        scopes = []
        for s in form.get("scope", []):
            scopes.extend(s.split(" "))
        self._issue(kind, user, password, form.get("service", [self.server.args.service])[0], scopes)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", required=True, help="where token.key/token.crt/token.log live")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", default=os.environ.get("TOKEN_USER", "testuser"))
    p.add_argument("--password", default=os.environ.get("TOKEN_PASSWORD", "testpass"))
    p.add_argument("--service", default="test_registry")
    p.add_argument("--issuer", default="test-issuer")
    p.add_argument("--ttl", type=int, default=300, help="token lifetime in seconds")
    p.add_argument("--leeway", type=int, default=60,
                   help="the registry's clock leeway; the exp claim is iat + ttl - leeway (default 60, distribution 2.8's)")
    p.add_argument("--anonymous-pull", action="store_true", help="grant pull-only tokens without credentials")
    p.add_argument("--gen-cert-only", action="store_true", help="write token.key/token.crt and exit")
    args = p.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    key, cert = load_or_create_key(args.dir)
    if args.gen_cert_only:
        return
    server = TokenServer(args, key, cert)
    print(f"token server on http://127.0.0.1:{server.server_address[1]}/v2/token", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
