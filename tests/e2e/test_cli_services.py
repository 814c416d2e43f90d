"""The release flow through the CLI against a real server: kiban deploy,
services (describe, update-traffic), revisions and logs, with the traffic
checked through the gateway's service and tag hosts."""
import json
import os
import re
import select
import signal
import subprocess
import time

from kiban import BIN, HELLO, SRC, ServerTest, main, wait_for

DEPLOYED = re.compile(r"Service \[web\] revision \[(web-\d{5}-[a-z0-9]{3})\] "
                      r"has been deployed and is serving (\d+) percent of "
                      r"traffic\.")


class ReleaseFlowTest(ServerTest):
    def greeting(self, host):
        """The GREETING the revision behind host answers with, or None."""
        r = self.srv.gw("GET", "/hello", headers={"Host": host})
        return r.json().get("message") if r.status == 200 else None

    def deploy(self, *args):
        rc, out, err = self.srv.cli("deploy", "web", "--wait-timeout", "60s",
                                    *args)
        self.assertEqual(rc, 0, out + err)
        return out

    def test_deploy_tag_split_and_promote(self):
        port = self.srv.gateway_port
        out = self.deploy("--command", HELLO, "--env", "GREETING=one")
        m = DEPLOYED.search(out)
        self.assertIsNotNone(m, out)
        first = m.group(1)
        self.assertTrue(first.startswith("web-00001-"), out)
        self.assertEqual(m.group(2), "100", out)
        self.assertIn("Service URL: http://web.localhost:%d\n" % port, out)
        self.assertEqual(self.greeting("web.localhost"), "one")

        # A tagged revision without traffic: reachable only by its tag URL.
        out = self.deploy("--env", "GREETING=two", "--no-traffic",
                          "--tag", "green")
        m = DEPLOYED.search(out)
        self.assertIsNotNone(m, out)
        second = m.group(1)
        self.assertTrue(second.startswith("web-00002-"), out)
        self.assertEqual(m.group(2), "0", out)
        self.assertIn("The revision can be reached directly at "
                      "http://green---web.localhost:%d\n" % port, out)
        self.assertEqual(self.greeting("green---web.localhost"), "two")
        self.assertEqual(self.greeting("web.localhost"), "one")

        # The same template again makes no revision.
        out = self.deploy()
        self.assertEqual(out, "No change: revision %s is unchanged.\n" % second)

        # 10 % to the tag; the split is pinned, which describe says loudly.
        rc, out, err = self.srv.cli("services", "update-traffic", "web",
                                    "--to-tags", "green=10")
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"\n  90%%\s+%s\s" % first)
        self.assertRegex(out, r"\n  10%%\s+%s\s+green\s" % second)
        rc, out, err = self.srv.cli("services", "describe", "web")
        self.assertEqual(rc, 0, err)
        self.assertIn("URL:                      http://web.localhost:%d\n"
                      % port, out)
        self.assertRegex(out, r"\n  90%%\s+%s\s" % first)
        self.assertRegex(out, r"\n  10%%\s+%s\s+green\s+http://green---web\."
                         r"localhost:%d\n" % (second, port))
        self.assertIn("Traffic is pinned: new revisions get no traffic until "
                      "`kiban services update-traffic web --to-latest`.", out)
        self.assertIn("Revisions:\n  REVISION", out)
        self.assertRegex(out, r"\n  %s\s+true\s" % second)
        rc, out, err = self.srv.cli("services", "describe", "web", "-o", "json")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["status"]["url"],
                         "http://web.localhost:%d" % port)

        # A revision that serves traffic cannot be deleted.
        rc, out, err = self.srv.cli("revisions", "delete", first,
                                    "--service", "web")
        self.assertEqual(rc, 1, out)
        self.assertIn("FAILED_PRECONDITION", err)

        # Promote: all to the latest; no longer pinned; the old one can go.
        rc, out, err = self.srv.cli("services", "update-traffic", "web",
                                    "--to-latest")
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"\n  100%\s+LATEST")
        self.assertNotIn("pinned", out)
        wait_for(lambda: self.greeting("web.localhost") == "two", 15,
                 what="the latest revision to serve the service host")
        rc, out, err = self.srv.cli("services", "describe", "web")
        self.assertEqual(rc, 0, err)
        self.assertNotIn("Traffic is pinned", out)

        rc, out, err = self.srv.cli("revisions", "list", "--service", "web")
        self.assertEqual(rc, 0, err)
        self.assertIn(first, out)
        self.assertIn(second, out)
        rc, out, err = self.srv.cli("revisions", "describe", second,
                                    "--service", "web", "-o", "json")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["revision"], second)
        rc, out, err = self.srv.cli("revisions", "delete", first,
                                    "--service", "web")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, "Revision [%s] deleted.\n" % first)
        rc, out, err = self.srv.cli("revisions", "list", "--service", "web")
        self.assertNotIn(first, out)

        rc, out, err = self.srv.cli("services", "list")
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"\nweb\s+http://web\.localhost:%d\s+%s\s+latest"
                         % (port, second))
        rc, out, err = self.srv.cli("services", "delete", "web")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, "Service [web] deleted.\n")

    def test_failed_revision_names_its_reason(self):
        rc, out, err = self.srv.cli(
            "deploy", "web", "--command", "/bin/sh", "--arg", "-c",
            "--arg", "echo boom >&2; exit 3", "--wait-timeout", "60s")
        self.assertEqual(rc, 1, out + err)
        self.assertRegex(err, r"kiban: revision \[web-00001-[a-z0-9]{3}\] "
                              r"failed: \w+")
        self.assertNotIn("has been deployed", out)

    def test_logs(self):
        script = "echo started $K_REVISION; exec %s" % HELLO
        out = self.deploy("--command", "/bin/sh", "--arg", "-c",
                          "--arg", script)
        rev = DEPLOYED.search(out).group(1)

        def lines():
            rc, out, err = self.srv.cli("logs", "web")
            self.assertEqual(rc, 0, err)
            return out if "listening on" in out else None
        out = wait_for(lines, 15, what="the instance's output in kiban logs")
        self.assertRegex(out, r"(?m)^\S+ %s/\S+ started %s$" % (rev, rev))
        self.assertRegex(out, r"(?m)^\S+ %s/\S+:stderr kiban-hello: .*"
                              r"listening on" % rev)
        rc, out, err = self.srv.cli("logs", "web", "-o", "json",
                                    "--revision", rev)
        self.assertEqual(rc, 0, err)
        entries = [json.loads(l) for l in out.splitlines()]
        self.assertIn("started " + rev, [e["text"] for e in entries])
        self.assertTrue(all(e["revision"] == rev for e in entries), entries)

        # --follow prints what comes later and exits 0 on SIGINT.
        env = dict(os.environ, KIBAN_API=self.srv.api_url,
                   KIBAN_TOKEN=self.srv.token)
        p = subprocess.Popen([BIN, "logs", "web", "--follow"], cwd=SRC,
                             env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        try:
            seen = b""
            deadline = time.monotonic() + 20
            crashed = False
            while b"crash requested" not in seen:
                self.assertLess(time.monotonic(), deadline, seen)
                if b"started" in seen and not crashed:
                    # A request that makes the instance write to stderr.
                    self.srv.gw("GET", "/crash",
                                headers={"Host": "web.localhost"})
                    crashed = True
                r, _, _ = select.select([p.stdout], [], [], 0.5)
                if r:
                    chunk = os.read(p.stdout.fileno(), 65536)
                    self.assertTrue(chunk, "logs --follow ended early")
                    seen += chunk
            p.send_signal(signal.SIGINT)
            self.assertEqual(p.wait(10), 0, p.stderr.read())
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stdout.close()
            p.stderr.close()

    def test_bad_flags_and_server_errors(self):
        cases = [
            (("deploy", "web"), 2, "--command is required"),
            (("deploy", "web", "--command", HELLO, "--memory", "lots"), 2,
             "--memory \"lots\""),
            (("deploy", "web", "--command", HELLO, "--env", "PORT=1"), 2,
             "--env \"PORT=1\""),
            (("deploy", "web", "--command", HELLO, "--concurrency", "0"), 2,
             "--concurrency"),
            (("deploy", "Web", "--command", HELLO), 2, "not a valid service"),
            (("services", "update-traffic", "web", "--to-revisions", "a=101"),
             2, "not a percent"),
            (("services", "update-traffic", "web"), 2, "at least one"),
            (("services", "describe"), 2, "usage"),
            (("revisions", "list"), 2, "--service SERVICE is required"),
            (("logs", "web", "--since", "yesterday"), 2, "--since"),
            (("services", "describe", "nope"), 1, "NOT_FOUND"),
            (("revisions", "list", "--service", "nope"), 1, "NOT_FOUND"),
        ]
        for args, code, text in cases:
            rc, out, err = self.srv.cli(*args)
            self.assertEqual(rc, code, (args, out, err))
            self.assertIn(text, err, args)
        # Cloud Run's rule, from the server: no --no-traffic on create.
        rc, out, err = self.srv.cli("deploy", "web", "--command", HELLO,
                                    "--no-traffic")
        self.assertEqual(rc, 1, out + err)
        self.assertIn("not supported when creating a new service", err)
        r = self.srv.api("GET", "/v1/projects/default/services/web")
        self.assertEqual(r.status, 404)


if __name__ == "__main__":
    main()
