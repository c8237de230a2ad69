"""Untrusted domain files: YAML bombs, odd files, and Jinja prompt overrides in the sandbox."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import Result, alias_bomb, api_error, cases, each, kind

from samalign.errors import ConfigError
from samalign.prompts import load_domain

DOMAIN_HEAD = "name: hostile\nentity_types:\n  - label: person\n    definition: a person\n"


YAML: list[tuple[str, str | bytes, str]] = [
    ("YAML alias bomb in an enum field", alias_bomb(), "expands to more than"),
    ("small alias fan-out in an enum field", alias_bomb(3, 9), "got ["),
    (
        "YAML merge-key bomb",
        "b: &b {k: v}\n"
        + "\n".join(
            f"m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}' if i > 1 else '*b'] * 9)}]}}"
            for i in range(1, 10)
        ),
        "expands to more than",
    ),
    ("YAML nested 100,000 levels", "name: " + "[" * 100_000 + "]" * 100_000, "nest"),
    (
        "YAML nested mappings 1,000 levels",
        "a:\n" + "".join(f"{' ' * i}b:\n" for i in range(1, 1000)),
        "deep",
    ),
    ("python object tag", "!!python/object/apply:os.system ['touch /tmp/samalign-pwned']", "YAML"),
    ("unknown YAML tag", "name: !evil x\nentity_types: []\n", "YAML"),
    ("YAML that is a list", "- a\n- b\n", "mapping"),
    ("YAML that is a scalar", "just text\n", "mapping"),
    ("empty YAML file", "", "mapping"),
    ("tabs and broken indentation", "name: x\n\tentity_types:\n  - label", "YAML"),
    ("unknown field", DOMAIN_HEAD + "colour: blue\n", "unknown field"),
    ("missing entity types", "name: x\n", "entity_types"),
    ("duplicate labels", DOMAIN_HEAD + "  - label: person\n    definition: again\n", "duplicate"),
    ("archetype not in the 14", DOMAIN_HEAD + "    archetype: " + "Z" * 100_000 + "\n", "got 'ZZZ"),
    (
        "prompt for an unknown stage",
        DOMAIN_HEAD + "prompts:\n  nope: '{{ text }}'\n",
        "unknown stage",
    ),
    (
        "relation with unknown argument types",
        DOMAIN_HEAD + "relation_types:\n  - label: r\n    definition: d\n    head_types: [ghost]\n",
        "unknown entity types",
    ),
    (
        "label of 10,000 characters",
        "name: x\nentity_types:\n  - label: " + "L" * 10_000 + "\n    definition: d\n",
        "at most 100",
    ),
    ("domain file not UTF-8", b"name: caf\xe9\n", "UTF-8"),
    ("domain file with a BOM", b"\xef\xbb\xbf" + DOMAIN_HEAD.encode(), ""),
    (
        "20,000 problems in one file",
        "name: x\nentity_types:\n" + "  - {label: p}\n" * 20_000,
        "more problem",
    ),
]


@cases("domains", "kind, content, message", YAML)
def test_hostile_domain_file(
    run: Callable[..., Result], tmp_path: Path, kind: str, content: str | bytes, message: str
) -> None:
    path = tmp_path / "domain.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    started = time.monotonic()
    result = run("domains", path)
    assert time.monotonic() - started < 30, "loading stays bounded"
    assert not Path("/tmp/samalign-pwned").exists(), "a YAML tag ran code"
    if kind == "domain file with a BOM":
        assert result.status == 0 and "person" in result.out
        return
    assert result.status == 2, result.out
    assert message in result.err, result.err
    assert len(result.err) < 4000


@each(
    "target", "domains", "domain path is a folder", "domain path is a device", "domain path missing"
)
def test_domain_path_that_is_not_a_file(
    run: Callable[..., Result], tmp_path: Path, target: str
) -> None:
    path = {"folder": tmp_path, "device": Path("/dev/zero"), "missing": tmp_path / "x.yaml"}[
        target.split()[-1]
    ]
    result = run("domains", path, status=2)
    assert str(path) in result.err


@kind("domains", "domain file over the size limit")
def test_huge_domain_file(
    run: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(DOMAIN_HEAD + "description: " + "x" * 20_000_000 + "\n", encoding="utf-8")
    assert "over the limit" in run("domains", path, status=2).err


@kind("domains", "unknown domain name of 100,000 characters")
def test_huge_unknown_name(run: Callable[..., Result]) -> None:
    result = run("domains", "n" * 100_000, status=2)
    assert "unknown domain" in result.err and len(result.err) < 2000


@kind("domains", "hostile domain through samalign extract")
def test_hostile_domain_in_extract(extract: Callable[..., Result], tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(), encoding="utf-8")
    source = tmp_path / "in.txt"
    source.write_text("Alice\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert "expands to more than" in extract(source, "--domain", path, "--out", out, status=2).err
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# templates (domain prompt overrides), all through `samalign domains FILE`
# ---------------------------------------------------------------------------------------------

LOOPS3 = (
    "{% for a in range(999) %}{% for b in range(999) %}{% for c in range(999) %}"
    "{% endfor %}{% endfor %}{% endfor %}{{ text }}"
)
DOUBLING = (
    "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}{{ text }}"
)
SQUARING = (
    "{% set ns = namespace(n=7) %}{% for i in range(64) %}{% set ns.n = ns.n * ns.n %}"
    "{% endfor %}{{ text }}"
)
TEMPLATES: list[tuple[str, str, str]] = [
    ("{% include %}", "{% include 'secrets.j2' %}{{ text }}", "include"),
    ("{% import %}", "{% import 'x.j2' as x %}{{ text }}", "import"),
    ("{% from import %}", "{% from 'x.j2' import y %}{{ text }}", "import"),
    ("{% extends %}", "{% extends 'base.j2' %}{{ text }}", "extends"),
    ("range(10**9)", "{% for i in range(10**9) %}.{% endfor %}{{ text }}", "over the limit"),
    (
        "recursive macro",
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}{{ text }}",
        "macro",
    ),
    (
        "recursive loop",
        "{% for x in labels recursive %}{{ loop(labels) }}{% endfor %}{{ text }}",
        "recursive",
    ),
    ("nested loops", LOOPS3, "loop iterations"),
    ("'a' * 3e8", "{{ 'a' * 3e8 }}{{ text }}", "TypeError"),
    ("'a' * 300,000,000", "{{ 'a' * 300000000 }}{{ text }}", "repetition"),
    ("10 ** 10 ** 10", "{{ 10 ** (10 ** 10) }}{{ text }}", "power"),
    ("str.ljust(10**9)", "{{ 'a'.ljust(1000000000) }}{{ text }}", "over the limit"),
    ("center filter of 10**9", "{{ 'a' | center(1000000000) }}{{ text }}", "over the limit"),
    ("%-format width of 10**9", "{{ '%999999999s' % 'a' }}{{ text }}", "format string"),
    ("str.format width of 10**9", "{{ '{:>999999999}'.format('a') }}{{ text }}", "format string"),
    ("doubling string in a loop", DOUBLING, "concatenation"),
    ("squaring integer in a loop", SQUARING, "bits"),
    (
        "replace() amplification",
        "{% set a = 'a' * 900000 %}{{ a.replace('a', a) }}{{ text }}",
        "replace",
    ),
    (
        "join of a huge list",
        "{% set a = 'a' * 900000 %}{{ [a, a, a, a] | join }}{{ text }}",
        "larger than",
    ),
    (
        "output over the prompt limit",
        "{% set a = 'a' * 900000 %}{% for i in range(3) %}{{ a }}{% endfor %}{{ text }}",
        "longer than",
    ),
    ("attribute escape", "{{ ''.__class__.__mro__[1].__subclasses__() }}{{ text }}", "unsafe"),
    ("reserved sandbox name", "{{ __samalign_iterate }}{{ text }}", "reserved"),
    ("capture block", "{% set x %}{{ text }}{% endset %}{{ x }}", "capture"),
    ("filter block", "{% filter upper %}{{ text }}{% endfilter %}", "filter block"),
    ("division by zero", "{{ 1 / 0 }}{{ text }}", "ZeroDivisionError"),
    ("unknown variable", "{{ secret_key }}{{ text }}", "undefined"),
    ("template syntax error", "{% for x in %}{{ text }}", "valid template"),
    ("template without {{ text }}", "{{ instruction }}", "never uses"),
    (
        "template nested 10,000 parentheses",
        "{{ " + "(" * 10_000 + "1" + ")" * 10_000 + " }}{{ text }}",
        "deep",
    ),
    ("template over the size limit", "{{ text }}" + "x" * 70_000, "over the limit"),
]


def domain_with_prompt(path: Path, template: str) -> Path:
    import yaml

    path.write_text(
        yaml.safe_dump(
            {
                "name": "templated",
                "entity_types": [{"label": "person", "definition": "a person"}],
                "prompts": {"explorer": template},
            },
            width=10**9,
        ),
        encoding="utf-8",
    )
    return path


@cases("templates", "template, message", TEMPLATES)
def test_hostile_template(
    run: Callable[..., Result], tmp_path: Path, template: str, message: str
) -> None:
    path = domain_with_prompt(tmp_path / "domain.yaml", template)
    started = time.monotonic()
    result = run("domains", path, status=2)
    assert time.monotonic() - started < 20, "rendering stays bounded"
    assert "prompts.explorer" in result.err
    assert message in result.err, result.err
    err = api_error(lambda: load_domain(path), ConfigError)
    assert message in str(err)


@kind("templates", "a fine template is still accepted")
def test_good_template_still_renders(run: Callable[..., Result], tmp_path: Path) -> None:
    template = (
        "{{ instruction }}\n{% for l in labels %}- {{ l | upper }}{% if not loop.last %},"
        "{% endif %}{% endfor %}\nschema: {{ labels | json }}\n{{ '%-5s|' % 'x' }} {{ text }}"
    )
    path = domain_with_prompt(tmp_path / "domain.yaml", template)
    assert run("domains", path, status=0).out.startswith("templated")
    domain = load_domain(path)
    from samalign.prompts.specs import default_specs

    spec = default_specs()["explorer"].with_template(domain.prompts["explorer"])
    rendered = spec.render({"labels": ["person", "place"], "text": "Alice in Paris"})
    assert "- PERSON," in rendered and rendered.endswith("Alice in Paris")
