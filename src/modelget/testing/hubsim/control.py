"""The control API on the hub listener, for another process (``/_sim/faults``, ``/_sim/log``,
``/_sim/repos``): never faulted, never logged."""

from __future__ import annotations

import json

from modelget.testing.faults import Fault
from modelget.testing.hubsim.base import HandlerBase


class ControlRoutes(HandlerBase):
    def _control(self) -> None:
        sim = self.server.sim
        path, method = self._raw_path.rstrip("/"), self.command
        try:
            if path == "/_sim/faults" and method == "POST":
                data = json.loads(self._body or b"{}")
                if not isinstance(data, dict):
                    raise ValueError("a fault is a JSON object")
                self._send_json(200, {"id": sim.add_fault(Fault.from_dict(data))})
            elif path == "/_sim/faults" and method == "DELETE":
                self._send_json(200, {"cleared": sim.clear_faults()})
            elif path == "/_sim/faults" and method == "GET":
                self._send_json(200, {"faults": sim.faults})
            elif path.startswith("/_sim/faults/") and method == "DELETE":
                removed = sim.remove_fault(int(path.rsplit("/", 1)[1]))
                self._send_json(200 if removed else 404, {"removed": removed})
            elif path == "/_sim/log" and method == "GET":
                self._send_json(200, {"requests": [r.to_dict() for r in sim.log]})
            elif path == "/_sim/log" and method == "DELETE":
                sim.clear_log()
                self._send_json(200, {"cleared": True})
            elif path == "/_sim/repos" and method == "GET":
                repos = {
                    rid: {"ms_id": r.ms_id, "branches": dict(r.branches), "tags": dict(r.tags)}
                    for rid, r in sim._repos.items()
                }
                typed = {
                    f"{kind}s": {
                        rid: {"branches": dict(r.branches), "tags": dict(r.tags)}
                        for rid, r in sim.repos_of(kind).items()
                    }
                    for kind in ("dataset", "space")
                }
                self._send_json(200, {"repos": repos, **typed})
            else:
                self._send_json(404, {"error": f"no control endpoint {method} {path}"})
        except (ValueError, TypeError) as exc:
            self._send_json(400, {"error": str(exc)})
        except OSError:
            self.close_connection = True
