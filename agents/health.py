"""`/health` and `/ready` on the worker's web server (TIDINGS_WEB_PORT), for probes.

- `/health`: the event loop answers. A liveness probe restarts a worker only when it fails.
- `/ready`: the worker has joined its group and is not rebalancing, and its tables are
  recovered from their changelogs (Faust sets `recovery.completed` once the standby and
  active tables caught up and the stream partitions were resumed; `in_recovery` covers the
  recoveries after later rebalances). A StatefulSet's rolling update waits for it before it
  moves on to the next pod, so at most one pod's partitions are recovering at a time.
"""

from __future__ import annotations

import faust
from faust.web import Request, Response, View


def register(app: faust.App) -> None:
    @app.page("/health")
    async def health(web: View, request: Request) -> Response:
        return web.json({"status": "ok"})

    @app.page("/ready")
    async def ready(web: View, request: Request) -> Response:
        recovery = app.tables.recovery  # type: ignore[attr-defined]  # TableManager has it
        recovered = recovery.completed.is_set() and not app.in_recovery
        body = {
            "ready": bool(recovered and not app.rebalancing),
            "tables_recovered": recovered,
            "rebalancing": bool(app.rebalancing),
            "partitions_assigned": len(app.consumer.assignment()),
        }
        return web.json(body, status=200 if body["ready"] else 503)
