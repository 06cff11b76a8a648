"""How `status` and `cluster check` put an engine's GET /triggers entries into words."""

from __future__ import annotations

from k8s.status import trigger_problems, trigger_source, trigger_state

DURABLE = {
    "type": "queue", "name": "orders", "subject": "orders.new", "durable": True, "connected": True, "max_deliver": 3,
    "jetstream": {"stream": "PIPEDREAMER_SHOP", "stream_exists": True, "pending": 4, "in_progress": 1, "redelivered": 0,
                  "dead_letters": 2, "dead_letter_subject": "pipedreamer.dlq.shop"},
}  # fmt: skip


def test_a_durable_queue_shows_its_stream_lag_and_dead_letters():
    assert trigger_source(DURABLE) == "orders.new"
    assert trigger_state(DURABLE) == "durable: stream PIPEDREAMER_SHOP, 4 waiting, 1 in progress, 2 dead letters (pipedreamer.dlq.shop)"
    assert trigger_problems(DURABLE) == ["queue orders: 2 dead letter(s) on pipedreamer.dlq.shop"]


def test_a_missing_stream_and_a_disconnected_core_queue_are_problems():
    missing = {**DURABLE, "jetstream": {"stream": "PIPEDREAMER_SHOP", "stream_exists": False, "error": "stream not found"}}
    assert trigger_state(missing) == "durable: stream PIPEDREAMER_SHOP missing: stream not found"
    assert trigger_problems(missing) == ["queue orders: stream PIPEDREAMER_SHOP missing (stream not found)"]
    core = {"type": "queue", "name": "q", "subject": "a", "durable": False, "connected": False, "queue_group": "pipedreamer.shop"}
    assert trigger_state(core) == "core NATS, queue group pipedreamer.shop: not connected"
    assert trigger_problems(core) == ["queue q: not connected to NATS"]
    skipped = {**core, "error": "skipped: config.nats_url not set"}
    assert trigger_state(skipped) == "error: skipped: config.nats_url not set"


def test_webhooks_say_how_they_are_signed():
    hook = {"type": "webhook", "name": "github", "path": "/hooks/github", "signature": "github", "key_set": True}
    assert (trigger_source(hook), trigger_state(hook), trigger_problems(hook)) == ("POST /hooks/github", "signed (github)", [])
    open_hook = {**hook, "signature": "none"}
    assert trigger_problems(open_hook) == ["webhook github takes unsigned calls"]
