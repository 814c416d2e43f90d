"""Black-box harness: boots the real kiban binary on loopback and talks to it.

Every test file imports this module, starts one or more servers in temporary
data directories, and stops them (checking they exit 0 and leave no process
behind).  Binaries come from the environment ctest sets: KIBAN_BIN,
KIBAN_HELLO, KIBAN_SRC.
"""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

BIN = os.environ.get("KIBAN_BIN", "build/kiban")
HELLO = os.environ.get("KIBAN_HELLO", "build/kiban-hello")
SRC = os.environ.get("KIBAN_SRC", os.getcwd())


def free_port():
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout=10.0, step=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("timed out waiting for " + what)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def children_of(pid):
    """Every live descendant pid of pid (from /proc)."""
    parents = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(d))
        except (OSError, IndexError):
            continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in parents.get(p, []):
            out.append(c)
            todo.append(c)
    return out


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def __repr__(self):
        return "<%d %r>" % (self.status, self.body[:300])


def request(port, method, path, body=None, headers=None, host="127.0.0.1",
            timeout=15):
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    hdrs = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
        hdrs.setdefault("Content-Type", "application/json")
    if isinstance(body, str):
        body = body.encode()
    try:
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        return Response(r.status, r.getheaders(), r.read())
    finally:
        conn.close()


def raw(port, data, timeout=5.0, read_until_close=True):
    """Send raw bytes, return everything the server answers until it closes
    (or until timeout)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            chunks.append(b)
            if not read_until_close:
                break
        return b"".join(chunks)
    finally:
        s.close()


class Server:
    """One `kiban server` process on free loopback ports."""

    def __init__(self, data_dir=None, args=(), env=None):
        self.own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="kiban-e2e-")
        self.args = list(args)
        # Tests run as root, with files (interpreters, scripts, temporary
        # dirs) an unprivileged user cannot reach: instances run as the
        # server's user unless a test asks for --run-as itself.
        if "--run-as" not in self.args:
            self.args += ["--run-as", ""]
        self.env = env
        self.proc = None
        self.gateway_port = free_port()
        self.api_port = free_port()
        self.log_path = os.path.join(self.data_dir, "server.log")

    @property
    def token(self):
        with open(os.path.join(self.data_dir, "admin.token")) as f:
            return f.read().strip()

    @property
    def api_url(self):
        return "http://127.0.0.1:%d" % self.api_port

    def start(self, wait=True):
        env = dict(os.environ)
        env.update(self.env or {})
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [BIN, "server", "--data-dir", self.data_dir,
             "--gateway-listen", "127.0.0.1:%d" % self.gateway_port,
             "--api-listen", "127.0.0.1:%d" % self.api_port,
             "--shutdown-grace", "3s"] + self.args,
            stdout=self.log, stderr=self.log, cwd=SRC, env=env)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self):
        def up():
            if self.proc.poll() is not None:
                raise AssertionError("kiban exited with %s:\n%s" %
                                     (self.proc.returncode, self.logs()))
            try:
                return request(self.api_port, "GET", "/healthz",
                               timeout=1).status == 200
            except OSError:
                return False
        wait_for(up, 20, what="kiban to answer /healthz")

    def logs(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-6000:]
        except OSError:
            return ""

    def api(self, method, path, body=None, token=True, headers=None):
        hdrs = dict(headers or {})
        if token is True:
            hdrs["Authorization"] = "Bearer " + self.token
        elif token:
            hdrs["Authorization"] = "Bearer " + token
        return request(self.api_port, method, path, body, hdrs)

    def gw(self, method, path, body=None, headers=None):
        return request(self.gateway_port, method, path, body, headers)

    def cli(self, *args, stdin=None, token=True, env=None):
        e = dict(os.environ)
        e["KIBAN_API"] = self.api_url
        e.pop("KIBAN_TOKEN", None)
        if token:
            e["KIBAN_TOKEN"] = self.token
        e.update(env or {})
        p = subprocess.run([BIN] + list(args), input=stdin, cwd=SRC, env=e,
                           capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout, p.stderr

    def descendants(self):
        return children_of(self.proc.pid) if self.proc else []

    def stop(self, timeout=30):
        """SIGTERM; the server must exit 0 and leave no process behind."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        kids = self.descendants()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("kiban did not stop on SIGTERM:\n" + self.logs())
        self.log.close()
        left = [k for k in kids if pid_alive(k)]
        if left:
            for k in left:
                os.kill(k, signal.SIGKILL)
            raise AssertionError("processes left behind: %r" % left)
        if rc != 0:
            raise AssertionError("kiban exited %d:\n%s" % (rc, self.logs()))
        return rc

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


class ServerTest(unittest.TestCase):
    """A test case with one server per test, stopped cleanly afterwards."""
    server_args = ()

    def setUp(self):
        self.srv = Server(args=self.server_args).start()
        self.addCleanup(self.srv.cleanup)

    def tearDown(self):
        self.srv.stop()

    def assertError(self, resp, code, status=None):
        """A JSON error body in the documented shape."""
        self.assertEqual(resp.status, code, resp)
        body = resp.json()
        self.assertEqual(body["error"]["code"], code, body)
        if status:
            self.assertEqual(body["error"]["status"], status, body)
        self.assertTrue(body["error"]["message"], body)
        return body["error"]["message"]


def service(command=None, args=None, env=None, instances=1):
    spec = {"command": command or HELLO, "instances": instances}
    if args is not None:
        spec["args"] = args
    if env is not None:
        spec["env"] = env
    return spec


def main():
    unittest.main(verbosity=2, buffer=False)


if __name__ == "__main__":
    sys.exit("this is a helper module; run the test_*.py files")
