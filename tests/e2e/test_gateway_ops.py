#!/usr/bin/env python3
"""The gateway's operational behaviour, through the real binary: access log,
per-operation metrics, retries within a budget, outlier ejection and the
least-loaded choice among a service's instances, API keys as a resource,
the purgeCache method, and several data-path loops."""

import json
import os
import sys
import threading
import time
import http.server

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kiban import (Server, ServerTest, free_port, main, request,  # noqa: E402
                   service, wait_for)

# An instance that tells who answered, counts its hits in a file, fails
# with 503 when it is the one that won the "bad" lock, and answers /slow
# after a second.
INSTANCE = r'''
import http.server, os, sys, time
port = int(os.environ["PORT"])
state = sys.argv[1]
bad = False
if sys.argv[2] == "one-bad":
    try:
        os.close(os.open(os.path.join(state, "bad"), os.O_CREAT | os.O_EXCL))
        bad = True
    except FileExistsError:
        pass
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        with open(os.path.join(state, "hits-%d" % port), "a") as f:
            f.write("x")
        if self.path == "/slow":
            time.sleep(1.0)
        code = 503 if bad else 200
        body = ("%d %s" % (port, "bad" if bad else "good")).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
'''


class Flaky(http.server.BaseHTTPRequestHandler):
    """503 on the first call to each path, then 200; counts calls."""
    protocol_version = "HTTP/1.1"
    calls = {}
    lock = threading.Lock()

    def answer(self):
        with Flaky.lock:
            n = Flaky.calls.get((self.command, self.path), 0) + 1
            Flaky.calls[(self.command, self.path)] = n
        code = 503 if n == 1 else 200
        body = b'{"n":%d}' % n
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.answer()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.answer()

    def log_message(self, *a):
        pass


def gateway(srv, name, doc):
    r = srv.api("POST", "/v1/projects/default/gateways?gatewayId=" + name,
                {"openapi": doc})
    assert r.status == 200, r.body


def access_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class AccessLogTest(ServerTest):
    def setUp(self):
        self.log_file = None
        super().setUp()

    @property
    def server_args(self):
        self.log_file = os.path.join("/tmp", "kiban-access-%d.log" % os.getpid())
        if os.path.exists(self.log_file):
            os.unlink(self.log_file)
        return ("--access-log", self.log_file)

    def test_one_json_line_per_request_and_metrics(self):
        self.addCleanup(lambda: os.path.exists(self.log_file) and
                        os.unlink(self.log_file))
        r = self.srv.api("POST", "/v1/projects/default/services?serviceId=hi",
                         service())
        self.assertEqual(r.status, 200, r.body)
        gateway(self.srv, "hi", {
            "openapi": "3.0.3", "info": {"title": "t", "version": "1"},
            "x-google-backend": {"address": "service://hi"},
            "paths": {"/hello": {"get": {"operationId": "hello"}}}})
        wait_for(lambda: self.srv.gw("GET", "/hello").status == 200, 20,
                 what="the service to answer")
        r = self.srv.gw("GET", "/hello", headers={
            "User-Agent": "probe/1", "X-Request-Id": "req-42",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-"
                           "b7ad6b7169203331-01"})
        self.assertEqual(r.status, 200)
        self.assertEqual(self.srv.gw("GET", "/nowhere").status, 404)

        def logged():
            lines = access_lines(self.log_file)
            return [l for l in lines if l.get("request_id") == "req-42"] and \
                [l for l in lines if l.get("path") == "/nowhere"] and lines
        lines = wait_for(logged, 5, what="access-log lines (flushed each s)")
        hit = [l for l in lines if l.get("request_id") == "req-42"][0]
        self.assertEqual(hit["msg"], "access")
        self.assertEqual(hit["method"], "GET")
        self.assertEqual(hit["path"], "/hello")
        self.assertEqual(hit["status"], 200)
        self.assertEqual(hit["route"], "GET /hello")
        self.assertEqual(hit["gateway"], "default/hi")
        self.assertEqual(hit["service"], "hi")
        self.assertEqual(hit["trace_id"], "0af7651916cd43dd8448eb211c80319c")
        self.assertEqual(hit["client"], "127.0.0.1")
        self.assertEqual(hit["user_agent"], "probe/1")
        self.assertGreater(hit["bytes"], 0)
        self.assertGreaterEqual(hit["duration_ms"], hit["upstream_ms"])
        self.assertGreater(hit["upstream_ms"], 0)
        self.assertRegex(hit["upstream"], r"^127\.0\.0\.1:\d+$")
        self.assertRegex(hit["revision"], r"^hi-00001-[a-z0-9]{3}$")
        miss = [l for l in lines if l.get("path") == "/nowhere"][0]
        self.assertEqual(miss["status"], 404)
        self.assertNotIn("route", miss)

        text = request(self.srv.api_port, "GET", "/metrics").body.decode()
        self.assertRegex(
            text, r'kiban_gateway_request_duration_seconds_count\{'
                  r'gateway="default/hi",route="GET /hello",code="2xx"\} \d+')
        self.assertIn('kiban_gateway_upstream_duration_seconds_bucket{'
                      'gateway="default/hi",route="GET /hello"', text)


