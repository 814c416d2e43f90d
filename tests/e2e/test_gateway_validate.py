"""Gateway request validation (x-kiban-validate) through the real binary:
Google's bookstore example (Swagger 2.0) and an OpenAPI 3 spec, in front
of a small echo backend that counts what reaches it."""
import http.server
import json
import threading

from kiban import ServerTest, main, wait_for

GW = "/v1/projects/default/gateways"


class Echo(http.server.BaseHTTPRequestHandler):
    """Answers 200 with what it got; counts requests."""
    hits = 0

    def handle_one(self):
        Echo.hits += 1
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode(errors="replace")
        out = json.dumps({"method": self.command, "path": self.path,
                          "body": body}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = handle_one

    def log_message(self, *args):
        pass


def bookstore(address):
    """The Endpoints bookstore sample's shape, unchanged but for the
    backend and the opt-in."""
    return {
        "swagger": "2.0",
        "info": {"description": "A simple Google Cloud Endpoints Bookstore "
                                "API example.",
                 "title": "Bookstore", "version": "1.0.0"},
        "host": "bookstore.endpoints.example.cloud.goog",
        "basePath": "/",
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "schemes": ["https"],
        "x-google-backend": {"address": address},
        "x-kiban-validate": True,
        "paths": {
            "/shelves": {
                "get": {"operationId": "listShelves",
                        "responses": {"200": {"description": "ok", "schema": {
                            "$ref": "#/definitions/listShelvesResponse"}}}},
                "post": {"operationId": "createShelf",
                         "parameters": [{"description": "A shelf resource "
                                                        "to create.",
                                         "in": "body", "name": "shelf",
                                         "required": True,
                                         "schema": {"$ref":
                                                    "#/definitions/shelf"}}],
                         "responses": {"200": {"description": "ok"}}}},
            "/shelves/{shelf}": {
                "get": {"operationId": "getShelf",
                        "parameters": [{"in": "path", "name": "shelf",
                                        "required": True, "type": "integer",
                                        "format": "int64"}],
                        "responses": {"200": {"description": "ok"}}},
                "delete": {"operationId": "deleteShelf",
                           "x-kiban-validate": False,
                           "parameters": [{"in": "path", "name": "shelf",
                                           "required": True,
                                           "type": "integer",
                                           "format": "int64"}],
                           "responses": {"default": {"description": "-"}}}},
        },
        "definitions": {
            "listShelvesResponse": {"properties": {"shelves": {
                "items": {"$ref": "#/definitions/shelf"}, "type": "array"}},
                "type": "object"},
            "shelf": {"properties": {"name": {"type": "string"},
                                     "theme": {"type": "string"}},
                      "required": ["name", "theme"]},
        },
        "securityDefinitions": {"api_key": {"in": "query", "name": "key",
                                            "type": "apiKey"}},
    }


def items_api(address):
    return {
        "openapi": "3.0.3",
        "info": {"title": "items", "version": "1"},
        "x-google-backend": {"address": address},
        "x-kiban-validate": {"parameters": True, "body": True},
        "paths": {
            "/items": {
                "get": {"parameters": [
                    {"$ref": "#/components/parameters/Limit"},
                    {"name": "tag", "in": "query", "schema": {
                        "type": "array", "items": {"type": "string",
                                                   "enum": ["a", "b"]}}}]},
                "post": {"requestBody": {"required": True, "content": {
                    "application/json": {"schema": {
                        "$ref": "#/components/schemas/Item"}}}}}},
            "/raw": {"post": {"x-kiban-validate": False,
                              "requestBody": {"content": {
                                  "application/json": {"schema": {
                                      "type": "object"}}}}}},
        },
        "components": {
            "parameters": {"Limit": {"name": "limit", "in": "query",
                                     "schema": {"type": "integer",
                                                "minimum": 1,
                                                "maximum": 100}}},
            "schemas": {"Item": {
                "type": "object", "required": ["name", "items"],
                "additionalProperties": False,
                "properties": {
                    "id": {"type": "string", "readOnly": True},
                    "name": {"type": "string", "minLength": 1},
                    "items": {"type": "array", "maxItems": 10, "items": {
                        "type": "object", "required": ["name"],
                        "properties": {"name": {"type": "string"},
                                       "qty": {"type": "integer",
                                               "minimum": 1}}}}}}},
        },
    }


class ValidateTest(ServerTest):
    def setUp(self):
        super().setUp()
        self.backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
        threading.Thread(target=self.backend.serve_forever,
                         daemon=True).start()
        self.addCleanup(self.backend.server_close)
        self.addCleanup(self.backend.shutdown)
        self.address = "http://127.0.0.1:%d" % self.backend.server_port

    def install(self, name, doc):
        r = self.srv.api("POST", GW + "?gatewayId=" + name, {"openapi": doc})
        self.assertEqual(r.status, 200, r)

    def invalid(self, r, want, code=400):
        msg = self.assertError(r, code, "INVALID_ARGUMENT" if code == 400
                               else None)
        self.assertEqual(msg, want)

    def test_bookstore_parameters_and_body(self):
        self.install("bookstore", bookstore(self.address))
        wait_for(lambda: self.srv.gw("GET", "/shelves").status == 200, 10,
                 what="the bookstore route")
        r = self.srv.gw("POST", "/shelves", {"name": "f", "theme": "novels"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(json.loads(r.json()["body"]),
                         {"name": "f", "theme": "novels"})
        before = Echo.hits
        self.invalid(self.srv.gw("POST", "/shelves", {"name": "f"}),
                     "invalid request: body.theme: required")
        self.invalid(self.srv.gw("POST", "/shelves",
                                 {"name": 3, "theme": "x"}),
                     "invalid request: body.name: must be a string")
        r = self.srv.gw("POST", "/shelves", "{not json",
                        {"Content-Type": "application/json"})
        msg = self.assertError(r, 400, "INVALID_ARGUMENT")
        self.assertTrue(msg.startswith("invalid request: body: not valid "
                                       "JSON ("), msg)
        self.invalid(self.srv.gw("POST", "/shelves"),
                     "invalid request: body: required")
        r = self.srv.gw("POST", "/shelves", "name=f",
                        {"Content-Type": "text/plain"})
        msg = self.assertError(r, 415)
        self.assertIn('Content-Type "text/plain" is not accepted', msg)
        self.invalid(self.srv.gw("GET", "/shelves/abc"),
                     'invalid request: path parameter "shelf": must be an '
                     'integer')
        self.invalid(self.srv.gw("GET", "/shelves/99999999999999999999"),
                     'invalid request: path parameter "shelf": must fit in '
                     '64 bits (format int64)')
        self.assertEqual(Echo.hits, before, "rejected requests reached "
                                            "the backend")
        self.assertEqual(self.srv.gw("GET", "/shelves/12").status, 200)
        # opted out per operation
        self.assertEqual(self.srv.gw("DELETE", "/shelves/abc").status, 200)

    def test_openapi3_query_and_nested_body(self):
        self.install("items", items_api(self.address))
        wait_for(lambda: self.srv.gw("GET", "/items").status == 200, 10,
                 what="the items route")
        self.assertEqual(self.srv.gw("GET", "/items?limit=100&tag=a&tag=b")
                         .status, 200)
        self.invalid(self.srv.gw("GET", "/items?limit=101"),
                     'invalid request: query parameter "limit": must be '
                     '<= 100')
        self.invalid(self.srv.gw("GET", "/items?tag=a&tag=z"),
                     'invalid request: query parameter "tag"[1]: must be one '
                     'of ["a","b"]')
        ok = {"name": "n", "items": [{"name": "x", "qty": 2}]}
        r = self.srv.gw("POST", "/items", ok,
                        {"Content-Type": "application/json; charset=utf-8"})
        self.assertEqual(r.status, 200, r)
        bad = {"name": "n", "items": [{"name": "x"}, {"name": "y"},
                                      {"name": 5}]}
        self.invalid(self.srv.gw("POST", "/items", bad),
                     "invalid request: body.items[2].name: must be a string")
        self.invalid(self.srv.gw("POST", "/items",
                                 {"name": "n", "items": [], "id": "1"}),
                     "invalid request: body.id: is read-only")
        self.invalid(self.srv.gw("POST", "/items",
                                 {"name": "n", "items": [], "x": 1}),
                     "invalid request: body.x: unknown property "
                     "(additionalProperties is false)")
        deep = 1
        for _ in range(100):
            deep = {"name": "n", "items": [deep]}
        r = self.srv.gw("POST", "/items", deep)
        self.assertError(r, 400)
        self.assertIn("nested more than 64 levels deep", r.json()["error"]
                      ["message"])
        self.assertEqual(self.srv.gw("POST", "/raw", "[1]", {
            "Content-Type": "application/json"}).status, 200)

    def test_bad_schema_rejects_the_spec_and_old_routes_keep_serving(self):
        doc = items_api(self.address)
        self.install("items", doc)
        wait_for(lambda: self.srv.gw("GET", "/items").status == 200, 10,
                 what="the items route")
        doc["components"]["schemas"]["Item"]["properties"]["name"][
            "pattern"] = "(?=lookahead)"
        r = self.srv.api("PATCH", GW + "/items", {"openapi": doc})
        msg = self.assertError(r, 400, "INVALID_ARGUMENT")
        self.assertIn("/components/schemas/Item/properties/name/pattern: "
                      "unsupported regular expression", msg)
        doc["components"]["schemas"]["Item"]["properties"]["name"][
            "pattern"] = "^[a-z]+$"
        doc["paths"]["/items"]["post"]["requestBody"]["content"][
            "application/json"]["schema"] = {"$ref": "#/components/schemas/X"}
        r = self.srv.api("PATCH", GW + "/items", {"openapi": doc})
        msg = self.assertError(r, 400, "INVALID_ARGUMENT")
        self.assertIn("/paths/~1items/post/requestBody/content/"
                      "application~1json/schema/$ref", msg)
        # the previous spec still validates
        self.invalid(self.srv.gw("GET", "/items?limit=0"),
                     'invalid request: query parameter "limit": must be '
                     '>= 1')


if __name__ == "__main__":
    main()
