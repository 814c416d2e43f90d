"""Gateway CORS: x-kiban-cors through the real binary - preflights answered
at the gateway (allowed and denied), headers on actual requests, Vary, and
CORS headers on the gateway's own error answers."""
from kiban import ServerTest, main, service, wait_for

SVC = "/v1/projects/default/services"
GW = "/v1/projects/default/gateways"
APP = "https://app.example"


def spec(paths, **extra):
    doc = {"openapi": "3.0.3", "info": {"title": "t", "version": "1"},
           "x-google-backend": {"address": "service://hello"},
           "x-kiban-cors": {"allowOrigins": [APP, "https://*.tenant.example"],
                            "allowHeaders": ["Authorization",
                                             "Content-Type"],
                            "exposeHeaders": ["X-Request-Id",
                                              "RateLimit-Remaining"],
                            "maxAge": 600, "allowCredentials": True},
           "paths": paths}
    doc.update(extra)
    return {"openapi": doc}


PATHS = {
    "/hello": {"get": {}},
    "/echo": {"post": {}},
    "/headers": {"get": {"x-kiban-cors": {"allowOrigins": ["*"],
                                          "allowHeaders": ["*"]}}},
    "/hello/{name}": {"get": {"x-kiban-rate-limit": {"requests": 1,
                                                     "period": 60}}},
}


def preflight(origin, method, headers=None):
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    h.update(headers or {})
    return h


