"""The release flow, end to end, as a team runs it (docs/runtime.md):

deploy v1 → production gateway → deploy v2 with no traffic and a tag →
the tag URL and a QA gateway pinned to the tag see v2 while production
sees v1 → canary 10 % → 50 % → everything to the latest → rollback to v1 →
a later deploy while pinned gets no traffic.  A client hammers the
production gateway the whole time: not one request may fail.
"""
import os
import tempfile
import threading
import time

from kiban import HELLO, ServerTest, main


PROD_HOST = "api.example.test"
QA_HOST = "qa.example.test"


def gateway_manifest(name, host, address):
    return """kind: Gateway
metadata:
  name: %s
spec:
  hosts: [%s]
  openapi:
    swagger: "2.0"
    info: {title: %s, version: "1"}
    x-google-backend:
      address: %s
    paths:
      /hello:
        get:
          operationId: hello
          responses: {"200": {description: ok}}
""" % (name, host, name, address)


class Hammer(threading.Thread):
    """Steady load on one host of the gateway; counts what came back."""

    def __init__(self, server, host):
        super().__init__(daemon=True)
        self.server, self.host = server, host
        self.stop_flag = threading.Event()
        self.ok = 0
        self.failures = []
        self.seen = {}

    def run(self):
        while not self.stop_flag.is_set():
            try:
                r = self.server.gw("GET", "/hello", headers={"Host": self.host})
                if r.status == 200:
                    self.ok += 1
                    msg = r.json()["message"]
                    self.seen[msg] = self.seen.get(msg, 0) + 1
                else:
                    self.failures.append((r.status, r.body[:200]))
            except Exception as e:  # noqa: BLE001 - every failure counts
                self.failures.append(("exception", repr(e)))

    def stop(self):
        self.stop_flag.set()
        self.join(30)


class ReleaseFlowTest(ServerTest):
    server_args = ("--domain", "localhost", "--run-as", "nobody")

    @property
    def server(self):
        return self.srv

    def cli_ok(self, *args):
        rc, out, err = self.server.cli(*args)
        self.assertEqual(rc, 0, "kiban %s failed:\n%s%s\n%s" %
                         (" ".join(args), out, err, self.server.logs()))
        return out

    def apply(self, text):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml",
                                         delete=False) as f:
            f.write(text)
        self.addCleanup(os.unlink, f.name)
        self.cli_ok("apply", "-f", f.name)

    def hello(self, host):
        r = self.server.gw("GET", "/hello", headers={"Host": host})
        self.assertEqual(r.status, 200, r.body)
        return r.json()

    def shares(self, host, n=300):
        seen = {}
        for _ in range(n):
            m = self.hello(host)["message"]
            seen[m] = seen.get(m, 0) + 1
        return seen

    def revisions(self):
        r = self.server.api("GET", "/v1/projects/default/services/hello/"
                            "revisions")
        self.assertEqual(r.status, 200, r.body)
        return [x["revision"] for x in r.json()["revisions"]]

    def test_release_flow(self):
        svc_host = "hello.localhost:%d" % self.server.gateway_port
        green_host = "green---hello.localhost"

        # 1. First deploy: it serves everything.
        out = self.cli_ok("deploy", "hello", "--command", HELLO,
                          "--env", "GREETING=v1", "--min-instances", "1")
        self.assertIn("hello-00001-", out)
        self.assertIn("100 percent", out)
        self.assertEqual(self.hello(svc_host)["message"], "v1")
        v1 = self.revisions()[0]

        # 2. Production gateway in front of the service (follows the split).
        self.apply(gateway_manifest("prod", PROD_HOST, "service://hello"))
        self.assertEqual(self.hello(PROD_HOST)["message"], "v1")
        hammer = Hammer(self.server, PROD_HOST)
        hammer.start()
        try:
            self._flow(v1, svc_host, green_host)
        finally:
            hammer.stop()
        self.assertEqual(hammer.failures, [],
                         "requests failed during the release:\n%s" %
                         self.server.logs())
        self.assertGreater(hammer.ok, 100)
        self.assertGreater(hammer.seen.get("v1", 0), 0)
        self.assertGreater(hammer.seen.get("v2", 0), 0)

    def _flow(self, v1, svc_host, green_host):
        # 3. v2 with no traffic, tagged green: production is untouched.
        out = self.cli_ok("deploy", "hello", "--env", "GREETING=v2",
                          "--no-traffic", "--tag", "green")
        self.assertIn("hello-00002-", out)
        self.assertIn("0 percent", out)
        self.assertIn("green---hello.localhost", out)
        v2 = self.revisions()[0]
        self.assertTrue(v2.startswith("hello-00002-"), v2)
        self.assertEqual(self.shares(PROD_HOST, 100), {"v1": 100})

        # 4. The tag URL reaches v2 only, bypassing the split.
        self.assertEqual(self.shares(green_host, 50), {"v2": 50})
        self.assertEqual(self.hello(green_host)["revision"], v2)

        # 5. A QA gateway pinned to the tag, next to production.
        self.apply(gateway_manifest("qa", QA_HOST, "service://hello@green"))
        self.assertEqual(self.shares(QA_HOST, 50), {"v2": 50})
        self.assertEqual(self.shares(PROD_HOST, 50), {"v1": 50})

        # 6. Canary: 10 %, then 50 %.
        self.cli_ok("services", "update-traffic", "hello",
                    "--to-tags", "green=10")
        seen = self.shares(PROD_HOST, 400)
        self.assertTrue(10 <= seen.get("v2", 0) <= 90, seen)
        self.cli_ok("services", "update-traffic", "hello",
                    "--to-revisions", "%s=50,%s=50" % (v1, v2))
        seen = self.shares(PROD_HOST, 400)
        self.assertTrue(120 <= seen.get("v2", 0) <= 280, seen)

        # 7. Everything to the latest revision.
        self.cli_ok("services", "update-traffic", "hello", "--to-latest")
        self.assertEqual(self.shares(PROD_HOST, 100), {"v2": 100})
        out = self.cli_ok("services", "describe", "hello")
        self.assertNotIn("pinned", out)

        # 8. Rollback in one command.
        t0 = time.monotonic()
        self.cli_ok("services", "update-traffic", "hello",
                    "--to-revisions", "%s=100" % v1)
        self.assertEqual(self.shares(PROD_HOST, 100), {"v1": 100})
        self.assertLess(time.monotonic() - t0, 30)
        out = self.cli_ok("services", "describe", "hello")
        self.assertIn("pinned", out)

        # 9. A deploy while pinned: the new revision gets nothing.
        out = self.cli_ok("deploy", "hello", "--env", "GREETING=v3")
        self.assertIn("hello-00003-", out)
        self.assertIn("0 percent", out)
        self.assertEqual(self.shares(PROD_HOST, 100), {"v1": 100})
        st = self.server.api("GET", "/v1/projects/default/services/hello")
        traffic = st.json()["traffic"]
        self.assertFalse(any(t.get("latestRevision") for t in traffic),
                         traffic)
        # The tag still reaches v2; deleting a revision with traffic or a
        # tag is refused.
        self.assertEqual(self.hello(green_host)["message"], "v2")
        rc, out, err = self.server.cli("revisions", "delete", v1,
                                       "--service", "hello")
        self.assertNotEqual(rc, 0)


if __name__ == "__main__":
    main()
