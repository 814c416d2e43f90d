"""The kiban CLI against a running server: apply, dry run, get, delete,
errors with file and line, exit codes."""
import json
import os
import subprocess
import tempfile

from kiban import BIN, HELLO, SRC, ServerTest, free_port, main, wait_for

MANIFEST = """\
kind: Service
metadata:
  name: hello
spec:
  command: {hello}
  env:
    GREETING: from the cli
  instances: 1
---
kind: Gateway
metadata:
  name: front
spec:
  openapiFile: api.yaml
"""

OPENAPI = """\
openapi: 3.0.3
info: {title: cli, version: "1"}
x-google-backend:
  address: service://hello
paths:
  /hello:
    get: {}
"""


class CliTest(ServerTest):
    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix="kiban-cli-")
        self.write("api.yaml", OPENAPI)
        self.manifest = self.write("app.yaml", MANIFEST.format(hello=HELLO))

    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_apply_then_unchanged_then_configured(self):
        rc, out, err = self.srv.cli("apply", "-f", self.manifest)
        self.assertEqual(rc, 0, err)
        self.assertIn("service/hello created", out)
        self.assertIn("gateway/front created", out)
        r = wait_for(lambda: self.srv.gw("GET", "/hello").status == 200 and
                     self.srv.gw("GET", "/hello"), 15)
        self.assertEqual(r.json()["message"], "from the cli")

        rc, out, err = self.srv.cli("apply", "-f", self.manifest)
        self.assertEqual(rc, 0, err)
        self.assertIn("service/hello unchanged", out)
        self.assertIn("gateway/front unchanged", out)

        changed = MANIFEST.format(hello=HELLO).replace("from the cli", "again")
        rc, out, err = self.srv.cli("apply", "-f", "-", stdin=changed.replace(
            "openapiFile: api.yaml", "openapiFile: %s/api.yaml" % self.dir))
        self.assertEqual(rc, 0, err)
        self.assertIn("service/hello configured", out)
        wait_for(lambda: self.srv.gw("GET", "/hello").json().get("message")
                 == "again", 15, what="the new revision of the env")

    def test_dry_run_changes_nothing(self):
        rc, out, err = self.srv.cli("apply", "--dry-run", "-f", self.manifest)
        self.assertEqual(rc, 0, err)
        self.assertIn("service/hello created (dry run)", out)
        r = self.srv.api("GET", "/v1/projects/default/services/hello")
        self.assertEqual(r.status, 404)

    def test_manifest_errors_name_file_line_and_field(self):
        cases = [
            ("kind: Service\nmetadata:\n  name: a\nspec:\n  command: x\n"
             "  instances: two\n", ":6:", "instances"),
            ("kind: Service\nmetadata:\n  name: a\nspec:\n  command: x\n"
             "  bogus: 1\n", ":6:", "bogus"),
            ("kind: Servise\nmetadata:\n  name: a\nspec: {}\n", ":1:", "kind"),
            ("kind: Service\nmetadata:\n  name: Not_Valid\nspec:\n"
             "  command: x\n", ":3:", "name"),
            ("kind: Service\nmetadata: [oops\n", ":", ""),
        ]
        for text, where, field in cases:
            path = self.write("bad.yaml", MANIFEST.format(hello=HELLO) +
                              "---\n" + text)
            rc, out, err = self.srv.cli("apply", "-f", path)
            self.assertNotEqual(rc, 0, (text, out, err))
            self.assertIn("bad.yaml", err)
            line = MANIFEST.count("\n") + 1
            if where != ":":
                n = int(where.strip(":")) + line
                self.assertIn("bad.yaml:%d:" % n, err, (text, err))
            self.assertIn(field, err)
            # Nothing from the valid documents before it was applied.
            r = self.srv.api("GET", "/v1/projects/default/services/hello")
            self.assertEqual(r.status, 404, text)

    def test_get_and_delete(self):
        self.assertEqual(self.srv.cli("apply", "-f", self.manifest)[0], 0)
        rc, out, err = self.srv.cli("get", "services")
        self.assertEqual(rc, 0, err)
        self.assertIn("NAME", out)
        self.assertIn("hello", out)
        rc, out, err = self.srv.cli("get", "service", "hello", "-o", "json")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["name"], "projects/default/services/hello")
        rc, out, err = self.srv.cli("get", "gateway", "front", "-o", "yaml")
        self.assertEqual(rc, 0, err)
        self.assertIn("service://hello", out)
        rc, out, err = self.srv.cli("delete", "service", "hello")
        self.assertEqual(rc, 0, err)
        self.assertIn("service/hello deleted", out)
        rc, out, err = self.srv.cli("get", "service", "hello")
        self.assertNotEqual(rc, 0)
        self.assertIn("not found", err)

    def test_errors_and_exit_codes(self):
        rc, out, err = self.srv.cli("frobnicate")
        self.assertEqual(rc, 2)
        self.assertIn("kiban help", err)
        rc, out, err = self.srv.cli("get", "services", token=False,
                                    env={"KIBAN_TOKEN": "wrong-token-value"})
        self.assertNotEqual(rc, 0)
        self.assertIn("UNAUTHENTICATED", err)
        rc, out, err = self.srv.cli(
            "get", "services", env={"KIBAN_API": "http://127.0.0.1:%d" % free_port()})
        self.assertEqual(rc, 1)
        self.assertIn("cannot reach", err)
        rc, out, err = self.srv.cli("apply", "-f", "/nonexistent.yaml")
        self.assertNotEqual(rc, 0)
        self.assertIn("/nonexistent.yaml", err)

    def test_help_and_version(self):
        rc, out, err = self.srv.cli("help")
        self.assertEqual(rc, 0)
        for verb in ("server", "apply", "get", "delete", "version", "help"):
            self.assertIn(verb, out)
        self.assertNotIn("__shim", out)
        rc, out, err = self.srv.cli("help", "apply")
        self.assertEqual(rc, 0)
        self.assertIn("--dry-run", out)
        rc, out, err = self.srv.cli("version")
        self.assertEqual(rc, 0)
        self.assertIn("kiban", out)

    def test_token_file_flag(self):
        path = os.path.join(self.srv.data_dir, "admin.token")
        rc, out, err = self.srv.cli("get", "services", "--token-file", path,
                                    token=False)
        self.assertEqual(rc, 0, err)


class QuickstartTest(ServerTest):
    """examples/quickstart.yaml, exactly as `make run` applies it."""

    def test_quickstart(self):
        example = os.path.join(SRC, "examples", "quickstart.yaml")
        if not os.path.exists(os.path.join(SRC, "build", "kiban-hello")):
            # The example names ./build/kiban-hello; point it at this build.
            text = open(example).read().replace("./build/kiban-hello", HELLO)
            rc, out, err = self.srv.cli("apply", "-f", "-", stdin=text)
        else:
            rc, out, err = self.srv.cli("apply", "-f", example)
        self.assertEqual(rc, 0, err)
        r = wait_for(lambda: self.srv.gw("GET", "/hello").status == 200 and
                     self.srv.gw("GET", "/hello"), 15, what="/hello")
        self.assertEqual(r.json()["message"], "Hello from kiban!")


if __name__ == "__main__":
    main()
