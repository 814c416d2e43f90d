"""Gateway authentication through the real binary: JWTs (RS256, PS256,
ES256, EdDSA, HS256) verified against keys a local JWKS server publishes,
key rotation, a JWKS server that is down or hangs, a Firebase-shaped token
with Google's x509 key document, and API keys.  Keys and tokens are made
here with the openssl CLI; the JWKS server is a python http.server on
127.0.0.1."""
import base64
import hashlib
import hmac
import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

from kiban import ServerTest, main, service, wait_for

SVC = "/v1/projects/default/services"
GW = "/v1/projects/default/gateways"
KEYS = "/v1/projects/default/apiKeys"
ISS = "https://issuer.kiban.test"
AUD = "kiban-e2e"


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def openssl(*args, data=None):
    return subprocess.run(["openssl"] + list(args), input=data,
                          capture_output=True, check=True).stdout


def der_ecdsa_to_jose(der, half):
    """ECDSA-Sig-Value (DER) → r || s, as JWS wants."""
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        n = der[i + 1]
        out += der[i + 2:i + 2 + n].lstrip(b"\0").rjust(half, b"\0")
        i += 2 + n
    return out


class Key:
    """A private key made with openssl, its public JWK and a signer."""

    def __init__(self, workdir, kind, kid):
        self.kid = kid
        self.kind = kind
        self.path = os.path.join(workdir, kid + ".pem")
        if kind == "RSA":
            openssl("genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:2048", "-out", self.path)
        elif kind == "EC":
            openssl("genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", self.path)
        else:
            openssl("genpkey", "-algorithm", "ED25519", "-out", self.path)
        self.pub_der = openssl("pkey", "-in", self.path, "-pubout",
                               "-outform", "DER")
        self.pub_pem = openssl("pkey", "-in", self.path, "-pubout")

    def jwk(self):
        if self.kind == "RSA":
            out = openssl("rsa", "-in", self.path, "-noout", "-modulus")
            n = bytes.fromhex(out.decode().strip().split("=", 1)[1])
            return {"kty": "RSA", "kid": self.kid, "use": "sig",
                    "n": b64u(n), "e": "AQAB"}
        if self.kind == "EC":
            point = self.pub_der[-65:]
            return {"kty": "EC", "crv": "P-256", "kid": self.kid,
                    "x": b64u(point[1:33]), "y": b64u(point[33:])}
        return {"kty": "OKP", "crv": "Ed25519", "kid": self.kid,
                "x": b64u(self.pub_der[-32:])}

    def cert(self, workdir):
        path = os.path.join(workdir, self.kid + ".crt")
        openssl("req", "-x509", "-new", "-key", self.path, "-subj",
                "/CN=securetoken.system.gserviceaccount.com", "-days", "1",
                "-out", path)
        with open(path) as f:
            return f.read()

    def sign(self, alg, data):
        if alg == "RS256":
            return openssl("dgst", "-sha256", "-sign", self.path, data=data)
        if alg == "PS256":
            return openssl("dgst", "-sha256", "-sign", self.path, "-sigopt",
                           "rsa_padding_mode:pss", "-sigopt",
                           "rsa_pss_saltlen:digest", data=data)
        if alg == "ES256":
            return der_ecdsa_to_jose(
                openssl("dgst", "-sha256", "-sign", self.path, data=data), 32)
        with tempfile.NamedTemporaryFile() as f:     # EdDSA signs raw input
            f.write(data)
            f.flush()
            return openssl("pkeyutl", "-sign", "-inkey", self.path, "-rawin",
                           "-in", f.name)


def token(claims, alg, key=None, kid=None, secret=None):
    header = {"alg": alg, "typ": "JWT"}
    if kid or key:
        header["kid"] = kid or key.kid
    signing = (b64u(json.dumps(header).encode()) + "." +
               b64u(json.dumps(claims).encode()))
    if secret is not None:
        sig = hmac.new(secret, signing.encode(), hashlib.sha256).digest()
    elif alg == "none":
        sig = b""
    else:
        sig = key.sign(alg, signing.encode())
    return signing + "." + b64u(sig)


def claims(iss=ISS, aud=AUD, sub="alice", exp_in=600, **extra):
    now = int(time.time())
    c = {"iss": iss, "aud": aud, "sub": sub, "iat": now - 5,
         "exp": now + exp_in}
    c.update(extra)
    return c


