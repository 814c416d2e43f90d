"""Gateway rate limits: x-kiban-rate-limit and Google's quota form, through
the real binary.  Clients come from several loopback addresses
(127.0.0.2, 127.0.0.3: the bucket key is the peer address, not
X-Forwarded-For)."""
import http.client
import re

from kiban import Response, ServerTest, main, service, wait_for

SVC = "/v1/projects/default/services"
GW = "/v1/projects/default/gateways"


def spec(paths, **extra):
    doc = {"openapi": "3.0.3", "info": {"title": "t", "version": "1"},
           "x-google-backend": {"address": "service://hello"},
           "paths": paths}
    doc.update(extra)
    return {"openapi": doc}


def get_from(src, port, path, headers=None):
    """GET from the loopback address `src`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15,
                                      source_address=(src, 0))
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        r = conn.getresponse()
        return Response(r.status, r.getheaders(), r.read())
    finally:
        conn.close()


LIMITED = {
    "/hello": {"get": {"x-kiban-rate-limit": {"requests": 3,
                                              "period": "1m"}}},
    "/hello/{name}": {"get": {}},
    "/headers": {"get": {"x-kiban-rate-limit": {"requests": 60,
                                                "period": 60, "burst": 2}}},
}


class RateLimitTest(ServerTest):
    def deploy(self, body):
        r = self.srv.api("POST", SVC + "?serviceId=hello", service())
        self.assertEqual(r.status, 200, r)
        r = self.srv.api("POST", GW + "?gatewayId=main", body)
        self.assertEqual(r.status, 200, r)
        probes = iter(range(1, 250))     # a fresh address per probe, so
                                         # probes never drain a bucket
        wait_for(lambda: get_from("127.0.1.%d" % next(probes),
                                  self.srv.gateway_port,
                                  "/hello/x").status == 200, 10,
                 what="the hello service behind the gateway")

    def gw_from(self, src, path, headers=None):
        return get_from(src, self.srv.gateway_port, path, headers)

    def test_429_after_the_bucket_and_headers(self):
        self.deploy(spec(LIMITED))
        for left in (2, 1, 0):
            r = self.gw_from("127.0.0.1", "/hello")
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.header("RateLimit-Limit"), "3")
            self.assertEqual(r.header("RateLimit-Remaining"), str(left))
            self.assertEqual(r.header("RateLimit-Policy"), "3;w=60")
            self.assertTrue(0 < int(r.header("RateLimit-Reset")) <= 60, r)
            self.assertIsNone(r.header("Retry-After"))
        r = self.gw_from("127.0.0.1", "/hello")
        msg = self.assertError(r, 429, "RESOURCE_EXHAUSTED")
        self.assertIn("GET /hello", msg)
        # one token per 20 s: the wait is rounded up to whole seconds
        self.assertTrue(1 <= int(r.header("Retry-After")) <= 20, r.headers)
        self.assertEqual(r.header("RateLimit-Remaining"), "0")
        self.assertEqual(r.header("RateLimit-Limit"), "3")
        self.assertRegex(r.header("X-Request-Id"), r"^[0-9a-f]{32}$")

        # other clients have their own buckets
        for src in ("127.0.0.2", "127.0.0.3"):
            r = self.gw_from(src, "/hello")
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.header("RateLimit-Remaining"), "2")
        # X-Forwarded-For is not the key: it is set by the client
        r = self.gw_from("127.0.0.1", "/hello",
                         {"X-Forwarded-For": "198.51.100.7"})
        self.assertEqual(r.status, 429)
        # an operation without a limit: no headers, never limited
        for _ in range(5):
            r = self.gw_from("127.0.0.1", "/hello/x")
            self.assertEqual(r.status, 200)
            self.assertIsNone(r.header("RateLimit-Limit"))

        # burst smaller than the rate: 2 at once, then one per second
        self.assertEqual(self.gw_from("127.0.0.1", "/headers").status, 200)
        r = self.gw_from("127.0.0.1", "/headers")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("RateLimit-Policy"), "60;w=60;burst=2")
        self.assertEqual(r.header("RateLimit-Limit"), "2")
        r = self.gw_from("127.0.0.1", "/headers")
        self.assertEqual(r.status, 429, r)
        self.assertEqual(r.header("Retry-After"), "1")

        # counted per gateway and operation
        m = self.srv.api("GET", "/metrics").body.decode()
        got = re.search(r'^kiban_gateway_ratelimited_total\{gateway="default/'
                        r'main",route="GET /hello"\} (\d+)', m, re.M)
        self.assertTrue(got, m[-3000:])
        self.assertEqual(int(got.group(1)), 2)

    def test_buckets_survive_reapplying_the_spec(self):
        self.deploy(spec(LIMITED))
        for _ in range(3):
            self.assertEqual(self.gw_from("127.0.0.2", "/hello").status, 200)
        self.assertEqual(self.gw_from("127.0.0.2", "/hello").status, 429)
        r = self.srv.api("PATCH", GW + "/main", spec(LIMITED))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.gw_from("127.0.0.2", "/hello").status, 429)
        # a limit turned off with false
        off = dict(LIMITED)
        off["/hello"] = {"get": {"x-kiban-rate-limit": False}}
        r = self.srv.api("PATCH", GW + "/main",
                         spec(off, **{"x-kiban-rate-limit":
                                      {"requests": 1, "period": 60}}))
        self.assertEqual(r.status, 200, r)
        wait_for(lambda: self.gw_from("127.0.0.2", "/hello").status == 200,
                 5, what="the new spec")
        r = self.gw_from("127.0.0.2", "/hello")
        self.assertEqual(r.status, 200)
        self.assertIsNone(r.header("RateLimit-Limit"))
        # ... while the document-level default limits the others
        self.assertEqual(self.gw_from("127.0.0.2", "/hello/a").status, 200)
        self.assertEqual(self.gw_from("127.0.0.2", "/hello/b").status, 429)

    def test_bad_policy_rejected_with_pointer(self):
        r = self.srv.api("POST", GW + "?gatewayId=bad", spec({
            "/hello": {"get": {"x-kiban-rate-limit": {"requests": 0,
                                                      "period": 60}}}}))
        msg = self.assertError(r, 400, "INVALID_ARGUMENT")
        self.assertIn("/paths/~1hello/get/x-kiban-rate-limit/requests", msg)
        r = self.srv.api("POST", GW + "?gatewayId=bad", spec(
            {"/hello": {"get": {}}},
            **{"x-kiban-rate-limit": {"requests": 5, "period": "1w"}}))
        msg = self.assertError(r, 400, "INVALID_ARGUMENT")
        self.assertIn("/x-kiban-rate-limit/period", msg)

    def test_google_quota_form(self):
        body = spec({
            "/hello": {"get": {"x-google-quota": {
                "metricCosts": {"read-requests": 1}}}},
            "/hello/{name}": {"get": {"x-google-quota": {
                "metricCosts": {"read-requests": 1}}}},
        }, **{"x-google-management": {
            "metrics": [{"name": "read-requests", "displayName": "Reads",
                         "valueType": "INT64", "metricKind": "DELTA"}],
            "quota": {"limits": [{
                "name": "read-limit", "metric": "read-requests",
                "unit": "1/min/{project}", "values": {"STANDARD": 3}}]}}})
        self.deploy(body)
        # one metric, one bucket: both operations draw from it; no API key
        # here, so the caller's address is the consumer
        self.assertEqual(self.gw_from("127.0.0.4", "/hello").status, 200)
        self.assertEqual(self.gw_from("127.0.0.4", "/hello/a").status, 200)
        r = self.gw_from("127.0.0.4", "/hello")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("RateLimit-Policy"), "3;w=60")
        self.assertEqual(r.header("RateLimit-Remaining"), "0")
        r = self.gw_from("127.0.0.4", "/hello/b")
        msg = self.assertError(r, 429, "RESOURCE_EXHAUSTED")
        self.assertIn("read-requests/read-limit", msg)
        self.assertTrue(1 <= int(r.header("Retry-After")) <= 20)
        self.assertEqual(self.gw_from("127.0.0.5", "/hello").status, 200)

        r = self.srv.api("POST", GW + "?gatewayId=bad", spec(
            {"/x": {"get": {"x-google-quota": {
                "metricCosts": {"nope": 1}}}}},
            **{"x-google-management": {"metrics": [{"name": "m"}]}}))
        msg = self.assertError(r, 400)
        self.assertIn("/paths/~1x/get/x-google-quota/metricCosts/nope", msg)


if __name__ == "__main__":
    main()
