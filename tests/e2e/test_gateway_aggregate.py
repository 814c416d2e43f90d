"""Gateway aggregation (x-kiban-aggregate) through the real binary: three
backends that each take 0.2 s answered together in about 0.2 s, paths
filled from path and query parameters, partial answers (backend down, slow
past its timeout, error status, not JSON) marked in the body and a header,
required calls, the cache after the merge and per call."""
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kiban import ServerTest, main, request, wait_for

GW = "/v1/projects/default/gateways"


class Backend:
    """A backend on 127.0.0.1: answers {"from": name, "target": …} after
    `delay` seconds; /status/N answers N, /html answers text, /slow sleeps
    1 s.  Counts requests per target."""

    def __init__(self, name, delay=0.0):
        self.hits = {}
        self.seen = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                with outer.lock:
                    outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                    outer.seen.append(dict(self.headers))
                time.sleep(delay)
                status, ctype = 200, "application/json"
                body = json.dumps({"from": name, "target": self.path,
                                   "auth": self.headers.get("Authorization"),
                                   "n": outer.hits[self.path]})
                if self.path.startswith("/status/"):
                    status = int(self.path.split("/")[2])
                elif self.path.startswith("/html"):
                    ctype, body = "text/html", "<html>no</html>"
                elif self.path.startswith("/slow"):
                    time.sleep(1.0)
                data = body.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass                 # the gateway gave up (timeout)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def count(self, target):
        with self.lock:
            return self.hits.get(target, 0)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port():
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def agg(calls, **extra):
    op = {"x-kiban-aggregate": dict(calls=calls, **extra)}
    return {"get": op}


