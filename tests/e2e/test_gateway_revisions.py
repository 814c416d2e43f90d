"""Gateway and revisions: service://NAME[@TAG] backends, direct service hosts
([TAG---]SERVICE[.PROJECT].localhost), tag pins and the traffic split."""
import collections

from kiban import ServerTest, main, service, wait_for

SVC = "/v1/projects/default/services"
GW = "/v1/projects/default/gateways"


def spec(paths, backend="service://hello"):
    return {"openapi": {"openapi": "3.0.3",
                        "info": {"title": "t", "version": "1"},
                        "x-google-backend": {"address": backend},
                        "paths": paths}}


class GatewayRevisionsTest(ServerTest):
    def host(self, method, host, path, headers=None):
        h = dict(headers or {})
        h["Host"] = host
        return self.srv.gw(method, path, headers=h)

    def deploy(self, env=None, query=""):
        r = self.srv.api("POST", SVC + "?serviceId=hello" + query,
                         service(env=env))
        self.assertEqual(r.status, 200, r)
        return r.json()

    def wait_hello(self, host="hello.localhost"):
        wait_for(lambda: self.host("GET", host, "/hello").status == 200, 15,
                 what="hello behind " + host)

    def test_service_backend_and_tag_refused_at_apply(self):
        self.deploy()
        r = self.srv.api("POST", GW + "?gatewayId=main",
                         spec({"/hello": {"get": {}}}))
        self.assertEqual(r.status, 200, r)
        wait_for(lambda: self.srv.gw("GET", "/hello").status == 200, 15,
                 what="service:// behind a route")
        self.assertEqual(self.srv.gw("GET", "/hello").json()["service"],
                         "hello")
        for bad in ("service://hello@Green", "service://hello@9x",
                    "service://hello@", "service://hello@a-"):
            r = self.srv.api("POST", GW + "?gatewayId=bad",
                             spec({"/x": {"get": {}}}, bad))
            msg = self.assertError(r, 400)
            self.assertIn("address", msg)
            self.assertIn("TAG", msg)
        # a well-formed tag is accepted
        r = self.srv.api("POST", GW + "?gatewayId=tagged",
                         spec({"/green": {"get": {}}}, "service://hello@green"))
        self.assertEqual(r.status, 200, r)

    def test_service_host(self):
        self.deploy()
        self.wait_hello()
        # the whole request goes to the service, headers as through a route
        r = self.host("GET", "Hello.LocalHost", "/hello/world?x=1")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["message"], "Hello, world!")
        self.assertRegex(r.header("X-Request-Id"), r"^[0-9a-f]{32}$")
        h = {k.lower(): v for k, v in
             self.host("GET", "hello.localhost:8080", "/headers").json().items()}
        self.assertEqual(h["x-forwarded-host"], "hello.localhost:8080")
        self.assertRegex(h["traceparent"],
                         r"^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$")
        # the project is part of the host when it is not "default"
        self.assertEqual(
            self.host("GET", "hello.default.localhost", "/hello").status, 200)
        # unknown service, or project: 404 with the JSON error
        self.assertError(self.host("GET", "nope.localhost", "/"), 404,
                         "NOT_FOUND")
        self.assertError(self.host("GET", "hello.other.localhost", "/"), 404,
                         "NOT_FOUND")
        # the bare domain and other hosts still go to the gateways' routes
        self.assertError(self.host("GET", "localhost", "/hello"), 404,
                         "NOT_FOUND")
        # a gateway naming the host wins over the service host
        s = spec({"/hello": {"get": {"x-google-backend": {
            "address": "http://127.0.0.1:9/"}}}})
        s["hosts"] = ["hello.localhost"]
        r = self.srv.api("POST", GW + "?gatewayId=claims", s)
        self.assertEqual(r.status, 200, r)
        self.assertError(self.host("GET", "hello.localhost", "/hello"), 502)
        # metrics count the service host's requests under its own label
        text = self.srv.api("GET", "/metrics").body.decode()
        self.assertIn('route="service:hello"', text)

    def revisions_supported(self, svc):
        if "revisions" not in svc:
            self.skipTest("the runtime does not keep revisions")

    def test_tag_host_and_split(self):
        v1 = self.deploy(env={"V": "1"})
        self.revisions_supported(v1)
        self.wait_hello()
        r1 = v1["revisions"][-1]["name"]
        r = self.srv.api("PATCH", SVC + "/hello?noTraffic=true&tag=green",
                         service(env={"V": "2"}))
        self.assertEqual(r.status, 200, r)
        r2 = r.json()["revisions"][-1]["name"]
        self.assertNotEqual(r1, r2)
        # the tag host reaches the new revision (waiting for its start);
        # the service host stays on the old one
        self.wait_hello("green---hello.localhost")
        for _ in range(5):
            self.assertEqual(self.host("GET", "green---hello.localhost",
                                       "/hello").json()["revision"], r2)
            self.assertEqual(self.host("GET", "hello.localhost",
                                       "/hello").json()["revision"], r1)
        self.assertError(self.host("GET", "blue---hello.localhost", "/"),
                         404, "NOT_FOUND")
        # service://NAME@TAG pins it behind a route too
        r = self.srv.api("POST", GW + "?gatewayId=main", spec(
            {"/hello": {"get": {}}}, "service://hello@green"))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.srv.gw("GET", "/hello").json()["revision"], r2)
        # 50/50: both revisions get a fair share of 200 requests
        r = self.srv.api("POST", SVC + "/hello:updateTraffic",
                         {"toRevisions": {r1: 50, r2: 50}})
        self.assertEqual(r.status, 200, r)
        seen = collections.Counter()
        for _ in range(200):
            resp = self.host("GET", "hello.localhost", "/hello")
            self.assertEqual(resp.status, 200, resp)
            seen[resp.json()["revision"]] += 1
        self.assertEqual(set(seen), {r1, r2}, seen)
        self.assertTrue(50 <= seen[r1] <= 150, seen)


if __name__ == "__main__":
    main()
