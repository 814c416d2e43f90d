"""Gateway: OpenAPI routes to services and URLs, forwarded headers, errors."""
import re

from kiban import HELLO, ServerTest, free_port, main, service, wait_for

SVC = "/v1/projects/default/services"
GW = "/v1/projects/default/gateways"


def spec(paths, backend="service://hello", **extra):
    doc = {"openapi": "3.0.3", "info": {"title": "t", "version": "1"},
           "x-google-backend": {"address": backend}, "paths": paths}
    doc.update(extra)
    return {"openapi": doc}


HELLO_PATHS = {
    "/hello": {"get": {"operationId": "hello"}},
    "/hello/{name}": {"get": {"operationId": "helloName"}},
    "/headers": {"get": {"operationId": "headers"}},
    "/echo": {"post": {"operationId": "echo"}},
}


class GatewayTest(ServerTest):
    def deploy_hello(self, instances=1, env=None):
        r = self.srv.api("POST", SVC + "?serviceId=hello",
                         service(instances=instances, env=env))
        self.assertEqual(r.status, 200, r)
        r = self.srv.api("POST", GW + "?gatewayId=main", spec(HELLO_PATHS))
        self.assertEqual(r.status, 200, r)
        wait_for(lambda: self.srv.gw("GET", "/hello").status == 200, 10,
                 what="the hello service behind the gateway")

    def test_routes_to_service(self):
        self.deploy_hello(env={"GREETING": "hi there"})
        r = self.srv.gw("GET", "/hello")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["message"], "hi there")
        self.assertEqual(r.json()["service"], "hello")
        self.assertRegex(r.header("X-Request-Id"), r"^[0-9a-f]{32}$")
        r = self.srv.gw("HEAD", "/hello")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"")
        get = self.srv.gw("GET", "/hello")
        self.assertEqual(int(r.header("Content-Length")), len(get.body))
        r = self.srv.gw("GET", "/hello/world")
        self.assertEqual(r.json()["message"], "Hello, world!")
        st = self.srv.api("GET", GW + "/main").json()["status"]
        self.assertEqual(st["routeCount"], 4)
        self.assertIn({"route": "GET /hello/{name}", "backend": "hello"},
                      st["routes"])
        r = self.srv.gw("POST", "/echo", "ping-body")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"ping-body")

    def test_forwarded_headers(self):
        self.deploy_hello()
        r = self.srv.gw("GET", "/headers")
        h = {k.lower(): v for k, v in r.json().items()}
        self.assertEqual(h["x-forwarded-for"], "127.0.0.1")
        self.assertEqual(h["x-forwarded-proto"], "http")
        self.assertRegex(h["x-request-id"], r"^[0-9a-f]{32}$")
        self.assertRegex(h["traceparent"], r"^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$")
        self.assertEqual(r.header("X-Request-Id"), h["x-request-id"])

        trace = "0af7651916cd43dd8448eb211c80319c"
        r = self.srv.gw("GET", "/headers", headers={
            "X-Forwarded-For": "203.0.113.9",
            "X-Request-Id": "my-request-1",
            "traceparent": "00-%s-b7ad6b7169203331-01" % trace})
        h = {k.lower(): v for k, v in r.json().items()}
        self.assertEqual(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1")
        self.assertEqual(h["x-request-id"], "my-request-1")
        m = re.match(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-01$", h["traceparent"])
        self.assertTrue(m, h["traceparent"])
        self.assertEqual(m.group(1), trace)
        self.assertNotEqual(m.group(2), "b7ad6b7169203331")

    def test_unknown_path_and_wrong_method(self):
        self.deploy_hello()
        self.assertError(self.srv.gw("GET", "/nope"), 404, "NOT_FOUND")
        r = self.srv.gw("DELETE", "/hello")
        self.assertError(r, 405)
        self.assertIn("GET", r.header("Allow"))

    def test_backend_down(self):
        # A service with no instance: 503.
        self.srv.api("POST", SVC + "?serviceId=idle", service(instances=0))
        r = self.srv.api("POST", GW + "?gatewayId=idle",
                         spec({"/idle": {"get": {}}}, "service://idle"))
        self.assertEqual(r.status, 200, r)
        self.assertError(self.srv.gw("GET", "/idle"), 503, "UNAVAILABLE")
        # A URL nobody listens on: 502.
        port = free_port()
        r = self.srv.api("POST", GW + "?gatewayId=dead",
                         spec({"/dead": {"get": {}}}, "http://127.0.0.1:%d" % port))
        self.assertEqual(r.status, 200, r)
        self.assertError(self.srv.gw("GET", "/dead"), 502)
        # A service that does not exist: 502 too, with its name.
        r = self.srv.api("POST", GW + "?gatewayId=ghost",
                         spec({"/ghost": {"get": {}}}, "service://ghost"))
        self.assertEqual(r.status, 200, r)
        msg = self.assertError(self.srv.gw("GET", "/ghost"), 502)
        self.assertIn("ghost", msg)

    def test_bad_spec_rejected_whole_and_old_routes_keep_serving(self):
        self.deploy_hello()
        bad = spec({"/hello": {"get": {}}, "/broken/{": {"get": {}}})
        r = self.srv.api("PATCH", GW + "/main", bad)
        msg = self.assertError(r, 400, "INVALID_ARGUMENT")
        self.assertIn("/paths/", msg)
        self.assertEqual(self.srv.gw("GET", "/hello/still").status, 200)
        r = self.srv.api("PATCH", GW + "/main",
                         spec({"/x": {"get": {}}}, "ftp://nowhere"))
        self.assertError(r, 400)
        self.assertEqual(self.srv.gw("GET", "/hello").status, 200)

    def test_conflicting_gateways_refused_and_store_unchanged(self):
        self.deploy_hello()
        r = self.srv.api("POST", GW + "?gatewayId=clash",
                         spec({"/hello": {"get": {}}}))
        self.assertError(r, 409)
        self.assertError(self.srv.api("GET", GW + "/clash"), 404)

    def test_delete_gateway_removes_routes(self):
        self.deploy_hello()
        self.assertEqual(self.srv.api("DELETE", GW + "/main").status, 200)
        self.assertError(self.srv.gw("GET", "/hello"), 404)

    def test_url_backend_path_translation(self):
        # The hello instance also serves as a plain URL backend.
        self.deploy_hello()
        status = self.srv.api("GET", SVC + "/hello").json()["status"]
        base = "http://127.0.0.1:%d" % status["instances"][0]["port"]
        r = self.srv.api("POST", GW + "?gatewayId=url", {
            "openapi": {"swagger": "2.0", "info": {"title": "u", "version": "1"},
                        "basePath": "/v2",
                        "x-google-backend": {"address": base},
                        "paths": {
                            # operation level: CONSTANT_ADDRESS by default
                            "/greet": {"get": {"x-google-backend": {
                                "address": base + "/hello"}}},
                            # top level: APPEND_PATH_TO_ADDRESS by default
                            "/hello": {"get": {}},
                        }}})
        self.assertEqual(r.status, 200, r)
        r = self.srv.gw("GET", "/v2/greet")
        self.assertEqual(r.status, 200, r)
        self.assertIn("message", r.json())
        # APPEND sends the whole request path, /v2/hello, which the example
        # service does not serve: its own 404 comes back.
        r = self.srv.gw("GET", "/v2/hello")
        self.assertEqual(r.status, 404)

    def test_gateway_healthz(self):
        r = self.srv.gw("GET", "/healthz")
        self.assertEqual(r.status, 200)


if __name__ == "__main__":
    main()