class RetryTest(ServerTest):
    def setUp(self):
        super().setUp()
        Flaky.calls = {}
        self.backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
        threading.Thread(target=self.backend.serve_forever, daemon=True).start()
        self.addCleanup(self.backend.shutdown)
        port = self.backend.server_address[1]
        gateway(self.srv, "flaky", {
            "swagger": "2.0", "info": {"title": "t", "version": "1"},
            "x-google-backend": {"address": "http://127.0.0.1:%d" % port},
            "paths": {"/r/{id}": {"get": {}, "post": {}},
                      "/down": {"get": {"x-google-backend": {
                          "address": "http://127.0.0.1:%d" % free_port()}}}}})

    def test_idempotent_retried_post_not(self):
        r = self.srv.gw("GET", "/r/1")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json(), {"n": 2})        # the retry answered
        r = self.srv.gw("POST", "/r/1", body={"x": 1})
        self.assertEqual(r.status, 503)             # never replayed
        self.assertEqual(Flaky.calls[("POST", "/r/1")], 1)

    def test_connect_failure_gives_up_after_attempts(self):
        r = self.srv.gw("GET", "/down")
        self.assertError(r, 502)

    def test_budget_limits_retries(self):
        # every first call fails: retries are bounded by the budget (10
        # banked + 20 % of requests), not one per request
        for i in range(60):
            self.srv.gw("GET", "/r/b%d" % i)
        retried = sum(1 for (m, p), n in Flaky.calls.items()
                      if p.startswith("/r/b") and n >= 2)
        self.assertGreaterEqual(retried, 10)
        self.assertLessEqual(retried, 10 + 60 * 0.2 + 1)


class InstancesTest(ServerTest):
    def start_service(self, mode, instances=2):
        self.state = os.path.join(self.srv.data_dir, "inst")
        os.mkdir(self.state)
        script = os.path.join(self.srv.data_dir, "inst.py")
        with open(script, "w") as f:
            f.write(INSTANCE)
        r = self.srv.api("POST", "/v1/projects/default/services?serviceId=pool",
                         service(command=sys.executable,
                                 args=[script, self.state, mode],
                                 instances=instances))
        self.assertEqual(r.status, 200, r.body)
        gateway(self.srv, "pool", {
            "openapi": "3.0.3", "info": {"title": "t", "version": "1"},
            "x-google-backend": {"address": "service://pool"},
            "paths": {"/who": {"get": {}}, "/slow": {"get": {}}}})

        def ready():
            st = self.srv.api("GET", "/v1/projects/default/services/pool")
            return st.json().get("status", {}).get("ready") == instances
        wait_for(ready, 30, what="both instances")

    def hits(self):
        out = {}
        for name in os.listdir(self.state):
            if name.startswith("hits-"):
                with open(os.path.join(self.state, name)) as f:
                    out[int(name[5:])] = len(f.read())
        return out

    def test_failing_instance_is_ejected(self):
        self.start_service("one-bad")
        for _ in range(40):
            r = self.srv.gw("GET", "/who")
            self.assertEqual(r.status, 200, r.body)   # retries hide the bad one
            self.assertIn(b"good", r.body)
        bad_port = None
        for port in self.hits():
            r = request(port, "GET", "/who")
            if r.status == 503:
                bad_port = port
        self.assertIsNotNone(bad_port)
        # 5 consecutive failures eject it; the probe above adds one hit
        self.assertLessEqual(self.hits()[bad_port], 5 + 1)
        with open(self.srv.log_path) as f:
            self.assertIn("backend instance ejected", f.read())

    def test_least_loaded_instance_gets_the_request(self):
        self.start_service("all-good")
        slow = {}
        t = threading.Thread(target=lambda: slow.update(
            r=self.srv.gw("GET", "/slow")))
        t.start()
        wait_for(lambda: sum(self.hits().values()) == 1, 5,
                 what="the slow call to arrive")
        busy = list(self.hits())[0]
        for _ in range(6):
            r = self.srv.gw("GET", "/who")
            self.assertEqual(r.status, 200)
            self.assertNotEqual(int(r.body.split()[0]), busy)
        t.join()
        self.assertEqual(slow["r"].status, 200)