class AggregateTest(ServerTest):
    server_args = ("--gateway-workers", "2")

    def setUp(self):
        super().setUp()
        self.users = Backend("users", 0.2)
        self.orders = Backend("orders", 0.2)
        self.feed = Backend("feed", 0.2)
        for b in (self.users, self.orders, self.feed):
            self.addCleanup(b.stop)
        down = "http://127.0.0.1:%d" % closed_port()
        u, o, f = self.users.url, self.orders.url, self.feed.url
        three = [
            {"name": "user", "address": u, "path": "/users/{id}"},
            {"name": "orders", "address": o,
             "path": "/orders?user={id}&limit={query.limit}"},
            {"name": "feed", "address": f + "/v2", "path": "/feed/{id}"},
        ]
        paths = {
            "/home/{id}": agg(three),
            "/partial/{id}": agg([
                {"name": "user", "address": u, "path": "/users/{id}"},
                {"name": "down", "address": down, "path": "/x"},
                {"name": "slow", "address": o, "path": "/slow",
                 "timeout": "0.5s"},
                {"name": "err", "address": f, "path": "/status/503"},
                {"name": "html", "address": f, "path": "/html"},
                {"name": "opt", "address": f,
                 "path": "/opt/{query.missing}"},
            ]),
            "/overall/{id}": agg([
                {"name": "user", "address": u, "path": "/users/{id}"},
                {"name": "slow", "address": o, "path": "/slow"},
            ], timeout="0.6s"),
            "/needs-down": agg([
                {"name": "user", "address": u, "path": "/users/1"},
                {"name": "down", "address": down, "path": "/x",
                 "required": True}]),
            "/needs-404": agg([
                {"name": "user", "address": u, "path": "/users/1"},
                {"name": "gone", "address": f, "path": "/status/404",
                 "required": True}]),
            "/needs-query": agg([
                {"name": "q", "address": u, "path": "/q/{query.id}",
                 "required": True}]),
            "/merged/{id}": {"get": {
                "x-kiban-cache": {"ttl": 60},
                "x-kiban-aggregate": {"calls": three[:2]}}},
            "/percall/{id}": agg([
                {"name": "user", "address": u, "path": "/users/{id}",
                 "cache": {"ttl": 60}},
                {"name": "feed", "address": f, "path": "/feed/{id}"}]),
        }
        doc = {"openapi": "3.0.3", "info": {"title": "t", "version": "1"},
               "paths": paths}
        r = self.srv.api("POST", GW + "?gatewayId=main", {"openapi": doc})
        self.assertEqual(r.status, 200, r)
        wait_for(lambda: self.srv.gw("GET", "/needs-404").status == 404, 10,
                 what="the gateway to serve the spec")

    def get(self, path, headers=None):
        return request(self.srv.gateway_port, "GET", path, None, headers)

    def test_parallel_merge(self):
        self.get("/home/0?limit=1")          # warm the connection pools
        t0 = time.monotonic()
        r = self.get("/home/7?limit=5", {
            "Authorization": "Bearer abc",
            "X-Apigateway-Api-Userinfo": "eyJzdWIiOiJhZG1pbiJ9",   # forged
            "X-Forwarded-Authorization": "Bearer forged"})
        took = time.monotonic() - t0
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("Content-Type"), "application/json")
        self.assertIsNone(r.header("X-Kiban-Partial"))
        body = r.json()
        self.assertEqual(set(body), {"user", "orders", "feed"})
        self.assertEqual(body["user"]["target"], "/users/7")
        self.assertEqual(body["orders"]["target"], "/orders?user=7&limit=5")
        self.assertEqual(body["feed"]["target"], "/v2/feed/7")
        self.assertEqual(body["user"]["auth"], "Bearer abc")
        # three calls of 0.2 s each: together, not one after the other
        self.assertLess(took, 0.5, "took %.3fs" % took)
        self.assertGreaterEqual(took, 0.19)
        # each call carries the request's id
        rid = r.header("X-Request-Id")
        for b in (self.users, self.orders, self.feed):
            self.assertEqual(b.seen[-1].get("X-Request-Id"), rid)
            # only the gateway may say who the caller is
            self.assertNotIn("X-Apigateway-Api-Userinfo", b.seen[-1])
            self.assertNotIn("X-Forwarded-Authorization", b.seen[-1])
        # values are percent-encoded: they cannot add segments or params
        r = self.get("/home/a%2Fb?limit=1%262")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["user"]["target"], "/users/a%2Fb")
        self.assertEqual(r.json()["orders"]["target"],
                         "/orders?user=a%2Fb&limit=1%262")

    def test_partial(self):
        t0 = time.monotonic()
        r = self.get("/partial/3")
        took = time.monotonic() - t0
        self.assertEqual(r.status, 200, r)
        body = r.json()
        self.assertEqual(body["user"]["target"], "/users/3")
        for k in ("down", "slow", "err", "html", "opt"):
            self.assertIn(k, body)
            self.assertIsNone(body[k])
        self.assertEqual(body["_partial"], {
            "down": "unreachable", "slow": "timeout", "err": "status 503",
            "html": "not JSON", "opt": "missing value"})
        self.assertEqual(r.header("X-Kiban-Partial"),
                         "down, slow, err, html, opt")
        self.assertEqual(r.header("Cache-Control"), "no-store")
        # the slow call was cut at its 0.5 s timeout
        self.assertLess(took, 1.0, "took %.3fs" % took)
        # the overall timeout caps every call
        t0 = time.monotonic()
        r = self.get("/overall/1")
        took = time.monotonic() - t0
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["_partial"], {"slow": "timeout"})
        self.assertLess(took, 1.0, "took %.3fs" % took)

    def test_required(self):
        r = self.get("/needs-down")
        msg = self.assertError(r, 502)
        self.assertIn('"down"', msg)
        self.assertEqual(r.header("X-Kiban-Partial"), "down")
        r = self.get("/needs-404")
        self.assertError(r, 404)
        r = self.get("/needs-query")
        msg = self.assertError(r, 400)
        self.assertIn("query.id", msg)
        self.assertEqual(self.get("/needs-query?id=1").status, 200)

    def test_cache_after_merge(self):
        r1 = self.get("/merged/42?limit=2")
        self.assertEqual(r1.status, 200, r1)
        self.assertEqual(r1.header("X-Cache"), "MISS")
        r2 = self.get("/merged/42?limit=2")
        self.assertEqual(r2.header("X-Cache"), "HIT")
        self.assertEqual(r2.body, r1.body)
        self.assertEqual(r2.header("Content-Type"), "application/json")
        self.assertEqual(self.users.count("/users/42"), 1)
        self.assertEqual(self.orders.count("/orders?user=42&limit=2"), 1)

    def test_cache_per_call(self):
        r1 = self.get("/percall/5")
        r2 = self.get("/percall/5")
        self.assertEqual(r1.status, 200, r1)
        self.assertIsNone(r2.header("X-Cache"))      # the merge is not
        self.assertEqual(r2.json()["user"], r1.json()["user"])
        self.assertEqual(self.users.count("/users/5"), 1)
        self.assertEqual(self.feed.count("/feed/5"), 2)
        self.assertEqual(r2.json()["feed"]["n"], 2)
        # entries are per user: another credential calls again
        self.get("/percall/5", {"Authorization": "Bearer other"})
        self.assertEqual(self.users.count("/users/5"), 2)

    def test_spec_errors(self):
        doc = {"openapi": "3.0.3", "info": {"title": "t", "version": "1"},
               "paths": {"/x": {"get": {"x-kiban-aggregate": {"calls": [
                   {"name": "a", "address": "http://127.0.0.1:9",
                    "path": "/u/{id}"}]}}}}}
        r = self.srv.api("POST", GW + "?gatewayId=bad", {"openapi": doc})
        msg = self.assertError(r, 400)
        self.assertIn("/paths/~1x/get/x-kiban-aggregate/calls/0: path: {id} "
                      "is not a path parameter", msg)
        doc["paths"]["/x"]["get"]["x-kiban-aggregate"] = {"calls": []}
        r = self.srv.api("POST", GW + "?gatewayId=bad", {"openapi": doc})
        self.assertIn("calls: must be an array of 1 to 32",
                      self.assertError(r, 400))


if __name__ == "__main__":
    main()