class JwksServer:
    """Serves key documents by path; counts fetches; can fail or hang."""

    def __init__(self):
        self.docs = {}
        self.hits = {}
        self.mode = "ok"                 # "ok", "down" (503), "hang"
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                with outer.lock:
                    outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                    doc, mode = outer.docs.get(self.path), outer.mode
                if mode == "hang":
                    time.sleep(8)
                if doc is None or mode != "ok":
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control",
                                 "public, max-age=19000, must-revalidate")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                     Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       daemon=True)
        self.thread.start()

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def set(self, path, doc):
        with self.lock:
            self.docs[path] = doc

    def count(self, path):
        with self.lock:
            return self.hits.get(path, 0)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def swagger(paths, defs, security=None):
    doc = {"swagger": "2.0", "info": {"title": "t", "version": "1"},
           "x-google-backend": {"address": "service://hello"},
           "securityDefinitions": defs, "paths": paths}
    if security is not None:
        doc["security"] = security
    return {"openapi": doc}


def jwt_scheme(uri, aud=AUD, iss=ISS, **extra):
    s = {"authorizationUrl": "", "flow": "implicit", "type": "oauth2",
         "x-google-issuer": iss, "x-google-jwks_uri": uri,
         "x-google-audiences": aud}
    s.update(extra)
    return s


OPEN = {"get": {"security": []}}


