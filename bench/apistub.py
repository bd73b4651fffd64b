"""A small in-memory Kubernetes API stand-in for benchmarks: fast, and strict where it matters.

Why not kmock here: kmock checks every request against its whole request history, so its cost per
request grows with the number of requests served; a throughput benchmark would measure kmock.
This stand-in does O(1) work per object request and, unlike kmock, keeps the semantics the
operator's correctness rests on: ``metadata.resourceVersion`` on every object (a global counter),
409 on a stale resourceVersion in a patch, 409 on create of an existing name, generateName,
uid, the status subresource, merge-patch and JSON-patch, list + watch from a resourceVersion,
uid/resourceVersion preconditions on DELETE, ``limit``/``continue`` pages. ``GET /_stats`` reports
what was written (requests and body bytes of every POST/PATCH/PUT/DELETE but Events) and the
largest object stored, for the benchmark's "bytes per admission" and "largest object".

Not a general API server: no admission, no validation, no garbage collection, no field selectors,
label selectors only of the ``k=v,k2=v2`` form, deletion ignores finalizers.

    python bench/apistub.py PORT     # prints "ready" once listening
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import datetime as dt
import json
import signal
import sys
import uuid
from collections import defaultdict
from typing import Any

import jsonpatch
from aiohttp import web

from gismo_operator.testing.mergepatch import merge_patch

#: (group, version, plural) -> (kind, namespaced)
RESOURCES: dict[tuple[str, str, str], tuple[str, bool]] = {
    ("", "v1", "pods"): ("Pod", True),
    ("", "v1", "events"): ("Event", True),
    ("", "v1", "namespaces"): ("Namespace", False),
    ("", "v1", "nodes"): ("Node", False),
    ("gismo.io", "v1alpha1", "gismopools"): ("GismoPool", False),
    ("gismo.io", "v1alpha1", "gismoslices"): ("GismoSlice", True),
    ("gismo.io", "v1alpha1", "gismoregions"): ("GismoRegion", True),
    ("ray.io", "v1", "rayclusters"): ("RayCluster", True),
}
WITH_STATUS = {"gismopools", "gismoslices", "rayclusters"}


class Store:
    def __init__(self) -> None:
        self.write_requests = 0
        self.write_bytes = 0
        self.write_requests_by_method: dict[str, int] = defaultdict(int)
        self.write_bytes_by_method: dict[str, int] = defaultdict(int)
        self.largest_object = 0
        self.largest_name = ""
        self.rv = 0
        self.objects: dict[tuple[str, str, str], dict[tuple[str, str], dict[str, Any]]] = defaultdict(dict)
        self.log: dict[tuple[str, str, str], list[tuple[int, dict[str, Any]]]] = defaultdict(list)
        self.changed: dict[tuple[str, str, str], asyncio.Condition] = defaultdict(asyncio.Condition)
        #: Paged LISTs in progress: continue token id -> (resourceVersion, the items of the list).
        self.snapshots: dict[str, tuple[str, list[dict[str, Any]]]] = {}

    def bump(self) -> str:
        self.rv += 1
        return str(self.rv)

    async def emit(self, res: tuple[str, str, str], kind: str, obj: dict[str, Any]) -> None:
        self.log[res].append((int(obj["metadata"]["resourceVersion"]), {"type": kind, "object": obj}))
        cond = self.changed[res]
        async with cond:
            cond.notify_all()


def status(code: int, reason: str, message: str) -> web.Response:
    body = {
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }
    return web.json_response(body, status=code)


def parse(path: str) -> tuple[tuple[str, str, str], str | None, str | None, str | None] | None:
    parts = [p for p in path.split("/") if p]
    if len(parts) < 3:
        return None
    if parts[:1] == ["api"]:
        group, rest = "", parts[1:]
    elif parts[:1] == ["apis"]:
        group, rest = parts[1], parts[2:]
    else:
        return None
    if not rest:
        return None
    version, rest = rest[0], rest[1:]
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces" and (group, version, rest[2]) in RESOURCES:
        namespace, rest = rest[1], rest[2:]
    if not rest or (group, version, rest[0]) not in RESOURCES:
        return None
    plural = rest[0]
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    return (group, version, plural), namespace, name, sub


def selected(obj: dict[str, Any], selector: str | None) -> bool:
    if not selector:
        return True
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip():
            return False
    return True


def make_app(store: Store) -> web.Application:
    async def discovery(request: web.Request) -> web.Response:
        parts = [p for p in request.path.split("/") if p]
        if parts == ["api"]:
            return web.json_response({"kind": "APIVersions", "versions": ["v1"]})
        groups: dict[str, set[str]] = defaultdict(set)
        for g, v, _ in RESOURCES:
            if g:
                groups[g].add(v)
        if parts == ["apis"]:
            return web.json_response(
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [
                        {
                            "name": g,
                            "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in sorted(vs)],
                            "preferredVersion": {
                                "groupVersion": f"{g}/{sorted(vs)[0]}",
                                "version": sorted(vs)[0],
                            },
                        }
                        for g, vs in groups.items()
                    ],
                }
            )
        if len(parts) == 2 and parts[0] == "apis":
            vs = sorted(groups.get(parts[1], ()))
            if not vs:
                return status(404, "NotFound", request.path)
            return web.json_response(
                {
                    "kind": "APIGroup",
                    "apiVersion": "v1",
                    "name": parts[1],
                    "versions": [{"groupVersion": f"{parts[1]}/{v}", "version": v} for v in vs],
                    "preferredVersion": {"groupVersion": f"{parts[1]}/{vs[0]}", "version": vs[0]},
                }
            )
        group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
        resources = []
        for (g, v, plural), (kind, namespaced) in RESOURCES.items():
            if (g, v) == (group, version):
                verbs = ["get", "list", "watch", "create", "patch", "update", "delete"]
                resources.append(
                    {
                        "name": plural,
                        "singularName": kind.lower(),
                        "kind": kind,
                        "namespaced": namespaced,
                        "verbs": verbs,
                    }
                )
                if plural in WITH_STATUS:
                    resources.append(
                        {
                            "name": f"{plural}/status",
                            "kind": kind,
                            "namespaced": namespaced,
                            "verbs": ["get", "patch"],
                        }
                    )
        if not resources:
            return status(404, "NotFound", request.path)
        gv = f"{group}/{version}" if group else version
        return web.json_response({"kind": "APIResourceList", "groupVersion": gv, "resources": resources})

    def stored(res: tuple[str, str, str], obj: dict[str, Any]) -> None:
        size = len(json.dumps(obj))
        if size > store.largest_object:
            store.largest_object = size
            store.largest_name = f"{res[2]}/{obj['metadata'].get('name')}"

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/_stats":
            return web.json_response(
                {
                    "write_requests": store.write_requests,
                    "write_bytes": store.write_bytes,
                    "write_requests_by_method": store.write_requests_by_method,
                    "write_bytes_by_method": store.write_bytes_by_method,
                    "largest_object_bytes": store.largest_object,
                    "largest_object": store.largest_name,
                }
            )
        parsed = parse(request.path)
        if (
            parsed is not None
            and request.method in ("POST", "PATCH", "PUT", "DELETE")
            and parsed[0][2] != "events"
        ):
            size = len(await request.read())
            store.write_requests += 1
            store.write_bytes += size
            store.write_requests_by_method[request.method] += 1
            store.write_bytes_by_method[request.method] += size
        if parsed is None:
            return await discovery(request)
        res, namespace, name, sub = parsed
        kind, namespaced = RESOURCES[res]
        objects = store.objects[res]
        method = request.method
        if name is None and method == "GET":
            if request.query.get("watch") in ("true", "1"):
                return await watch(
                    request, res, namespace, int(request.query.get("resourceVersion") or store.rv)
                )
            token = request.query.get("continue")
            if token:  # a later page: of the snapshot the first page took (as at a resourceVersion)
                snapshot_id, _, position = token.partition(":")
                if snapshot_id not in store.snapshots:
                    return status(410, "Expired", "the continue token has expired")
                version, items = store.snapshots[snapshot_id]
                start = int(position)
            else:
                version = str(store.rv)
                items = [
                    o
                    for (ns, _), o in objects.items()
                    if (namespace is None or ns == namespace)
                    and selected(o, request.query.get("labelSelector"))
                ]
                start = 0
            list_meta: dict[str, Any] = {"resourceVersion": version}
            if request.query.get("limit"):
                # Pages as the real API server serves them: every page of one LIST is cut from the
                # state at its first page (a snapshot here, etcd's revision there), at O(page) cost
                # per page; filtering the whole store again for every page made a LIST of 10,000
                # objects in pages of 100 quadratic, and this single-threaded stand-in then held the
                # operator's admissions behind it.
                limit = int(request.query["limit"])
                if start + limit < len(items):
                    snapshot_id = token.partition(":")[0] if token else uuid.uuid4().hex
                    store.snapshots[snapshot_id] = (version, items)
                    while len(store.snapshots) > 64:  # lists abandoned half-way
                        store.snapshots.pop(next(iter(store.snapshots)))
                    list_meta["continue"] = f"{snapshot_id}:{start + limit}"
                elif token:
                    store.snapshots.pop(token.partition(":")[0], None)
                items = items[start : start + limit]
            return web.json_response({"kind": f"{kind}List", "metadata": list_meta, "items": items})
        if name is None and method == "POST":
            body = await request.json()
            meta = body.setdefault("metadata", {})
            if not meta.get("name"):
                meta["name"] = (meta.get("generateName") or "obj-") + uuid.uuid4().hex[:5]
            ns = (namespace or meta.get("namespace") or "") if namespaced else ""
            if namespaced:
                meta["namespace"] = ns
            key = (ns, meta["name"])
            if key in objects:
                return status(409, "AlreadyExists", f"{res[2]} {meta['name']} already exists")
            meta.setdefault("uid", str(uuid.uuid4()))
            meta["resourceVersion"] = store.bump()
            meta.setdefault("creationTimestamp", dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            meta.setdefault("generation", 1)
            if res[2] != "events":
                objects[key] = body
                stored(res, body)
                await store.emit(res, "ADDED", body)
            return web.json_response(body, status=201)
        key = ((namespace or "") if namespaced else "", name or "")
        current = objects.get(key)
        if current is None:
            return status(404, "NotFound", f"{res[2]} {name} not found")
        if method == "GET":
            return web.json_response(current)
        if method == "DELETE":
            options = json.loads(await request.read() or b"{}")
            pre = options.get("preconditions") or {}
            if ("uid" in pre and pre["uid"] != current["metadata"].get("uid")) or (
                "resourceVersion" in pre
                and pre["resourceVersion"] != current["metadata"].get("resourceVersion")
            ):
                return status(409, "Conflict", "Precondition failed")
            del objects[key]
            deleted = copy.deepcopy(current)
            deleted["metadata"]["resourceVersion"] = store.bump()
            await store.emit(res, "DELETED", deleted)
            return web.json_response(deleted)
        if method == "PATCH":
            patch = await request.json()
            ctype = request.content_type
            if ctype == "application/json-patch+json":
                try:
                    new = jsonpatch.apply_patch(current, patch)
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                    return status(422, "Invalid", str(exc))
            else:
                wanted_rv = (patch.get("metadata") or {}).get("resourceVersion")
                if wanted_rv is not None and wanted_rv != current["metadata"]["resourceVersion"]:
                    return status(
                        409,
                        "Conflict",
                        "the object has been modified; please apply your changes to the latest version",
                    )
                if sub == "status":
                    patch = {"status": patch.get("status")}
                elif res[2] in WITH_STATUS:
                    patch = {k: v for k, v in patch.items() if k != "status"}
                new = merge_patch(current, patch)
            if new.get("spec") != current.get("spec"):
                new["metadata"]["generation"] = int(current["metadata"].get("generation", 1)) + 1
            new["metadata"]["resourceVersion"] = store.bump()
            objects[key] = new
            stored(res, new)
            await store.emit(res, "MODIFIED", new)
            return web.json_response(new)
        return status(405, "MethodNotAllowed", method)

    async def watch(
        request: web.Request, res: tuple[str, str, str], namespace: str | None, since: int
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        timeout = float(request.query.get("timeoutSeconds") or 300)
        deadline = asyncio.get_running_loop().time() + timeout
        log, cond = store.log[res], store.changed[res]
        pos = bisect.bisect_right([rv for rv, _ in log], since)  # the log is in resourceVersion order
        try:
            while True:
                while pos < len(log):
                    event = log[pos][1]
                    pos += 1
                    obj = event["object"]
                    if namespace is None or obj["metadata"].get("namespace") == namespace:
                        await response.write(json.dumps(event).encode() + b"\n")
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                async with cond:
                    try:
                        await asyncio.wait_for(cond.wait(), left)
                    except TimeoutError:
                        break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def serve(port: int) -> None:
    store = Store()
    runner = web.AppRunner(make_app(store), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