class CorsTest(ServerTest):
    def setUp(self):
        super().setUp()
        r = self.srv.api("POST", SVC + "?serviceId=hello", service())
        self.assertEqual(r.status, 200, r)
        r = self.srv.api("POST", GW + "?gatewayId=main", spec(PATHS))
        self.assertEqual(r.status, 200, r)
        wait_for(lambda: self.srv.gw("GET", "/hello").status == 200, 10,
                 what="the hello service behind the gateway")

    def test_preflight_answered_at_the_gateway(self):
        r = self.srv.gw("OPTIONS", "/echo", headers=preflight(
            APP, "POST", {"Access-Control-Request-Headers": "content-type"}))
        self.assertEqual(r.status, 204, r)
        self.assertEqual(r.body, b"")
        self.assertEqual(r.header("Access-Control-Allow-Origin"), APP)
        self.assertEqual(r.header("Access-Control-Allow-Methods"), "POST")
        self.assertEqual(r.header("Access-Control-Allow-Headers"),
                         "Authorization, Content-Type")
        self.assertEqual(r.header("Access-Control-Max-Age"), "600")
        self.assertEqual(r.header("Access-Control-Allow-Credentials"), "true")
        self.assertEqual(r.header("Vary"), "Origin")
        # a wildcard subdomain, echoed as sent
        r = self.srv.gw("OPTIONS", "/hello", headers=preflight(
            "https://acme.tenant.example", "GET"))
        self.assertEqual(r.status, 204, r)
        self.assertEqual(r.header("Access-Control-Allow-Origin"),
                         "https://acme.tenant.example")
        # "*" and echoed request headers
        r = self.srv.gw("OPTIONS", "/headers", headers=preflight(
            "https://elsewhere.example", "GET",
            {"Access-Control-Request-Headers": "x-trace, authorization"}))
        self.assertEqual(r.status, 204, r)
        self.assertEqual(r.header("Access-Control-Allow-Origin"), "*")
        self.assertEqual(r.header("Access-Control-Allow-Headers"),
                         "x-trace, authorization")
        self.assertIsNone(r.header("Access-Control-Allow-Credentials"))
        # preflights never count against a rate limit
        for _ in range(3):
            r = self.srv.gw("OPTIONS", "/hello/x", headers=preflight(APP,
                                                                      "GET"))
            self.assertEqual(r.status, 204, r)

    def test_preflight_denied(self):
        # an origin not listed: no CORS headers, the usual 405 (as Envoy's
        # CORS filter lets the request through unanswered)
        r = self.srv.gw("OPTIONS", "/echo", headers=preflight(
            "https://evil.example", "POST"))
        self.assertError(r, 405)
        self.assertIsNone(r.header("Access-Control-Allow-Origin"))
        self.assertIsNone(r.header("Access-Control-Allow-Methods"))
        self.assertEqual(r.header("Allow"), "POST")
        # a method the path does not have
        r = self.srv.gw("OPTIONS", "/echo", headers=preflight(APP, "DELETE"))
        self.assertError(r, 405)
        self.assertIsNone(r.header("Access-Control-Allow-Origin"))
        # unknown path
        r = self.srv.gw("OPTIONS", "/nowhere", headers=preflight(APP, "GET"))
        self.assertError(r, 404)
        self.assertIsNone(r.header("Access-Control-Allow-Origin"))

    def test_actual_requests(self):
        r = self.srv.gw("GET", "/hello", headers={"Origin": APP})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("Access-Control-Allow-Origin"), APP)
        self.assertEqual(r.header("Access-Control-Allow-Credentials"), "true")
        self.assertEqual(r.header("Access-Control-Expose-Headers"),
                         "X-Request-Id, RateLimit-Remaining")
        self.assertEqual(r.header("Vary"), "Origin")
        self.assertIsNone(r.header("Access-Control-Allow-Methods"))
        self.assertEqual(r.json()["service"], "hello")

        r = self.srv.gw("POST", "/echo", "ping", headers={"Origin": APP})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"ping")
        self.assertEqual(r.header("Access-Control-Allow-Origin"), APP)

        # an origin not listed: served, without CORS headers (the browser
        # blocks the page from reading it); caches still see Vary
        r = self.srv.gw("GET", "/hello",
                        headers={"Origin": "https://evil.example"})
        self.assertEqual(r.status, 200)
        self.assertIsNone(r.header("Access-Control-Allow-Origin"))
        self.assertIsNone(r.header("Access-Control-Allow-Credentials"))
        self.assertEqual(r.header("Vary"), "Origin")
        # same-origin request
        r = self.srv.gw("GET", "/hello")
        self.assertIsNone(r.header("Access-Control-Allow-Origin"))
        self.assertEqual(r.header("Vary"), "Origin")
        # "*": no echo, no Vary
        r = self.srv.gw("GET", "/headers",
                        headers={"Origin": "https://x.example"})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("Access-Control-Allow-Origin"), "*")
        self.assertIsNone(r.header("Vary"))

    def test_gateway_errors_carry_cors_headers(self):
        # so that a page can read the 429 (and its Retry-After)
        r = self.srv.gw("GET", "/hello/a", headers={"Origin": APP})
        self.assertEqual(r.status, 200, r)
        r = self.srv.gw("GET", "/hello/a", headers={"Origin": APP})
        self.assertError(r, 429)
        self.assertEqual(r.header("Access-Control-Allow-Origin"), APP)
        self.assertEqual(r.header("Access-Control-Allow-Credentials"), "true")
        self.assertIsNotNone(r.header("Retry-After"))

    def test_bad_policy_rejected_with_pointer(self):
        bad = spec({"/hello": {"get": {}}})
        bad["openapi"]["x-kiban-cors"] = {"allowOrigins": ["*"],
                                          "allowCredentials": True}
        r = self.srv.api("PATCH", GW + "/main", bad)
        msg = self.assertError(r, 400, "INVALID_ARGUMENT")
        self.assertIn("/x-kiban-cors/allowOrigins/0", msg)
        bad = spec({"/hello": {"get": {"x-kiban-cors": {
            "allowOrigins": ["https://a.example/"]}}}})
        r = self.srv.api("PATCH", GW + "/main", bad)
        msg = self.assertError(r, 400, "INVALID_ARGUMENT")
        self.assertIn("/paths/~1hello/get/x-kiban-cors/allowOrigins/0", msg)
        # the old routes keep serving
        r = self.srv.gw("GET", "/hello", headers={"Origin": APP})
        self.assertEqual(r.header("Access-Control-Allow-Origin"), APP)


if __name__ == "__main__":
    main()
