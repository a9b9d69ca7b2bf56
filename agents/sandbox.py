"""The Jinja2 sandbox templates render in, and the limits a hostile template meets.

Layers, innermost first (the outer ones are in agents/render_process.py):

1. `ImmutableSandboxedEnvironment` (Jinja2 3.1.6): no `_`-prefixed or internal attributes
   (so no `__class__.__mro__[1].__subclasses__()` walks), no mutation of lists and dicts,
   `str.format`/`format_map` through a sandboxed formatter. 3.1.6 closes the published
   escapes: CVE-2016-10745 and CVE-2019-10906 (`str.format`/`format_map` reaching
   attributes), CVE-2024-56326 (an indirect call to a stored `str.format`) and
   CVE-2025-27516 (`|attr("format")`).
2. Ours on top: `format`, `format_map` and the width-taking `str` methods (`center`,
   `ljust`, `rjust`, `zfill`, `expandtabs`) and `replace` are not reachable at all, so
   the format-based escapes are refused twice and nothing can pad or multiply a string in
   one C call; `*`, `**`, `+` and `%` are intercepted (Jinja then also skips folding them
   at compile time) and bounded: a sequence is at most `MAX_SEQUENCE` long, an integer
   power at most `MAX_POWER_BITS` bits, printf-style `%` on strings is refused; `range()`
   is bounded by `MAX_RANGE`; no loader, so no `include`/`import`/`extends`.
3. Output: each part is rendered with `generate()` and stopped as soon as it passes
   `max_chars`, so a runaway loop is cut off at the limit, never buffered in full.
4. Time and memory: the render runs in a child process with an address-space limit that
   the worker kills after the time limit (agents/render_process.py).

A template that breaks any of these raises `TemplateRefused` (or Jinja's `SecurityError`);
the caller turns that into a dead letter.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace
from markdown_it import MarkdownIt
from markupsafe import Markup

MAX_SEQUENCE = 100_000  # characters of a string / items of a list built by an operator
MAX_RANGE = 10_000
MAX_POWER_BITS = 256
MAX_SOURCE_CHARS = 64 * 1024  # per part, checked when a template is published
_UNREACHABLE_STR_METHODS = frozenset(
    {"format", "format_map", "center", "ljust", "rjust", "zfill", "expandtabs", "replace",
     "encode", "translate", "maketrans"}
)
_SIZED = (str, list, tuple, bytes)

__all__ = ["OutputTooLarge", "SecurityError", "TemplateRefused", "environment",
           "render_bounded"]


class TemplateRefused(SecurityError):
    """An operation a template may not do (beyond Jinja's own sandbox rules)."""


class OutputTooLarge(TemplateRefused):
    """A part rendered past its size limit; rendering stopped there."""


def _length(value: Any) -> int:
    return len(value) if isinstance(value, _SIZED) else 0


class TidingsSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Jinja hands out its wrapped `str.format` before asking `is_safe_attribute`
        # (SandboxedEnvironment.getattr), so the refusal has to come first.
        if isinstance(obj, str) and attribute in _UNREACHABLE_STR_METHODS:
            return self.unsafe_undefined(obj, attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, str) and argument in _UNREACHABLE_STR_METHODS:
            return self.unsafe_undefined(obj, str(argument))
        return super().getitem(obj, argument)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str) and attr in _UNREACHABLE_STR_METHODS:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        if op == "*":
            count = right if isinstance(left, _SIZED) else left
            sized = left if isinstance(left, _SIZED) else right
            if isinstance(sized, _SIZED) and isinstance(count, int):
                if len(sized) * max(count, 0) > MAX_SEQUENCE:
                    raise TemplateRefused(
                        f"repeating a sequence past {MAX_SEQUENCE} items is not allowed")
        elif op == "**":
            if isinstance(left, int) and isinstance(right, int):
                if right > 0 and abs(left).bit_length() * right > MAX_POWER_BITS:
                    raise TemplateRefused(f"powers past {MAX_POWER_BITS} bits are not allowed")
            elif isinstance(right, int | float) and abs(right) > 1024:
                raise TemplateRefused("exponents past 1024 are not allowed")
        elif op == "+":
            if _length(left) + _length(right) > MAX_SEQUENCE:
                raise TemplateRefused(f"joining past {MAX_SEQUENCE} items is not allowed")
        elif op == "%" and isinstance(left, str):
            raise TemplateRefused("printf-style % formatting is not allowed; use filters")
        return {"*": operator.mul, "**": operator.pow, "+": operator.add,
                "%": operator.mod}[op](left, right)


def _bounded_range(*args: int) -> range:
    values = range(*args)
    if len(values) > MAX_RANGE:
        raise TemplateRefused(f"range() is limited to {MAX_RANGE} items")
    return values


def _bounded_width(name: str, base: Callable[..., Any]) -> Callable[..., Any]:
    def filter_(value: Any, width: Any = 80, *args: Any, **kwargs: Any) -> Any:
        if isinstance(width, int) and width > 1000:
            raise TemplateRefused(f"{name} width is limited to 1000")
        return base(value, width, *args, **kwargs)

    return filter_


_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False})


def markdown(text: Any) -> Markup:
    """CommonMark to HTML with raw HTML disabled: `<script>` in the input comes out as
    text. markdown-it also refuses `javascript:`/`vbscript:`/`data:` link targets
    (its `validateLink`)."""
    return Markup(_MARKDOWN.render(str(text)))  # noqa: S704 - markdown-it escapes raw HTML


def environment(*, autoescape: bool) -> TidingsSandbox:
    """A sandbox for text parts (`autoescape=False`) or HTML parts (`True`)."""
    env = TidingsSandbox(autoescape=autoescape, undefined=StrictUndefined,
                         trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False)
    # Jinja's defaults minus lipsum (it builds text of any size), cycler and joiner.
    env.globals = {"range": _bounded_range, "dict": dict, "namespace": Namespace}
    for name in ("center", "indent", "wordwrap"):
        env.filters[name] = _bounded_width(name, env.filters[name])
    # `format` runs printf-style `%` on its argument: the same bypass `%` is refused for.
    env.filters.pop("format", None)
    env.filters["markdown"] = markdown
    return env


def compile_part(env: TidingsSandbox, source: str) -> Template:
    if len(source) > MAX_SOURCE_CHARS:
        raise TemplateRefused(f"a part is at most {MAX_SOURCE_CHARS} characters")
    return env.from_string(source)


def render_bounded(template: Template, context: Mapping[str, Any], max_chars: int) -> str:
    """Render through `generate()`, stopping as soon as the output passes `max_chars`."""
    size, pieces = 0, []
    for piece in template.generate(context):
        size += len(piece)
        if size > max_chars:
            raise OutputTooLarge(f"output passed {max_chars} characters")
        pieces.append(piece)
    return "".join(pieces)


TEMPLATE_ERRORS: tuple[type[Exception], ...] = (TemplateError, ArithmeticError, ValueError,
                                                TypeError, LookupError, RecursionError)
