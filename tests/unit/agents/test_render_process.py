"""The render child process (agents/render_process.py): a hostile template is cut off and
the next render still works. Real child processes; no broker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agents.render_process import RenderFailed, RenderProcess, RenderTimeout
from agents.templating import plan
from streams.templates import version_record

REQUEST = {"tenant_id": "acme", "notification_id": "n1", "category": "c", "priority": "normal",
           "created_at": 0, "data": {"name": "Ann"},
           "recipients": [{"user_id": "u1", "locale": "en"}]}
LOOP = ("{% for i in range(10000) %}{% for j in range(10000) %}{% for k in range(10000) %}"
        "{% endfor %}{% endfor %}{% endfor %}")
# `~` (concatenation) is not an operator the sandbox can intercept: the string doubles
# until the child's address-space limit stops it.
DOUBLING = ("{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(40) %}"
            "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}")


def job(title: str) -> Any:
    document = {"template_id": "t", "locales": {"en": {"title": title}}}
    return plan(version_record("acme", document, version=1, occurred_at=0), REQUEST,
                ["webhook"])[1]


@pytest.fixture
def process() -> Iterator[RenderProcess]:
    running = RenderProcess(timeout_s=3.0, max_memory_mb=512)
    running.start()
    yield running
    running.close()


def test_a_render_comes_back(process: RenderProcess) -> None:
    assert process.render_blocking(job("Hello {{ data.name }}"))["webhook"]["title"] == \
        "Hello Ann"


def test_an_endless_loop_is_cut_off_and_the_next_render_works(process: RenderProcess) -> None:
    with pytest.raises(RenderTimeout):
        process.render_blocking(job(LOOP))
    assert process.restarts == 1
    assert process.render_blocking(job("still {{ data.name }}"))["webhook"]["title"] == \
        "still Ann"


def test_a_memory_bomb_ends_in_the_child() -> None:
    # A generous time limit, so that it is the address-space limit that ends it.
    process = RenderProcess(timeout_s=60.0, max_memory_mb=256)
    try:
        with pytest.raises(RenderFailed) as caught:
            process.render_blocking(job(DOUBLING))
        assert caught.value.error_class == "MemoryError"
        assert process.render_blocking(job("ok"))["webhook"]["title"] == "ok"
        assert process.restarts == 0  # the child survived its MemoryError
    finally:
        process.close()


def test_sandbox_refusals_come_back_as_render_failures(process: RenderProcess) -> None:
    with pytest.raises(RenderFailed) as caught:
        process.render_blocking(job("{{ 'x' * 10**9 }}"))
    assert caught.value.error_class == "TemplateRefused"
    assert process.restarts == 0


async def test_render_from_a_coroutine(process: RenderProcess) -> None:
    assert (await process.render(job("async {{ data.name }}")))["webhook"]["title"] == \
        "async Ann"


def test_a_child_that_died_between_renders_is_replaced(process: RenderProcess) -> None:
    assert process._process is not None
    process._process.kill()  # as the kernel's OOM killer would
    process._process.wait()
    assert process.render_blocking(job("again {{ data.name }}"))["webhook"]["title"] == \
        "again Ann"
    assert process.restarts == 1
