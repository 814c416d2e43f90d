"""`kiban server` itself: settings from flags and a config file, bad
settings, the data directory, and a graceful stop with a request in flight."""
import os
import socket
import stat
import subprocess
import tempfile
import threading
import time
import unittest

from kiban import (BIN, HELLO, SRC, Server, free_port, main, request, service,
                   wait_for)


class ServerTest(unittest.TestCase):
    def test_bad_flags_exit_2_with_a_message(self):
        for args, needle in ((["--nope"], "--nope"),
                             (["--shutdown-grace", "soon"], "shutdown-grace"),
                             (["--log-level", "loud"], "log"),
                             (["--api-listen"], "needs a value")):
            p = subprocess.run([BIN, "server"] + args, capture_output=True,
                               text=True, timeout=20)
            self.assertEqual(p.returncode, 2, (args, p.stderr))
            self.assertIn(needle, p.stderr)

    def test_help_lists_every_setting(self):
        p = subprocess.run([BIN, "server", "--help"], capture_output=True,
                           text=True, timeout=20)
        self.assertEqual(p.returncode, 0)
        for flag in ("--gateway-listen", "--api-listen", "--data-dir",
                     "--config", "--shutdown-grace", "--max-body"):
            self.assertIn(flag, p.stdout)

    def test_config_file_and_flags(self):
        d = tempfile.mkdtemp(prefix="kiban-cfg-")
        gw, api = free_port(), free_port()
        cfg = os.path.join(d, "kiban.yaml")
        with open(cfg, "w") as f:
            f.write("gateway_listen: 127.0.0.1:%d\napi_listen: 127.0.0.1:1\n"
                    "log_level: warn\n" % gw)
        p = subprocess.Popen([BIN, "server", "--config", cfg, "--data-dir",
                              os.path.join(d, "data"), "--api-listen",
                              "127.0.0.1:%d" % api],
                             stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: _answers(api), 20, what="the api listener")
            self.assertEqual(request(gw, "GET", "/healthz").status, 200)
            mode = stat.S_IMODE(os.stat(os.path.join(d, "data")).st_mode)
            self.assertEqual(mode, 0o700)
        finally:
            p.terminate()
            _, err = p.communicate(timeout=20)
        self.assertEqual(p.returncode, 0)
        # The file's log level holds: nothing below warn was logged.
        for line in err.splitlines():
            self.assertTrue(line.startswith("{") and line.endswith("}"), line)
            self.assertNotIn('"level":"info"', line)

    def test_busy_port_fails_cleanly(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        d = tempfile.mkdtemp(prefix="kiban-busy-")
        p = subprocess.run([BIN, "server", "--data-dir", d, "--api-listen",
                            "127.0.0.1:%d" % port, "--gateway-listen",
                            "127.0.0.1:%d" % free_port()],
                           capture_output=True, text=True, timeout=30)
        s.close()
        self.assertEqual(p.returncode, 1)
        self.assertIn("cannot listen", p.stderr)

    def test_open_token_file_refused(self):
        d = tempfile.mkdtemp(prefix="kiban-tok-")
        path = os.path.join(d, "admin.token")
        with open(path, "w") as f:
            f.write("0123456789abcdef0123456789abcdef\n")
        os.chmod(path, 0o644)
        p = subprocess.run([BIN, "server", "--data-dir", d, "--api-listen",
                            "127.0.0.1:%d" % free_port(), "--gateway-listen",
                            "127.0.0.1:%d" % free_port()],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn("chmod 600", p.stderr)

    def test_graceful_stop_finishes_in_flight_request(self):
        """A request the backend is still answering when SIGTERM arrives
        completes; new connections are refused; the server exits 0."""
        srv = Server().start()
        self.addCleanup(srv.cleanup)
        # A slow backend: a one-shot HTTP server that answers after 1 s.
        slow = socket.socket()
        slow.bind(("127.0.0.1", 0))
        slow.listen()
        port = slow.getsockname()[1]

        def answer():
            c, _ = slow.accept()
            c.recv(65536)
            time.sleep(1.0)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
            c.close()
        threading.Thread(target=answer, daemon=True).start()
        r = srv.api("POST", "/v1/projects/default/gateways?gatewayId=slow", {
            "openapi": {"openapi": "3.0.3", "info": {"title": "s", "version": "1"},
                        "x-google-backend": {"address": "http://127.0.0.1:%d" % port},
                        "paths": {"/slow": {"get": {}}}}})
        self.assertEqual(r.status, 200, r)
        result = {}
        t = threading.Thread(target=lambda: result.update(
            r=request(srv.gateway_port, "GET", "/slow")))
        t.start()
        time.sleep(0.3)
        srv.proc.terminate()
        t.join(10)
        self.assertEqual(result["r"].status, 200)
        self.assertEqual(result["r"].body, b"slow")
        self.assertEqual(srv.proc.wait(20), 0)
        srv.log.close()
        slow.close()


def _answers(port):
    try:
        return request(port, "GET", "/healthz", timeout=1).status == 200
    except OSError:
        return False


if __name__ == "__main__":
    main()
