"""What the template sandbox refuses (agents/sandbox.py), one published escape per row."""

from __future__ import annotations

import pytest
from jinja2.exceptions import SecurityError, TemplateAssertionError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from agents import sandbox
from agents.templating import _compiled

TEXT = sandbox.environment(autoescape=False)
HTML = sandbox.environment(autoescape=True)


def render(source: str, max_chars: int = 10_000, **context: object) -> str:
    return sandbox.render_bounded(_compiled(False, source), context, max_chars)


# The published sandbox escapes. Sources: the Jinja2 2.8.1 changelog (CVE-2016-10745) and
# advisories GHSA-462w-v97r-4m45 (CVE-2019-10906), GHSA-q2x7-8rv6-6q7h (CVE-2024-56326),
# GHSA-cpwx-vrp4-4pq7 (CVE-2025-27516). Each must fail in Jinja 3.1.6's own sandbox and
# in ours (where `format`/`format_map` are not even reachable).
CVES = [
    pytest.param("{{ '{0.__class__.__mro__}'.format(1) }}", id="CVE-2016-10745 str.format"),
    pytest.param("{{ '{x.__class__.__mro__}'.format_map({'x': 1}) }}",
                 id="CVE-2019-10906 format_map"),
    pytest.param("{% set f = '{0.__class__.__mro__}'.format %}{{ f(1) }}",
                 id="CVE-2024-56326 stored format"),
    pytest.param("{{ ('{0.__class__.__mro__}' | attr('format'))(1) }}",
                 id="CVE-2025-27516 attr filter"),
]


@pytest.mark.parametrize("source", CVES)
def test_published_escapes_fail_in_jinjas_sandbox_and_in_ours(source: str) -> None:
    stock = ImmutableSandboxedEnvironment()
    with pytest.raises(SecurityError, match="__class__"):
        stock.from_string(source).render()
    # Ours refuses one step earlier: the method itself is out of reach.
    with pytest.raises(SecurityError, match=r"attribute 'format(_map)?' of 'str'"):
        render(source)


# Each row: a payload and the error class it must raise.
REFUSED = [
    pytest.param("{{ ().__class__.__base__.__subclasses__() }}", SecurityError,
                 id="__subclasses__ walk"),
    pytest.param("{{ ''.__class__.__mro__[1].__subclasses__()[0] }}", SecurityError,
                 id="mro walk"),
    pytest.param("{{ namespace.__init__.__globals__ }}", SecurityError, id="globals"),
    pytest.param("{{ self._TemplateReference__context }}", SecurityError,
                 id="template reference"),
    pytest.param("{{ range.__self__ }}", UndefinedError, id="builtin self"),
    pytest.param("{{ 'x' * 10**9 }}", sandbox.TemplateRefused, id="string multiplication"),
    pytest.param("{{ [1] * 10**9 }}", sandbox.TemplateRefused, id="list multiplication"),
    pytest.param("{{ 10 ** 10 ** 10 }}", sandbox.TemplateRefused, id="huge power"),
    pytest.param("{{ 9 ** 999 }}", sandbox.TemplateRefused, id="big power"),
    pytest.param("{{ '%999999999s' % 'x' }}", sandbox.TemplateRefused, id="printf padding"),
    pytest.param("{{ '%s' | format('x') }}", TemplateAssertionError, id="format filter"),
    pytest.param("{{ 'x'.center(10**9) }}", SecurityError, id="str.center"),
    pytest.param("{{ 'x'.ljust(10**9) }}", SecurityError, id="str.ljust"),
    pytest.param("{{ 'x'.zfill(10**9) }}", SecurityError, id="str.zfill"),
    pytest.param("{{ ('x' * 1000).replace('x', 'x' * 1000) }}", SecurityError,
                 id="str.replace"),
    pytest.param("{{ 'x' | center(10**9) }}", sandbox.TemplateRefused, id="center filter"),
    pytest.param("{{ 'x' | indent(10**9) }}", sandbox.TemplateRefused, id="indent filter"),
    pytest.param("{% for i in range(10**9) %}{% endfor %}", sandbox.TemplateRefused,
                 id="range"),
    pytest.param("{{ lipsum(10**6) }}", UndefinedError, id="lipsum"),
    pytest.param("{% include 'other-tenant/secret' %}", TypeError, id="include"),
    pytest.param("{% extends '/etc/passwd' %}", TypeError, id="extends"),
    pytest.param("{% set x = [] %}{{ x.append(1) }}", SecurityError, id="list mutation"),
]


@pytest.mark.parametrize(("source", "error"), REFUSED)
def test_the_sandbox_refuses(source: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        render(source)
    assert issubclass(error, sandbox.TEMPLATE_ERRORS)  # reported as a render error


def test_string_multiplication_is_refused_before_it_allocates() -> None:
    with pytest.raises(sandbox.TemplateRefused, match="past 100000"):
        render("{{ 'x' * 10**9 }}")


def test_small_arithmetic_still_works() -> None:
    assert render("{{ 'ab' * 3 }} {{ 2 ** 10 }} {{ 7 % 3 }} {{ 'a' + 'b' }}") == \
        "ababab 1024 1 ab"


def test_output_is_cut_off_at_the_limit_while_generating() -> None:
    with pytest.raises(sandbox.OutputTooLarge):
        render("{% for i in range(10000) %}{% for j in range(10000) %}xxxxxxxxxx"
               "{% endfor %}{% endfor %}", max_chars=50_000)


def test_undefined_names_raise_instead_of_rendering_empty() -> None:
    with pytest.raises(UndefinedError):
        render("Hello {{ data.name }}", data={})


def test_autoescape_is_for_html_parts_only() -> None:
    value = "<script>alert(1)</script> & co"
    assert render("{{ v }}", v=value) == value
    html = sandbox.render_bounded(_compiled(True, "<p>{{ v }}</p>"), {"v": value}, 1000)
    assert html == "<p>&lt;script&gt;alert(1)&lt;/script&gt; &amp; co</p>"


def test_markdown_disables_raw_html_and_unsafe_links() -> None:
    html = sandbox.render_bounded(
        _compiled(True, "{{ v | markdown }}"),
        {"v": "**bold** <img src=x onerror=alert(1)> [x](javascript:alert(1))"}, 1000)
    assert "<strong>bold</strong>" in html
    assert "<img" not in html and "&lt;img" in html
    assert 'href="javascript' not in html


def test_a_template_source_has_a_size_limit() -> None:
    with pytest.raises(sandbox.TemplateRefused):
        sandbox.compile_part(TEXT, "x" * (sandbox.MAX_SOURCE_CHARS + 1))