class ApiKeyTest(ServerTest):
    def test_keys_are_resources_with_the_secret_shown_once(self):
        r = self.srv.api("POST", "/v1/projects/default/apiKeys?apiKeyId=web",
                         {"displayName": "web app"})
        self.assertEqual(r.status, 200, r.body)
        key = r.json()["keyString"]
        self.assertRegex(key, r"^kbk_[0-9a-f]{40}$")
        self.assertEqual(len(r.json()["keyHash"]), 64)
        r = self.srv.api("GET", "/v1/projects/default/apiKeys/web")
        self.assertEqual(r.status, 200)
        self.assertNotIn("keyString", r.json())
        self.assertNotIn(key, r.body.decode())
        self.assertEqual(r.json()["keyPrefix"], key[:8])
        # an update without keyString keeps the key
        h = r.json()["keyHash"]
        r = self.srv.api("PATCH", "/v1/projects/default/apiKeys/web",
                         {"displayName": "renamed"})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json()["keyHash"], h)
        # a given key is stored as its hash only
        r = self.srv.api("POST", "/v1/projects/default/apiKeys?apiKeyId=moved",
                         {"keyString": "AIzaSyA-moved-from-google-123"})
        self.assertEqual(r.status, 200, r.body)
        self.assertNotIn("keyString", r.json())
        with open(os.path.join(self.srv.data_dir, "kiban.db"), "rb") as f:
            self.assertNotIn(b"AIzaSyA-moved-from-google-123", f.read())
        r = self.srv.api("POST", "/v1/projects/default/apiKeys?apiKeyId=bad",
                         {"keyString": "short"})
        self.assertError(r, 400, "INVALID_ARGUMENT")

    def test_cli_create_key_and_purge(self):
        rc, out, err = self.srv.cli("create-key", "mobile", "--gateway", "api")
        self.assertEqual(rc, 0, err)
        self.assertRegex(out.strip(), r"^kbk_[0-9a-f]{40}$")
        rc, out, err = self.srv.cli("get", "apikeys", "-o", "json")
        self.assertEqual(rc, 0, err)
        self.assertIn("mobile", out)
        rc, out, err = self.srv.cli("create-key", "Bad_Name")
        self.assertEqual(rc, 2)
        rc, out, err = self.srv.cli("purge-cache", "nope")
        self.assertEqual(rc, 1)
        self.assertIn("not found", err)
        gateway(self.srv, "api", {
            "openapi": "3.0.3", "info": {"title": "t", "version": "1"},
            "x-google-backend": {"address": "http://127.0.0.1:1"},
            "paths": {"/a": {"get": {}}}})
        rc, out, err = self.srv.cli("purge-cache", "api", "--path-prefix", "/a")
        self.assertEqual(rc, 0, err)
        self.assertIn("0 cached responses purged", out)
        r = self.srv.api("POST",
                         "/v1/projects/default/gateways/api:purgeCache",
                         {"pathPrefix": 7})
        self.assertError(r, 400)


class LoopsTest(ServerTest):
    server_args = ("--gateway-workers", "3")

    def test_several_loops_share_the_routes(self):
        with open(self.srv.log_path) as f:
            self.assertIn('"loops":3', f.read())
        r = self.srv.api("POST", "/v1/projects/default/services?serviceId=hi",
                         service())
        self.assertEqual(r.status, 200, r.body)
        gateway(self.srv, "hi", {
            "openapi": "3.0.3", "info": {"title": "t", "version": "1"},
            "x-google-backend": {"address": "service://hi"},
            "paths": {"/hello": {"get": {}}}})
        wait_for(lambda: self.srv.gw("GET", "/hello").status == 200, 20,
                 what="the service")
        results = []

        def client():
            for _ in range(30):
                results.append(self.srv.gw("GET", "/hello").status)
        threads = [threading.Thread(target=client) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(results, [200] * 180)

    def test_new_spec_under_load_drops_nothing(self):
        r = self.srv.api("POST", "/v1/projects/default/services?serviceId=hi",
                         service())
        self.assertEqual(r.status, 200, r.body)

        def doc(i):
            return {"openapi": {
                "openapi": "3.0.3", "info": {"title": "t", "version": str(i)},
                "x-google-backend": {"address": "service://hi"},
                "paths": {"/hello": {"get": {}},
                          "/v%d" % i: {"get": {}}}}}
        r = self.srv.api("POST", "/v1/projects/default/gateways?gatewayId=g",
                         doc(0))
        self.assertEqual(r.status, 200, r.body)
        wait_for(lambda: self.srv.gw("GET", "/hello").status == 200, 20,
                 what="the service")
        stop = threading.Event()
        results = []

        def client():
            while not stop.is_set():
                results.append(self.srv.gw("GET", "/hello").status)
        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for i in range(1, 16):
            r = self.srv.api("PATCH", "/v1/projects/default/gateways/g",
                             doc(i))
            self.assertEqual(r.status, 200, r.body)
            r = self.srv.gw("GET", "/v%d" % i)   # routed: hello's own 404
            self.assertNotIn(b"no route", r.body)
        stop.set()
        for t in threads:
            t.join()
        self.assertGreater(len(results), 50)
        self.assertEqual(set(results), {200})


if __name__ == "__main__":
    main()
