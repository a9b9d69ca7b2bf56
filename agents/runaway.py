"""The runaway-trigger guard, wired into intake: hold a flooding tenant's new requests.

Intake calls `RunawayGuard.check` once per accepted request (after dedup, so duplicates do
not count). The decision is agents/guard.py's, per tenant and partition; this module keeps
those states (in memory, written to the `guard` table when a window closes or the state
changes), and acts:

    trip     hold the request, raise the alert: a `runaway_hold` anomaly event and the
             `notification_guard_holding_partitions` gauge
    hold     write the request to `<prefix>.hold` (the same partition number), status `held`
    release  a timer checks the holding states; once a tenant's rate has been back under the
             bound for `guard_clear_windows` windows, its held requests on that partition are
             re-published (streams/hold.py, in a thread) and a `runaway_release` event raised

Re-published requests carry the `tidings-released` header: the guard passes them uncounted.
One released by an operator (`tidings hold release`) also ends the holding on its partition
and makes the tenant's current rate its new baseline, then sweeps what was held meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust

from agents.alerts import GUARD_HELD, GUARD_HOLDING, GUARD_RELEASED, Alerts, anomaly_record
from agents.context import Pipeline
from agents.guard import Decision, GuardConfig, GuardState
from streams import hold
from streams.app import raw_topic
from streams.errors import TidingsError
from streams.requests import now_ms

log = logging.getLogger("tidings.guard")


class RunawayGuard:
    def __init__(self, app: faust.App, pipeline: Pipeline) -> None:
        settings = self.settings = pipeline.settings
        self.app, self.pipeline = app, pipeline
        self.config = GuardConfig(
            window_ms=int(settings.guard_window_s * 1000), partitions=settings.partitions,
            alpha=settings.guard_alpha, z=settings.guard_z,
            min_rate_per_s=settings.guard_min_rate_per_s,
            warmup=settings.guard_warmup_windows, clear_windows=settings.guard_clear_windows,
        )
        self.enabled = settings.guard_enabled
        self.exempt = frozenset(settings.guard_disabled_tenants)
        self.table = app.Table("guard", default=None, partitions=settings.partitions)
        self.hold = raw_topic(app, settings.topic("hold"))
        self.alerts = Alerts(app, settings)
        self.states: dict[tuple[str, int], GuardState] = {}
        self.releasing: set[asyncio.Task[None]] = set()
        # States the timer changed, to be written with the next request of their partition.
        self.unsaved: set[tuple[str, int]] = set()
        if self.enabled:
            app.on_partitions_revoked.connect(self._forget)
            app.timer(interval=max(self.config.window_ms / 2000, 0.2),
                      name="tidings.guard.release")(self._release_due)

    def _forget(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        for (tenant, _partition), state in self.states.items():
            if state.holding:
                GUARD_HOLDING.labels(tenant).dec()
        self.states.clear()
        self.unsaved.clear()

    def _state(self, tenant: str, partition: int) -> GuardState:
        state = self.states.get((tenant, partition))
        if state is None:
            state = GuardState.from_dict(self.config, self.table.get(tenant))
            self.states[(tenant, partition)] = state
            if state.holding:
                GUARD_HOLDING.labels(tenant).inc()
        return state

    async def check(self, event: faust.EventT[bytes], request: dict[str, Any]) -> bool:
        """True when the guard took the request (held it); the caller then stops."""
        tenant = request["tenant_id"]
        if not self.enabled or tenant in self.exempt:
            return False
        partition = event.message.partition
        state = self._state(tenant, partition)
        released_by = (event.headers or {}).get(hold.RELEASED_HEADER)
        if released_by is not None:
            # The header is only ours to set, but a label takes no arbitrary bytes.
            GUARD_RELEASED.labels(tenant, "operator" if released_by == b"operator" else "auto"
                                  ).inc()
            if (tenant, partition) in self.unsaved:
                self.unsaved.discard((tenant, partition))
                self.table[tenant] = state.to_dict()
            if released_by == b"operator" and state.holding:
                state.release(accept_level=True)
                self.table[tenant] = state.to_dict()
                GUARD_HOLDING.labels(tenant).dec()
                await self._released(tenant, partition, state, "operator")
                self._sweep(tenant, partition)  # what was held after the operator's read
            return False
        now = now_ms()
        rolled_before = state.window_ms
        decision = state.on_request(now)
        # Written when a window closes or the state turns, not for every request: a lost
        # partial count costs nothing, a changelog record per request would.
        if (decision is Decision.TRIP or state.window_ms != rolled_before
                or (tenant, partition) in self.unsaved):
            self.unsaved.discard((tenant, partition))
            self.table[tenant] = state.to_dict()
        if decision is Decision.ALLOW:
            return False
        await self.hold.send(key=event.key, value=event.value, partition=partition)
        GUARD_HELD.labels(tenant).inc()
        await self.pipeline.emit_status(
            request, "held", reason="runaway guard: the tenant's send rate is anomalous",
            details={"partition": str(partition), "window_count": str(state.count)},
        )
        if decision is Decision.TRIP:
            GUARD_HOLDING.labels(tenant).inc()
            await self.alerts.emit(self._event(tenant, partition, state, "runaway_hold", "hold"))
        return True

    def _event(self, tenant: str, partition: int, state: GuardState, kind: str, action: str,
               **details: str) -> dict[str, Any]:
        detector = state.detector
        observed = float(state.count if action == "hold" else state.last_count)
        if details.get("released_by") == "operator":
            observed = float(state.peak)  # the rate the operator accepted as normal
        return anomaly_record(
            tenant_id=tenant, kind=kind, series="guard:sent", observed=observed,
            expected=detector.mean, score=detector.score(observed), threshold=self.config.z,
            window_start_ms=state.window_ms,
            window_end_ms=state.window_ms + self.config.window_ms, action=action,
            details={"partition": str(partition), "bound": f"{state.bound():.1f}",
                     "partitions": str(self.config.partitions), **details},
        )

    async def _released(self, tenant: str, partition: int, state: GuardState, by: str) -> None:
        await self.alerts.emit(self._event(tenant, partition, state, "runaway_release",
                                           "release", released_by=by))

    async def _release_due(self) -> None:
        now = now_ms()
        for (tenant, partition), state in list(self.states.items()):
            if state.release_due(now):
                # In memory first, so no request is held after the release has read the hold
                # topic; the table follows with the tenant's next request on this partition.
                state.release(accept_level=False)
                self.unsaved.add((tenant, partition))
                GUARD_HOLDING.labels(tenant).dec()
                await self._released(tenant, partition, state, "auto")
                self._sweep(tenant, partition)

    def _sweep(self, tenant: str, partition: int) -> None:
        task = asyncio.ensure_future(self._release(tenant, partition))
        self.releasing.add(task)
        task.add_done_callback(self.releasing.discard)

    async def _release(self, tenant: str, partition: int) -> None:
        await self.app.producer.flush()  # every held request is on the broker before the read
        try:
            released = await asyncio.to_thread(hold.release, self.settings, tenant, by="auto",
                                               partitions=[partition])
        except TidingsError as exc:
            log.error("releasing %s's held requests on partition %s: %s; "
                      "release them with `tidings hold release --tenant %s`",
                      tenant, partition, exc, tenant)
            return
        if released:
            log.warning("released %d held requests of %s on partition %d", len(released),
                        tenant, partition)
