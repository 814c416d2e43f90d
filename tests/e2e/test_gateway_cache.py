"""Gateway response cache (x-kiban-cache) through the real binary: HIT and
MISS with a backend that counts its hits, HEAD from a GET entry, TTL expiry
and max-age, Vary, per-user entries (unverified Authorization headers and
verified JWT subjects), what is never stored, a stampede of 20 concurrent
requests sending one upstream, purge through the API and the CLI, metrics,
and the spec errors."""
import base64
import hashlib
import hmac
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kiban import ServerTest, main, request, wait_for

GW = "/v1/projects/default/gateways"
SECRET = b"0123456789abcdef0123456789abcdef-cache-test"


class Backend:
    """A JSON backend on 127.0.0.1 that counts requests per path+query."""

    # extra response headers by path
    EXTRA = {
        "/nostore": [("Cache-Control", "no-store")],
        "/private": [("Cache-Control", "private")],
        "/cookie": [("Set-Cookie", "s=1")],
        "/maxage": [("Cache-Control", "max-age=1")],
        "/vary": [("Vary", "X-Unlisted")],
    }

    def __init__(self):
        self.hits = {}
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def answer(self, with_body):
                path = self.path.split("?")[0]
                with outer.lock:
                    n = outer.hits.get(self.path, 0) + 1
                    outer.hits[self.path] = n
                if path.startswith("/slow"):
                    time.sleep(0.5)
                status = 404 if path.startswith("/missing") else 200
                body = json.dumps({
                    "n": n, "target": self.path,
                    "lang": self.headers.get("Accept-Language"),
                    "auth": self.headers.get("Authorization"),
                }).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in Backend.EXTRA.get(path, []):
                    self.send_header(k, v)
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def do_GET(self):
                self.answer(True)

            def do_HEAD(self):
                self.answer(False)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       daemon=True)
        self.thread.start()

    def count(self, target):
        with self.lock:
            return self.hits.get(target, 0)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(sub, **extra):
    now = int(time.time())
    claims = {"iss": "cache-test", "aud": "cache-aud", "sub": sub,
              "iat": now, "exp": now + 3600}
    claims.update(extra)
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    sig = hmac.new(SECRET, (head + "." + body).encode(),
                   hashlib.sha256).digest()
    return head + "." + body + "." + b64url(sig)


def cached(ttl=60, **extra):
    policy = {"ttl": ttl}
    policy.update(extra)
    return {"get": {"x-kiban-cache": policy}}


