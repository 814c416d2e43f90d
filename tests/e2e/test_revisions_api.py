"""Services as revisions through the admin API: revision names and counters,
noTraffic and tag deploys, :updateTraffic, the revisions sub-collection,
retention, and what survives restarts.  Asserts on stored fields only."""
from kiban import ServerTest, main, raw

SVC = "/v1/projects/default/services"
NAME_RE = r"^%s-%05d-[a-z0-9]{3}$"


def spec(env=None, **kw):
    """A service that runs nothing (instances 0): only its fields matter."""
    s = {"command": "/bin/true", "instances": 0}
    if env is not None:
        s["env"] = env
    s.update(kw)
    return s


class RevisionsTest(ServerTest):
    def create(self, name="hello", body=None, query=""):
        r = self.srv.api("POST", SVC + "?serviceId=" + name + query,
                         body or spec())
        self.assertEqual(r.status, 200, r)
        return r.json()

    def patch(self, name, body, query=""):
        r = self.srv.api("PATCH", SVC + "/" + name + query, body)
        self.assertEqual(r.status, 200, r)
        return r.json()

    def traffic(self, name, body):
        r = self.srv.api("POST", SVC + "/" + name + ":updateTraffic", body)
        self.assertEqual(r.status, 200, r)
        return r.json()

    def revs(self, doc):
        return [r["name"] for r in doc["revisions"]]

    def test_create_makes_revision_one_with_all_traffic(self):
        doc = self.create()
        self.assertEqual(len(doc["revisions"]), 1)
        rev = doc["revisions"][0]
        self.assertRegex(rev["name"], NAME_RE % ("hello", 1))
        self.assertEqual(rev["template"], spec())
        self.assertRegex(rev["createTime"], r"^\d{4}-\d\d-\d\dT")
        self.assertEqual(doc["revisionCounter"], 1)
        self.assertEqual(doc["traffic"],
                         [{"latestRevision": True, "percent": 100}])
        # A client's values for output-only fields are replaced.
        doc2 = self.create("other", dict(spec(), revisions=[{"name": "x"}],
                                         revisionCounter=40))
        self.assertEqual(doc2["revisionCounter"], 1)
        self.assertRegex(doc2["revisions"][0]["name"], NAME_RE % ("other", 1))

    def test_update_new_revision_only_when_template_changes(self):
        first = self.create(body=spec(env={"A": "1"}))
        same = self.patch("hello", spec(env={"A": "1"},
                                        revisionHistoryLimit=5))
        self.assertEqual(self.revs(same), self.revs(first))
        changed = self.patch("hello", spec(env={"A": "2"}))
        self.assertEqual(len(changed["revisions"]), 2)
        self.assertRegex(changed["revisions"][1]["name"], NAME_RE % ("hello", 2))
        self.assertEqual(changed["revisions"][1]["template"]["env"], {"A": "2"})
        self.assertEqual(changed["revisions"][0], first["revisions"][0])
        self.assertEqual(changed["traffic"],
                         [{"latestRevision": True, "percent": 100}])

    def test_no_traffic_refused_on_create_and_pins_on_update(self):
        r = self.srv.api("POST", SVC + "?serviceId=n&noTraffic=true", spec())
        msg = self.assertError(r, 400, "FAILED_PRECONDITION")
        self.assertIn("creating", msg)
        self.assertEqual(self.srv.api("GET", SVC + "/n").status, 404)

        one = self.create("n")["revisions"][0]["name"]
        doc = self.patch("n", spec(env={"V": "2"}), "?noTraffic=true&tag=green")
        two = doc["revisions"][1]["name"]
        self.assertEqual(doc["traffic"], [
            {"revisionName": one, "percent": 100},
            {"revisionName": two, "percent": 0, "tag": "green"}])
        # A later deploy without noTraffic keeps the pinned split.
        doc = self.patch("n", spec(env={"V": "3"}))
        self.assertEqual(len(doc["revisions"]), 3)
        self.assertEqual(doc["traffic"][0], {"revisionName": one, "percent": 100})
        doc = self.traffic("n", {"toLatest": True})
        self.assertIn({"latestRevision": True, "percent": 100}, doc["traffic"])
        self.assertIn({"revisionName": two, "percent": 0, "tag": "green"},
                      doc["traffic"])

    def test_tag_on_deploy(self):
        doc = self.create(query="&tag=blue")
        one = doc["revisions"][0]["name"]
        self.assertIn({"revisionName": one, "percent": 0, "tag": "blue"},
                      doc["traffic"])
        doc = self.patch("hello", spec(env={"X": "1"}), "?tag=blue")
        two = doc["revisions"][1]["name"]
        self.assertEqual(doc["traffic"], [
            {"latestRevision": True, "percent": 100},
            {"revisionName": two, "percent": 0, "tag": "blue"}])
        r = self.srv.api("PATCH", SVC + "/hello?tag=Not_Valid", spec())
        self.assertIn("tag", self.assertError(r, 400, "INVALID_ARGUMENT"))

    def test_update_traffic_canary_tags_and_latest(self):
        one = self.create()["revisions"][0]["name"]
        two = self.patch("hello", spec(env={"V": "2"}),
                         "?noTraffic=true")["revisions"][1]["name"]
        doc = self.traffic("hello", {"toRevisions": {one: 90, two: 10}})
        self.assertEqual(doc["traffic"], [
            {"revisionName": one, "percent": 90},
            {"revisionName": two, "percent": 10}])
        doc = self.traffic("hello", {"setTags": {"green": two, "blue": one}})
        self.assertEqual(sorted(t.get("tag") for t in doc["traffic"]),
                         ["blue", "green"])
        # toTags: the rest stays on the other targets in proportion.
        doc = self.traffic("hello", {"toTags": {"green": 50}})
        self.assertEqual(doc["traffic"], [
            {"revisionName": one, "percent": 50, "tag": "blue"},
            {"revisionName": two, "percent": 50, "tag": "green"}])
        doc = self.traffic("hello", {"updateTags": {"canary": "LATEST"},
                                     "removeTags": ["blue"]})
        self.assertEqual(doc["traffic"], [
            {"revisionName": one, "percent": 50},
            {"revisionName": two, "percent": 50, "tag": "green"},
            {"latestRevision": True, "percent": 0, "tag": "canary"}])
        doc = self.traffic("hello", {"toLatest": True})
        self.assertEqual(doc["traffic"], [
            {"revisionName": two, "percent": 0, "tag": "green"},
            {"latestRevision": True, "percent": 100, "tag": "canary"}])
        doc = self.traffic("hello", {"clearTags": True})
        self.assertEqual(doc["traffic"],
                         [{"latestRevision": True, "percent": 100}])
        # Every change was stored: a GET sees the last one.
        got = self.srv.api("GET", SVC + "/hello").json()
        self.assertEqual(got["traffic"], doc["traffic"])

    def test_update_traffic_errors(self):
        one = self.create()["revisions"][0]["name"]
        before = self.srv.api("GET", SVC + "/hello").json()
        cases = [
            ({"toRevisions": {one: 60, "LATEST": 50}}, "100"),
            ({"toRevisions": {"hello-00009-zzz": 10}}, "hello-00009-zzz"),
            ({"toTags": {"nope": 10}}, "nope"),
            ({"setTags": {"Bad_Tag": one}}, "Bad_Tag"),
            ({"toRevisions": {one: "10"}}, one),
            ({"toLatest": True, "toRevisions": {one: 100}}, "toLatest"),
            ({"frobnicate": 1}, "frobnicate"),
        ]
        for body, needle in cases:
            r = self.srv.api("POST", SVC + "/hello:updateTraffic", body)
            self.assertIn(needle, self.assertError(r, 400, "INVALID_ARGUMENT"),
                          body)
        r = self.srv.api("POST", SVC + "/nothere:updateTraffic",
                         {"toLatest": True})
        self.assertError(r, 404, "NOT_FOUND")
        # A PATCH whose traffic names an unknown revision, or sums wrong.
        r = self.srv.api("PATCH", SVC + "/hello", spec(traffic=[
            {"revisionName": "hello-00007-abc", "percent": 100}]))
        self.assertIn("hello-00007-abc",
                      self.assertError(r, 400, "INVALID_ARGUMENT"))
        r = self.srv.api("PATCH", SVC + "/hello", spec(traffic=[
            {"latestRevision": True, "percent": 90}]))
        self.assertIn("traffic", self.assertError(r, 400, "INVALID_ARGUMENT"))
        after = self.srv.api("GET", SVC + "/hello").json()
        self.assertEqual(after["etag"], before["etag"])
        self.assertEqual(after["traffic"], before["traffic"])

    def test_revisions_list_get_delete(self):
        one = self.create()["revisions"][0]["name"]
        two = self.patch("hello", spec(env={"V": "2"}))["revisions"][1]["name"]
        three = self.patch("hello", spec(env={"V": "3"}))["revisions"][2]["name"]
        self.traffic("hello", {"toRevisions": {two: 100},
                               "setTags": {"old": one}})

        r = self.srv.api("GET", SVC + "/hello/revisions")
        self.assertEqual(r.status, 200, r)
        listed = r.json()["revisions"]
        self.assertEqual([x["revision"] for x in listed], [three, two, one])
        self.assertEqual(listed[1]["traffic"],
                         {"percent": 100, "tags": [], "latest": False})
        self.assertEqual(listed[0]["traffic"]["latest"], True)

        r = self.srv.api("GET", SVC + "/hello/revisions/" + one)
        self.assertEqual(r.status, 200, r)
        got = r.json()
        self.assertEqual(got["name"],
                         "projects/default/services/hello/revisions/" + one)
        self.assertEqual(got["service"], "hello")
        self.assertEqual(got["template"], spec())
        self.assertEqual(got["traffic"]["tags"], ["old"])
        self.assertError(self.srv.api("GET", SVC + "/hello/revisions/"
                                      "hello-00042-abc"), 404, "NOT_FOUND")
        self.assertError(self.srv.api("GET", SVC + "/none/revisions"), 404,
                         "NOT_FOUND")

        # Refused while traffic, a tag or "latest" references it.
        for rev in (one, two, three):
            r = self.srv.api("DELETE", SVC + "/hello/revisions/" + rev)
            self.assertError(r, 400, "FAILED_PRECONDITION")
        self.assertError(self.srv.api("DELETE", SVC + "/hello/revisions/"
                                      "hello-00042-abc"), 404, "NOT_FOUND")
        self.traffic("hello", {"removeTags": ["old"]})
        r = self.srv.api("DELETE", SVC + "/hello/revisions/" + one)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {})
        doc = self.srv.api("GET", SVC + "/hello").json()
        self.assertEqual(self.revs(doc), [two, three])
        # The counter is never reused.
        doc = self.patch("hello", spec(env={"V": "4"}))
        self.assertRegex(doc["revisions"][-1]["name"], NAME_RE % ("hello", 4))

    def test_retention_keeps_referenced_revisions(self):
        limit = {"revisionHistoryLimit": 2}
        first = self.create(body=spec(**limit), query="&tag=keep")
        one = first["revisions"][0]["name"]
        for v in range(2, 7):
            doc = self.patch("hello", spec(env={"V": str(v)}, **limit))
        names = self.revs(doc)
        self.assertEqual(names[0], one)           # tagged: kept
        self.assertEqual([n.split("-")[1] for n in names],
                         ["00001", "00004", "00005", "00006"])
        self.assertEqual(doc["revisionCounter"], 6)

    def test_state_survives_restart_and_kill9(self):
        one = self.create()["revisions"][0]["name"]
        self.patch("hello", spec(env={"V": "2"}), "?noTraffic=true&tag=next")
        before = self.srv.api("GET", SVC + "/hello").json()
        self.srv.stop()
        self.srv.start()
        after = self.srv.api("GET", SVC + "/hello").json()
        for key in ("revisions", "traffic", "revisionCounter"):
            self.assertEqual(after[key], before[key])
        self.assertEqual(after["traffic"][0], {"revisionName": one,
                                               "percent": 100})
        self.traffic("hello", {"toTags": {"next": 30}})
        before = self.srv.api("GET", SVC + "/hello").json()
        self.srv.kill9()
        self.srv.start()
        after = self.srv.api("GET", SVC + "/hello").json()
        self.assertEqual(after["traffic"], before["traffic"])
        self.assertEqual(after["revisions"], before["revisions"])
        doc = self.patch("hello", spec(env={"V": "3"}))
        self.assertRegex(doc["revisions"][-1]["name"], NAME_RE % ("hello", 3))

    def test_logs_long_poll_and_abort(self):
        body = {"command": "/bin/sh", "instances": 1,
                "args": ["-c", "echo one; sleep 1; echo two >&2; exec sleep 60"]}
        rev = self.create("talk", body)["revisions"][0]["name"]
        path = SVC + "/talk/logs"

        def first():
            r = self.srv.api("GET", path + "?wait=20s")
            self.assertEqual(r.status, 200, r)
            return r.json()
        got = first()
        self.assertEqual(got["entries"][0]["text"], "one")
        self.assertEqual(got["entries"][0]["revision"], rev)
        self.assertEqual(got["entries"][0]["stream"], "stdout")
        seq = got["entries"][0]["seq"]
        # Waits for the next line instead of answering empty.
        r = self.srv.api("GET", path + "?after=%d&wait=30s" % seq)
        self.assertEqual(r.status, 200, r)
        entries = r.json()["entries"]
        self.assertEqual([(e["text"], e["stream"]) for e in entries],
                         [("two", "stderr")])
        self.assertGreater(r.json()["nextSeq"], seq)
        nxt = r.json()["nextSeq"]
        # A client that gives up on a long poll: the server stays healthy.
        raw(self.srv.api_port,
            ("GET %s?after=%d&wait=30s HTTP/1.1\r\nHost: x\r\n"
             "Authorization: Bearer %s\r\n\r\n" % (path, nxt, self.srv.token)
             ).encode(), timeout=0.5, read_until_close=False)
        r = self.srv.api("GET", path + "?after=%d&wait=1s" % nxt)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["entries"], [])
        for bad in ("wait=61s", "wait=x", "limit=1001", "after=-1",
                    "since=yesterday"):
            r = self.srv.api("GET", path + "?" + bad)
            self.assertError(r, 400, "INVALID_ARGUMENT")
        self.assertError(self.srv.api("GET", SVC + "/none/logs"), 404,
                         "NOT_FOUND")

    def test_manifest_with_traffic_applied_by_cli(self):
        manifest = ("kind: Service\n"
                    "metadata: {name: web}\n"
                    "spec:\n"
                    "  command: /bin/true\n"
                    "  instances: 0\n"
                    "  scaleDownDelay: 30s\n"
                    "  timeout: 60\n"
                    "  resources: {memory: 64Mi, cpu: 500m}\n"
                    "  traffic:\n"
                    "    - latestRevision: true\n"
                    "      percent: 100\n"
                    "      tag: current\n"
                    "  revisionHistoryLimit: 3\n")
        rc, out, err = self.srv.cli("apply", "-f", "-", stdin=manifest)
        self.assertEqual(rc, 0, (out, err))
        doc = self.srv.api("GET", SVC + "/web").json()
        self.assertEqual(doc["traffic"], [
            {"latestRevision": True, "percent": 100, "tag": "current"}])
        self.assertEqual(doc["revisions"][0]["template"]["scaleDownDelay"],
                         "30s")
        # A bad traffic entry is refused with the field named.
        rc, out, err = self.srv.cli("apply", "-f", "-", stdin=manifest.replace(
            "percent: 100", "percent: 90"))
        self.assertNotEqual(rc, 0)
        self.assertIn("traffic", out + err)


if __name__ == "__main__":
    main()