class AuthTest(ServerTest):
    server_args = ("--gateway-workers", "2")

    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="kiban-auth-")
        cls.rsa = Key(cls.work, "RSA", "r1")
        cls.rsa2 = Key(cls.work, "RSA", "r2")
        cls.ec = Key(cls.work, "EC", "e1")
        cls.ed = Key(cls.work, "ED25519", "d1")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.work, ignore_errors=True)

    def setUp(self):
        super().setUp()
        self.jwks = JwksServer()
        self.addCleanup(self.jwks.stop)
        r = self.srv.api("POST", SVC + "?serviceId=hello", service())
        self.assertEqual(r.status, 200, r)

    def deploy(self, body, name="main"):
        if self.srv.api("GET", GW + "/" + name).status == 200:
            r = self.srv.api("PATCH", GW + "/" + name, body)
        else:
            r = self.srv.api("POST", GW + "?gatewayId=" + name, body)
        self.assertEqual(r.status, 200, r)
        wait_for(lambda: self.srv.gw("GET", "/hello").status == 200, 20,
                 what="the hello service behind the gateway")

    def bearer(self, tok, path="/headers", extra=None):
        h = {"Authorization": "Bearer " + tok}
        h.update(extra or {})
        return self.srv.gw("GET", path, headers=h)

    def assert401(self, r, presented=True):
        msg = self.assertError(r, 401, "UNAUTHENTICATED")
        self.assertNotIn("expired", msg)       # no detail for attackers
        want = 'Bearer realm="kiban"'
        if presented:
            want += ', error="invalid_token"'
        self.assertEqual(r.header("WWW-Authenticate"), want)

    def test_jwt_algorithms_headers_and_refusals(self):
        self.jwks.set("/jwks", {"keys": [self.rsa.jwk(), self.ec.jwk(),
                                         self.ed.jwk()]})
        self.deploy(swagger(
            {"/headers": {"get": {}}, "/hello": OPEN,
             "/hello/{name}": {"get": {}}},
            {"jwt": jwt_scheme(self.jwks.url("/jwks"))},
            [{"jwt": []}]))

        r = self.srv.gw("GET", "/headers")
        self.assert401(r, presented=False)

        for alg, key in (("RS256", self.rsa), ("PS256", self.rsa),
                         ("ES256", self.ec), ("EdDSA", self.ed)):
            tok = token(claims(sub="user-" + alg), alg, key)
            r = self.bearer(tok, extra={
                "X-Apigateway-Api-Userinfo": "forged",
                "X-Forwarded-Authorization": "Bearer forged"})
            self.assertEqual(r.status, 200, (alg, r))
            got = r.json()
            payload = tok.split(".")[1]
            # the payload segment as Google sends it, not the forged one
            self.assertEqual(got["x-apigateway-api-userinfo"], payload)
            self.assertEqual(json.loads(unb64u(payload))["sub"],
                             "user-" + alg)
            # the original Authorization is kept and copied
            self.assertEqual(got["authorization"], "Bearer " + tok)
            self.assertEqual(got["x-forwarded-authorization"],
                             "Bearer " + tok)
        # one fetch served every request
        self.assertEqual(self.jwks.count("/jwks"), 1)

        # the default query location
        tok = token(claims(), "ES256", self.ec)
        r = self.srv.gw("GET", "/hello/q?access_token=" + tok)
        self.assertEqual(r.status, 200, r)

        with open(self.rsa.path + ".pub", "wb") as f:
            f.write(self.rsa.pub_pem)
        refused = {
            "expired": token(claims(exp_in=-120), "RS256", self.rsa),
            "wrong audience": token(claims(aud="someone-else"), "RS256",
                                    self.rsa),
            "wrong issuer": token(claims(iss="https://evil.test"), "RS256",
                                  self.rsa),
            "not yet valid": token(claims(nbf=int(time.time()) + 600),
                                   "ES256", self.ec),
            "bad signature": token(claims(), "RS256", self.rsa2, kid="r1"),
            "alg none": token(claims(), "none", kid="r1"),
            # HS256 keyed with the RSA public key: alg/key confusion
            "alg confusion": token(claims(), "HS256", kid="r1",
                                   secret=self.rsa.pub_pem),
            "RS256 on an EC key": token(claims(), "RS256", self.rsa,
                                        kid="e1"),
            "garbage": "not-a-token",
        }
        for why, tok in refused.items():
            with self.subTest(why):
                self.assert401(self.bearer(tok))

    def test_forged_userinfo_never_reaches_a_backend(self):
        """Backends trust X-Apigateway-Api-Userinfo: a client's own is
        dropped on every route, with auth or without."""
        self.jwks.set("/jwks", {"keys": [self.ec.jwk()]})
        self.deploy(swagger(
            {"/headers": OPEN, "/hello": OPEN},
            {"jwt": jwt_scheme(self.jwks.url("/jwks"))}))
        r = self.srv.gw("GET", "/headers", headers={
            "X-Apigateway-Api-Userinfo": b64u(b'{"sub":"admin"}'),
            "X-Forwarded-Authorization": "Bearer forged"})
        self.assertEqual(r.status, 200, r)
        self.assertNotIn("x-apigateway-api-userinfo", r.json())
        self.assertNotIn("x-forwarded-authorization", r.json())

    def test_rotation_and_a_jwks_server_that_fails(self):
        self.jwks.set("/jwks", {"keys": [self.rsa.jwk()]})
        self.deploy(swagger({"/headers": {"get": {}}, "/hello": OPEN},
                            {"jwt": jwt_scheme(self.jwks.url("/jwks"))},
                            [{"jwt": []}]))
        t1 = token(claims(sub="one"), "RS256", self.rsa)
        self.assertEqual(self.bearer(t1).status, 200)
        self.assertEqual(self.jwks.count("/jwks"), 1)

        # the issuer rotates in r2: its first token makes one refetch
        self.jwks.set("/jwks", {"keys": [self.rsa.jwk(), self.rsa2.jwk()]})
        t2 = token(claims(sub="two"), "RS256", self.rsa2)
        self.assertEqual(self.bearer(t2).status, 200)
        self.assertEqual(self.jwks.count("/jwks"), 2)

        # an unknown kid within 30 s does not fetch again
        stranger = Key(self.work, "EC", "x9")
        self.assert401(self.bearer(token(claims(), "ES256", stranger)))
        self.assertEqual(self.jwks.count("/jwks"), 2)

        # the JWKS server goes down: the keys held keep working
        self.jwks.mode = "down"
        for tok in (t1, t2, token(claims(sub="three"), "RS256", self.rsa)):
            self.assertEqual(self.bearer(tok).status, 200)

    def test_first_fetch_failing_or_hanging_answers_401(self):
        self.jwks.mode = "down"
        self.jwks.set("/jwks", {"keys": [self.ec.jwk()]})
        self.deploy(swagger({"/headers": {"get": {}}, "/hello": OPEN},
                            {"jwt": jwt_scheme(self.jwks.url("/jwks"))},
                            [{"jwt": []}]))
        tok = token(claims(), "ES256", self.ec)
        self.assert401(self.bearer(tok))
        self.assertEqual(self.jwks.count("/jwks"), 1)
        # back up: after the 5 s retry pause the next request fetches
        self.jwks.mode = "ok"
        time.sleep(5.2)
        self.assertEqual(self.bearer(tok).status, 200)

        # a server that never answers: the fetch times out, the waiting
        # request is answered (no hang), other requests go on
        self.jwks.mode = "hang"
        self.jwks.set("/slow", {"keys": [self.ec.jwk()]})
        self.deploy(swagger({"/headers": {"get": {}}, "/hello": OPEN},
                            {"jwt": jwt_scheme(self.jwks.url("/slow"))},
                            [{"jwt": []}]), name="main")
        box = {}
        waiter = threading.Thread(target=lambda: box.update(
            r=self.bearer(tok), t=time.monotonic()))
        start = time.monotonic()
        waiter.start()
        wait_for(lambda: self.jwks.count("/slow") == 1, 5,
                 what="the slow fetch to start")
        self.assertEqual(self.srv.gw("GET", "/hello").status, 200)
        waiter.join(15)
        self.assertFalse(waiter.is_alive())
        self.assert401(box["r"])
        self.assertLess(box["t"] - start, 7.5)

    def test_firebase_id_token(self):
        project = "kiban-demo"
        fb = Key(self.work, "RSA", "fb0c1e2d")
        self.jwks.set("/x509", {fb.kid: fb.cert(self.work),
                                "other": self.rsa.cert(self.work)})
        self.deploy(swagger(
            {"/headers": {"get": {}}, "/hello": OPEN},
            {"firebase": jwt_scheme(
                self.jwks.url("/x509"), aud=project,
                iss="https://securetoken.google.com/" + project)},
            [{"firebase": []}]))
        now = int(time.time())
        tok = token({"iss": "https://securetoken.google.com/" + project,
                     "aud": project, "auth_time": now - 30,
                     "user_id": "uid-42", "sub": "uid-42", "iat": now - 30,
                     "exp": now + 3570, "email": "a@example.com",
                     "firebase": {"identities": {},
                                  "sign_in_provider": "password"}},
                    "RS256", fb)
        r = self.bearer(tok)
        self.assertEqual(r.status, 200, r)
        info = json.loads(unb64u(r.json()["x-apigateway-api-userinfo"]))
        self.assertEqual(info["user_id"], "uid-42")
        self.assertEqual(info["firebase"]["sign_in_provider"], "password")

    def test_api_keys_and_local_secrets(self):
        secret = os.path.join(self.work, "hs.secret")
        with open(secret, "wb") as f:
            f.write(b"a-shared-secret-of-more-than-32-bytes\n")
        self.deploy(swagger(
            {"/hello": OPEN, "/hello/{name}": {"get": {}},
             "/headers": {"get": {"security": [{"hkey": []}, {"hs": []}]}}},
            {"key": {"type": "apiKey", "in": "query", "name": "key"},
             "hkey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
             "hs": {"type": "oauth2", "x-google-issuer": ISS,
                    "x-google-audiences": AUD,
                    "x-kiban-secret-file": secret}},
            [{"key": []}]))
        good = "?key=AIzaSy-e2e-key-0123456789"
        r = self.srv.gw("GET", "/hello/k")
        msg = self.assertError(r, 401, "UNAUTHENTICATED")
        self.assertIn("unregistered callers", msg)
        r = self.srv.api("POST", KEYS + "?apiKeyId=mobile",
                         {"keyString": "AIzaSy-e2e-key-0123456789"})
        self.assertEqual(r.status, 200, r)
        r = self.srv.gw("GET", "/hello/k" + good)
        self.assertEqual(r.status, 200, r)
        r = self.srv.gw("GET", "/hello/k?key=AIzaSy-e2e-key-wrong")
        msg = self.assertError(r, 400, "INVALID_ARGUMENT")
        self.assertEqual(msg, "API key not valid. Please pass a valid API "
                              "key.")
        # OR on /headers: a header key, or the HS256 token alone
        hs = token(claims(), "HS256",
                   secret=b"a-shared-secret-of-more-than-32-bytes")
        r = self.bearer(hs)
        self.assertEqual(r.status, 200, r)
        self.assertIn("x-apigateway-api-userinfo", r.json())
        r = self.srv.gw("GET", "/headers", headers={
            "X-Api-Key": "AIzaSy-e2e-key-0123456789"})
        self.assertEqual(r.status, 200, r)
        self.assertNotIn("x-apigateway-api-userinfo", r.json())
        self.assert401(self.bearer(hs[:-4] + "AAAA"))
        # a key for another gateway only
        r = self.srv.api("PATCH", KEYS + "/mobile", {"gateways": ["other"]})
        self.assertEqual(r.status, 200, r)
        r = self.srv.gw("GET", "/hello/k" + good)
        self.assertError(r, 403, "PERMISSION_DENIED")
        # deleted: unknown
        r = self.srv.api("DELETE", KEYS + "/mobile")
        self.assertEqual(r.status, 200, r)
        r = self.srv.gw("GET", "/hello/k" + good)
        self.assertError(r, 400)

        # a spec naming a missing secret file is refused whole, with the
        # pointer; the previous one keeps serving
        bad = swagger({"/headers": {"get": {}}},
                      {"hs": {"type": "oauth2", "x-google-issuer": ISS,
                              "x-google-audiences": AUD,
                              "x-kiban-secret-file": secret + ".missing"}},
                      [{"hs": []}])
        r = self.srv.api("PATCH", GW + "/main", bad)
        msg = self.assertError(r, 400, "INVALID_ARGUMENT")
        self.assertIn("/securityDefinitions/hs/x-kiban-secret-file", msg)
        self.assertEqual(self.bearer(hs).status, 200)


if __name__ == "__main__":
    main()
