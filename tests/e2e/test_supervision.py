"""Process supervision: restarts, deletion, shutdown, and kill -9 of the
server leaving no orphan behind."""
import os
import signal
import time
import unittest

from kiban import (HELLO, Server, ServerTest, main, pid_alive, service, wait_for)

SVC = "/v1/projects/default/services"
GW = "/v1/projects/default/gateways"


def gateway_for(name):
    return {"openapi": {
        "openapi": "3.0.3", "info": {"title": name, "version": "1"},
        "x-google-backend": {"address": "service://" + name},
        "paths": {"/hello": {"get": {}}, "/crash": {"get": {}}}}}


def instances(srv, name):
    r = srv.api("GET", SVC + "/" + name)
    return r.json().get("status", {}).get("instances", [])


def ppid(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""


def running_pids(srv, name):
    """Pids of the running instances' supervisors (each the leader of the
    instance's process group; the service itself is its child)."""
    return sorted(i["pid"] for i in instances(srv, name)
                  if i.get("state") == "running")


class SupervisionTest(ServerTest):
    def start_hello(self, n=1, cmd=None, args=None):
        r = self.srv.api("POST", SVC + "?serviceId=hello",
                         service(command=cmd, args=args, instances=n))
        self.assertEqual(r.status, 200, r)
        self.srv.api("POST", GW + "?gatewayId=g", gateway_for("hello"))
        return wait_for(lambda: len(running_pids(self.srv, "hello")) == n and
                        running_pids(self.srv, "hello"), 15,
                        what="instances running")

    def test_instances_get_port_and_env(self):
        pids = self.start_hello(2)
        self.assertEqual(len(set(pids)), 2)
        ports = {i["port"] for i in instances(self.srv, "hello")}
        self.assertEqual(len(ports), 2)
        seen = {self.srv.gw("GET", "/hello").json()["pid"] for _ in range(8)}
        self.assertEqual({ppid(p) for p in seen}, set(pids))   # both serve

    def test_crashed_instance_is_restarted(self):
        [pid] = self.start_hello(1)
        r = self.srv.gw("GET", "/crash")
        self.assertIn(r.status, (502, 503))       # the backend died mid-call
        new = wait_for(lambda: (running_pids(self.srv, "hello") or [pid])[0] != pid
                       and running_pids(self.srv, "hello"), 15,
                       what="a restarted instance")
        self.assertFalse(pid_alive(pid))
        inst = instances(self.srv, "hello")[0]
        self.assertGreaterEqual(inst["restarts"], 1)
        r = wait_for(lambda: self.srv.gw("GET", "/hello"), 10)
        self.assertEqual(r.status, 200)
        self.assertEqual(ppid(r.json()["pid"]), new[0])

    def test_delete_stops_whole_process_group(self):
        # The instance forks a grandchild (sleep) that must go too.
        script = "sleep 300 & exec \"$0\""
        self.start_hello(1, cmd="/bin/sh", args=["-c", script, HELLO])
        kids = self.srv.descendants()
        sleeps = [k for k in kids if comm(k) == "sleep"]
        self.assertTrue(sleeps, "the test's grandchild did not start")
        self.assertEqual(self.srv.api("DELETE", SVC + "/hello").status, 200)
        wait_for(lambda: not any(pid_alive(k) for k in kids), 15,
                 what="every process of the service to exit")

    def test_scale_down_and_up(self):
        # Another count is another revision (as in Cloud Run): once it is
        # ready it takes the traffic, and the old revision's instances,
        # idle past scaleDownDelay, stop.
        pids = self.start_hello(2)
        spec = service(instances=1)
        spec["scaleDownDelay"] = "1s"
        self.assertEqual(self.srv.api("PATCH", SVC + "/hello", spec).status, 200)
        wait_for(lambda: not any(pid_alive(p) for p in pids), 15,
                 what="the old revision's instances to stop")
        wait_for(lambda: len(running_pids(self.srv, "hello")) == 1, 15)
        spec["instances"] = 3
        self.assertEqual(self.srv.api("PATCH", SVC + "/hello", spec).status, 200)
        wait_for(lambda: len(running_pids(self.srv, "hello")) == 3, 15,
                 what="three instances")
        r = self.srv.gw("GET", "/hello")
        self.assertEqual(r.status, 200, r.body)

    def test_sigterm_stops_services_and_exits_zero(self):
        pids = self.start_hello(2)
        self.srv.stop()              # asserts exit 0 and nothing left behind
        for p in pids:
            self.assertFalse(pid_alive(p))
        self.srv.start()             # for tearDown


class KillNineTest(unittest.TestCase):
    def test_no_orphans_after_kill_9_and_services_come_back(self):
        srv = Server().start()
        self.addCleanup(srv.cleanup)
        r = srv.api("POST", SVC + "?serviceId=hello", service(instances=2))
        self.assertEqual(r.status, 200, r)
        srv.api("POST", GW + "?gatewayId=g", gateway_for("hello"))
        wait_for(lambda: len(running_pids(srv, "hello")) == 2, 15)
        procs = srv.descendants()
        self.assertGreaterEqual(len(procs), 2)

        srv.kill9()
        wait_for(lambda: not any(pid_alive(p) for p in procs), 10,
                 what="every service process to die with the server")

        # A new server on the same data dir restores and serves again.
        srv.start()
        wait_for(lambda: srv.gw("GET", "/hello").status == 200, 15,
                 what="the restored service")
        wait_for(lambda: len(running_pids(srv, "hello")) == 2, 15,
                 what="both instances restored")
        srv.stop()


if __name__ == "__main__":
    main()
