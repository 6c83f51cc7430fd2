"""Watches: from a resourceVersion, 410 Gone after compaction, bookmarks, server-side
timeouts, initial events, selectors, and paged lists."""

from __future__ import annotations

import json
import threading
import time

import httpx

from tests.emulator.conftest import CM, MERGE, ok


def stream(api: httpx.Client, path: str, *, until: int = 100, **params: str) -> list[dict]:
    """Events of one watch, read until the server ends it or ``until`` events arrived."""
    events = []
    with api.stream("GET", path, params={"watch": "true", **params}, timeout=15) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line:
                events.append(json.loads(line))
            if len(events) >= until:
                break
    return events


def test_watch_from_a_version_sends_only_later_events(api):
    a = ok(api.post(CM.format(ns="w1"), json={"metadata": {"name": "a"}}), 201)
    ok(api.post(CM.format(ns="w1"), json={"metadata": {"name": "b"}}), 201)
    ok(api.delete(CM.format(ns="w1") + "/a"))
    events = stream(api, CM.format(ns="w1"), until=2, resourceVersion=a["metadata"]["resourceVersion"],
                    timeoutSeconds="2")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "b"), ("DELETED", "a")]


def test_too_old_version_is_410_gone(api, emu):
    a = ok(api.post(CM.format(ns="w2"), json={"metadata": {"name": "a"}}), 201)
    emu.compact()
    events = stream(api, CM.format(ns="w2"), resourceVersion=a["metadata"]["resourceVersion"], timeoutSeconds="2")
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"
    # a relist gives a version to resume from
    rv = ok(api.get(CM.format(ns="w2")))["metadata"]["resourceVersion"]
    ok(api.post(CM.format(ns="w2"), json={"metadata": {"name": "b"}}), 201)
    later = stream(api, CM.format(ns="w2"), until=1, resourceVersion=rv, timeoutSeconds="2")
    assert later[0]["type"] == "ADDED" and later[0]["object"]["metadata"]["name"] == "b"


def test_bookmarks_only_when_allowed(api):
    rv = ok(api.get(CM.format(ns="w3")))["metadata"]["resourceVersion"]
    allowed = stream(api, CM.format(ns="w3"), until=1, resourceVersion=rv, allowWatchBookmarks="true",
                     timeoutSeconds="3")
    assert allowed and allowed[0]["type"] == "BOOKMARK"
    assert int(allowed[0]["object"]["metadata"]["resourceVersion"]) >= int(rv)
    assert allowed[0]["object"]["kind"] == "ConfigMap"
    plain = stream(api, CM.format(ns="w3"), resourceVersion=rv, timeoutSeconds="1")
    assert plain == []


def test_timeout_seconds_ends_the_stream(api):
    rv = ok(api.get(CM.format(ns="w4")))["metadata"]["resourceVersion"]
    # the server ends it: httpx's own 15 s read timeout would raise instead
    assert stream(api, CM.format(ns="w4"), resourceVersion=rv, timeoutSeconds="1") == []


def test_initial_events_end_with_a_bookmark(api):
    ok(api.post(CM.format(ns="w5"), json={"metadata": {"name": "a"}}), 201)
    events = stream(api, CM.format(ns="w5"), until=2, sendInitialEvents="true", resourceVersionMatch="NotOlderThan",
                    allowWatchBookmarks="true", timeoutSeconds="2")
    assert events[0]["type"] == "ADDED" and events[1]["type"] == "BOOKMARK"
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_label_selector_transitions(api):
    ok(api.post(CM.format(ns="w6"), json={"metadata": {"name": "a", "labels": {"app": "x"}}}), 201)
    rv = ok(api.get(CM.format(ns="w6")))["metadata"]["resourceVersion"]

    def relabel() -> None:
        time.sleep(0.3)
        with httpx.Client(base_url=str(api.base_url)) as own:  # one client per thread
            own.patch(CM.format(ns="w6") + "/a", json={"metadata": {"labels": {"app": "y"}}}, headers=MERGE)
            own.patch(CM.format(ns="w6") + "/a", json={"metadata": {"labels": {"app": "x"}}}, headers=MERGE)

    t = threading.Thread(target=relabel)
    t.start()
    events = stream(api, CM.format(ns="w6"), until=2, resourceVersion=rv, labelSelector="app=x", timeoutSeconds="5")
    t.join()
    assert [e["type"] for e in events] == ["DELETED", "ADDED"]


def test_paged_list_with_continue(api):
    for i in range(5):
        ok(api.post(CM.format(ns="w7"), json={"metadata": {"name": f"p{i}"}}), 201)
    first = ok(api.get(CM.format(ns="w7"), params={"limit": "2"}))
    assert len(first["items"]) == 2 and first["metadata"]["continue"]
    names = [i["metadata"]["name"] for i in first["items"]]
    token = first["metadata"]["continue"]
    while token:
        page = ok(api.get(CM.format(ns="w7"), params={"limit": "2", "continue": token}))
        names += [i["metadata"]["name"] for i in page["items"]]
        token = page["metadata"].get("continue")
    assert names == [f"p{i}" for i in range(5)]


def test_cut_watches_end_open_streams(api, emu):
    rv = ok(api.get(CM.format(ns="w8")))["metadata"]["resourceVersion"]
    done: list[list] = []

    def watch() -> None:
        with httpx.Client(base_url=str(api.base_url)) as own:  # one client per thread
            done.append(stream(own, CM.format(ns="w8"), resourceVersion=rv, timeoutSeconds="30"))

    before = emu.watch_count("configmaps")
    t = threading.Thread(target=watch)
    t.start()
    from tests.emulator.conftest import wait_for

    wait_for("the watch to open", lambda: emu.watch_count("configmaps") > before)
    assert emu.cut_watches() >= 1
    t.join(10)
    assert done == [[]]


def test_a_client_hanging_up_ends_its_watch(api, emu):
    from tests.emulator.conftest import wait_for

    rv = ok(api.get(CM.format(ns="w9")))["metadata"]["resourceVersion"]
    before = emu.watch_count("configmaps")
    with api.stream("GET", CM.format(ns="w9"), params={"watch": "true", "resourceVersion": rv}) as resp:
        assert resp.status_code == 200
        wait_for("the watch to open", lambda: emu.watch_count("configmaps") > before)
    wait_for("the server to drop the watch", lambda: emu.watch_count("configmaps") == before)