class CacheTest(ServerTest):
    server_args = ("--gateway-workers", "2")

    def setUp(self):
        super().setUp()
        self.be = Backend()
        self.addCleanup(self.be.stop)
        secret_file = os.path.join(self.srv.data_dir, "jwt.secret")
        with open(secret_file, "wb") as f:
            f.write(SECRET)
        paths = {
            "/c/{x}": cached(30, vary=["Accept-Language"]),
            "/short": cached("1s"),
            "/maxage": cached(60),
            "/nostore": cached(60),
            "/private": cached(60),
            "/cookie": cached(60),
            "/vary": cached(60),
            "/missing": cached(60),
            "/pub": cached(60, public=True),
            "/slow/{x}": cached(60),
            "/nocache": {"get": {}},
            "/me": {"get": {"x-kiban-cache": {"ttl": 60},
                            "security": [{"jwt": []}]}},
        }
        doc = {"openapi": "3.0.3", "info": {"title": "t", "version": "1"},
               "x-google-backend": {
                   "address": "http://127.0.0.1:%d" % self.be.port},
               "components": {"securitySchemes": {"jwt": {
                   "type": "oauth2",
                   "flows": {"implicit": {"authorizationUrl": "https://x",
                                          "scopes": {}}},
                   "x-google-issuer": "cache-test",
                   "x-google-audiences": "cache-aud",
                   "x-kiban-secret-file": secret_file}}},
               "paths": paths}
        r = self.srv.api("POST", GW + "?gatewayId=main", {"openapi": doc})
        self.assertEqual(r.status, 200, r)
        wait_for(lambda: self.srv.gw("GET", "/nocache").status == 200, 10,
                 what="the gateway to serve the spec")

    def get(self, path, headers=None, method="GET"):
        return request(self.srv.gateway_port, method, path, None, headers)

    def test_miss_then_hit_and_head(self):
        r1 = self.get("/c/a?x=1&y=2")
        self.assertEqual(r1.status, 200, r1)
        self.assertEqual(r1.header("X-Cache"), "MISS")
        self.assertIsNone(r1.header("Age"))
        r2 = self.get("/c/a?y=2&x=1")       # same query, other order
        self.assertEqual(r2.status, 200, r2)
        self.assertEqual(r2.header("X-Cache"), "HIT")
        self.assertEqual(r2.body, r1.body)
        self.assertEqual(r2.header("Content-Type"), "application/json")
        self.assertIn(r2.header("Age"), ("0", "1"))
        self.assertRegex(r2.header("X-Request-Id"), r"^[0-9a-f]{32}$")
        self.assertEqual(self.be.count("/c/a?x=1&y=2"), 1)
        # HEAD is answered from the GET entry, without a body
        h = self.get("/c/a?x=1&y=2", method="HEAD")
        self.assertEqual(h.status, 200, h)
        self.assertEqual(h.header("X-Cache"), "HIT")
        self.assertEqual(h.body, b"")
        self.assertEqual(h.header("Content-Length"), str(len(r1.body)))
        self.assertEqual(self.be.count("/c/a?x=1&y=2"), 1)
        # other paths and queries are other entries
        self.assertEqual(self.get("/c/b").header("X-Cache"), "MISS")
        self.assertEqual(self.get("/c/a?x=1").header("X-Cache"), "MISS")
        # operations without x-kiban-cache say nothing
        self.assertIsNone(self.get("/nocache").header("X-Cache"))
        # a 404 is kept too
        self.assertEqual(self.get("/missing").status, 404)
        m = self.get("/missing")
        self.assertEqual((m.status, m.header("X-Cache")), (404, "HIT"))
        self.assertEqual(self.be.count("/missing"), 1)

    def test_ttl_and_max_age(self):
        self.assertEqual(self.get("/short").header("X-Cache"), "MISS")
        self.assertEqual(self.get("/short").header("X-Cache"), "HIT")
        time.sleep(1.2)
        self.assertEqual(self.get("/short").header("X-Cache"), "MISS")
        self.assertEqual(self.be.count("/short"), 2)
        # the backend's max-age=1 shortens the policy's 60 s
        self.assertEqual(self.get("/maxage").header("X-Cache"), "MISS")
        self.assertEqual(self.get("/maxage").header("X-Cache"), "HIT")
        time.sleep(1.2)
        self.assertEqual(self.get("/maxage").header("X-Cache"), "MISS")
        self.assertEqual(self.be.count("/maxage"), 2)

    def test_vary(self):
        ja = {"Accept-Language": "ja"}
        en = {"Accept-Language": "en"}
        self.assertEqual(self.get("/c/v", ja).header("X-Cache"), "MISS")
        r = self.get("/c/v", en)
        self.assertEqual(r.header("X-Cache"), "MISS")
        self.assertEqual(r.json()["lang"], "en")
        r = self.get("/c/v", ja)
        self.assertEqual(r.header("X-Cache"), "HIT")
        self.assertEqual(r.json()["lang"], "ja")
        self.assertEqual(self.get("/c/v").header("X-Cache"), "MISS")
        self.assertEqual(self.be.count("/c/v"), 3)

    def test_unverified_credentials_never_share(self):
        a = {"Authorization": "Bearer token-a"}
        b = {"Authorization": "Bearer token-b"}
        self.assertEqual(self.get("/c/u", a).header("X-Cache"), "MISS")
        rb = self.get("/c/u", b)
        self.assertEqual(rb.header("X-Cache"), "MISS")
        self.assertEqual(rb.json()["auth"], "Bearer token-b")
        self.assertEqual(self.get("/c/u").header("X-Cache"), "MISS")
        ra = self.get("/c/u", a)
        self.assertEqual(ra.header("X-Cache"), "HIT")
        self.assertEqual(ra.json()["auth"], "Bearer token-a")
        rb = self.get("/c/u", b)
        self.assertEqual(rb.json()["auth"], "Bearer token-b")
        self.assertEqual(self.be.count("/c/u"), 3)
        # a cookie is a credential too
        self.assertEqual(self.get("/c/u", {"Cookie": "s=1"})
                         .header("X-Cache"), "MISS")
        # public: one entry for everybody
        self.assertEqual(self.get("/pub", a).header("X-Cache"), "MISS")
        self.assertEqual(self.get("/pub", b).header("X-Cache"), "HIT")
        self.assertEqual(self.get("/pub").header("X-Cache"), "HIT")

    def test_verified_subjects(self):
        alice1 = {"Authorization": "Bearer " + hs256("alice")}
        alice2 = {"Authorization": "Bearer " + hs256("alice", nonce="2")}
        bob = {"Authorization": "Bearer " + hs256("bob")}
        r = self.get("/me", alice1)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("X-Cache"), "MISS")
        r = self.get("/me", bob)
        self.assertEqual(r.header("X-Cache"), "MISS")
        self.assertEqual(r.json()["auth"], bob["Authorization"])
        # another token of the same subject shares alice's entry
        r = self.get("/me", alice2)
        self.assertEqual(r.header("X-Cache"), "HIT")
        self.assertEqual(r.json()["auth"], alice1["Authorization"])
        self.assertEqual(self.be.count("/me"), 2)
        # a rejected token never reaches the cache
        r = self.get("/me", {"Authorization": "Bearer x.y.z"})
        self.assertEqual(r.status, 401, r)

    def test_never_stored(self):
        for path in ("/nostore", "/cookie", "/vary", "/private"):
            for _ in range(2):
                r = self.get(path)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.header("X-Cache"), "MISS", path)
            self.assertEqual(self.be.count(path), 2, path)
        # Cache-Control: private is kept per user when the user is known
        a = {"Authorization": "Bearer a"}
        self.assertEqual(self.get("/private", a).header("X-Cache"), "MISS")
        self.assertEqual(self.get("/private", a).header("X-Cache"), "HIT")
        # a Range request bypasses the cache
        r = self.get("/c/r", {"Range": "bytes=0-1"})
        self.assertEqual(r.header("X-Cache"), "BYPASS")

    def test_stampede_sends_one_request(self):
        results = [None] * 20
        go = threading.Barrier(20)

        def one(i):
            go.wait()
            results[i] = self.get("/slow/x")

        threads = [threading.Thread(target=one, args=(i,))
                   for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(self.be.count("/slow/x"), 1)
        self.assertTrue(all(r is not None and r.status == 200
                            for r in results), results)
        self.assertEqual(len({r.body for r in results}), 1)
        states = sorted(r.header("X-Cache") for r in results)
        self.assertEqual(states.count("MISS"), 1, states)
        self.assertEqual(states.count("HIT"), 19, states)

    def test_purge_api_cli_and_metrics(self):
        for p in ("/c/p1", "/c/p2", "/pub"):
            self.assertEqual(self.get(p).header("X-Cache"), "MISS")
            self.assertEqual(self.get(p).header("X-Cache"), "HIT")
        r = self.srv.api("POST", GW + "/main:purgeCache",
                         {"pathPrefix": "/c/"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["purged"], 2)
        self.assertEqual(self.get("/c/p1").header("X-Cache"), "MISS")
        self.assertEqual(self.get("/pub").header("X-Cache"), "HIT")
        rc, out, err = self.srv.cli("purge-cache", "main")
        self.assertEqual(rc, 0, err)
        self.assertIn("2 cached responses purged", out)
        self.assertEqual(self.get("/pub").header("X-Cache"), "MISS")
        r = self.srv.api("POST", GW + "/nope:purgeCache", {})
        self.assertEqual(r.status, 404, r)

        m = self.srv.api("GET", "/metrics").body.decode()
        hits = [l for l in m.splitlines() if l.startswith(
            'kiban_gateway_cache_requests_total{gateway="default/main",'
            'result="hit"}')]
        self.assertEqual(len(hits), 1, m[-3000:])
        self.assertEqual(int(float(hits[0].split()[-1])), 4)
        self.assertIn('result="miss"}', m)
        gauge = [l for l in m.splitlines()
                 if l.startswith("kiban_gateway_cache_bytes")]
        self.assertEqual(len(gauge), 1, gauge)
        self.assertGreater(float(gauge[0].split()[-1]), 0)

    def test_spec_errors(self):
        doc = {"openapi": "3.0.3", "info": {"title": "t", "version": "1"},
               "x-google-backend": {"address": "http://127.0.0.1:9"},
               "paths": {"/x": {"post": {"x-kiban-cache": {"ttl": 5}}}}}
        r = self.srv.api("POST", GW + "?gatewayId=bad", {"openapi": doc})
        msg = self.assertError(r, 400)
        self.assertIn("/paths/~1x/post/x-kiban-cache", msg)
        doc["paths"] = {"/x": {"get": {"x-kiban-cache": {"ttl": "soon"}}}}
        r = self.srv.api("POST", GW + "?gatewayId=bad", {"openapi": doc})
        msg = self.assertError(r, 400)
        self.assertIn("/paths/~1x/get/x-kiban-cache/ttl", msg)


if __name__ == "__main__":
    main()
