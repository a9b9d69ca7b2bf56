"""Tests for streams/api/store.py on a real RocksDB in a temporary directory."""

from __future__ import annotations

from streams.api.store import StatusStore
from streams.records import status_record


def status(notification_id: str, name: str, tenant: str = "acme") -> dict:
    return status_record({"tenant_id": tenant, "notification_id": notification_id}, name,
                         at_ms=1)


def test_timeline_is_in_log_order_and_only_of_its_notification(tmp_path):
    store = StatusStore(tmp_path)
    store.apply(statuses=[(0, 5, status("n1", "accepted")), (0, 6, status("n10", "accepted")),
                          (0, 12, status("n1", "delivered")), (1, 3, status("n2", "accepted"))])
    # offsets sort as numbers (zero-padded), and `n1` does not pick up `n10`
    assert [s["status"] for s in store.timeline("n1")] == ["accepted", "delivered"]
    assert [s["notification_id"] for s in store.timeline("n10")] == ["n10"]
    assert store.timeline("n3") == []


def test_offsets_and_records_survive_a_reopen_and_replays_do_not_duplicate(tmp_path):
    store = StatusStore(tmp_path)
    batch = [(2, 7, status("n1", "accepted"))]
    store.apply(statuses=batch, offsets=[("t.status", 2, 8)])
    store.apply(statuses=batch, offsets=[("t.status", 2, 8)])  # the same record read again
    store.close()
    reopened = StatusStore(tmp_path)
    assert reopened.next_offset("t.status", 2) == 8
    assert reopened.next_offset("t.status", 3) is None
    assert len(reopened.timeline("n1")) == 1


def test_idempotency_records_are_per_tenant_and_name_the_owner(tmp_path):
    store = StatusStore(tmp_path)
    record = {"tenant_id": "acme", "idempotency_key": "k", "body_sha256": "h",
              "notification_id": "ntf_1", "accepted_at": 5}
    store.remember(record)
    assert store.idempotency("acme", "k") == record
    assert store.idempotency("globex", "k") is None
    assert store.owner("ntf_1") == "acme"
    store.apply(idempotency=[{**record, "tenant_id": "globex", "notification_id": "ntf_2"}])
    assert store.idempotency("globex", "k")["notification_id"] == "ntf_2"
    assert store.owner("ntf_2") == "globex"
