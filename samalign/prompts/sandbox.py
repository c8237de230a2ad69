"""The sandbox stage prompt templates render in: no loader, bounded time, size and work.

Domain files may carry Jinja prompt overrides, and a domain file is untrusted input. Jinja's
:class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` already blocks attribute escapes
(``__class__``, ``mro`` …) and changes to lists and dicts; this module adds the limits that make
rendering one prompt bounded:

* **No loader and no recursion.** ``{% include %}``, ``{% import %}``, ``{% from %}``,
  ``{% extends %}``, ``{% macro %}``, ``{% call %}``, recursive loops, and block captures
  (``{% set x %}…{% endset %}``, ``{% filter %}``) are refused when the template is compiled, with
  a :class:`~samalign.errors.ConfigError` naming the construct.
* **Bounded work.** Every ``{% for %}`` loop counts its iterations against a per-render budget
  (:data:`MAX_ITERATIONS`) and a per-render deadline (:data:`RENDER_SECONDS`), so nested loops
  cannot run for long.
* **Bounded values and output.** ``*``, ``**``, ``+`` and ``%``, every call and every filter check
  their operands before computing (no string, list or number can grow past
  :data:`MAX_VALUE_CHARS` characters or :data:`MAX_INT_BITS` bits; no integer argument above
  :data:`MAX_INT_ARG`, so ``'a'.ljust(10**9)``, ``range(10**9)`` and ``'%999999999s'`` are refused);
  every ``{{ … }}``, ``{% set %}`` and ``~`` result is checked; the rendered prompt stops at
  :data:`MAX_RENDER_CHARS`.
* **Typed errors.** Whatever goes wrong while compiling or rendering (a syntax error, an unknown
  variable, a limit, ``1/0``) is a :class:`~samalign.errors.ConfigError`; messages quote at
  most a short, bounded piece of the template or value.
"""

from __future__ import annotations

import contextvars
import functools
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from samalign.errors import ConfigError, shorten

MAX_TEMPLATE_CHARS = 64_000
"""Longest template source accepted."""

MAX_RENDER_CHARS = 1_000_000
"""Longest rendered prompt."""

MAX_VALUE_CHARS = 1_000_000
"""Largest string, list or other value (characters or items) a template may build."""

MAX_INT_ARG = 1_000_000
"""Largest integer argument a template may pass to a call or filter."""

MAX_INT_BITS = 100_000
"""Largest integer (in bits) a template may compute."""

MAX_ITERATIONS = 100_000
"""Loop iterations one render may run, over all its loops."""

RENDER_SECONDS = 2.0
"""Wall-clock seconds one render may take."""

FORBIDDEN: dict[type[nodes.Node], str] = {
    nodes.Include: "{% include %} (templates cannot read other files)",
    nodes.Import: "{% import %} (templates cannot read other files)",
    nodes.FromImport: "{% from … import %} (templates cannot read other files)",
    nodes.Extends: "{% extends %} (templates cannot read other files)",
    nodes.Macro: "{% macro %} (no macros: they allow unbounded recursion)",
    nodes.CallBlock: "{% call %} (no macros: they allow unbounded recursion)",
    nodes.AssignBlock: "{% set NAME %}…{% endset %} (capture blocks are not supported)",
    nodes.FilterBlock: "{% filter %}…{% endfilter %} (filter blocks are not supported)",
}
"""Template constructs refused at compile time, with why."""

_ITERATE = "__samalign_iterate"
_VALUE = "__samalign_value"
_CONCAT = "__samalign_concat"
_JINJA_KWARGS = ("_loop_vars", "_block_vars")
_FORMAT_NUMBER = re.compile(r"\d{7,}")  # a width or precision of a million or more


def _short(text: str, limit: int = 80) -> str:
    return repr(shorten(text, limit))


@dataclass
class _Budget:
    """The work one render may still do."""

    deadline: float
    iterations: int = 0
    output: int = 0

    def tick(self, count: int = 1) -> None:
        self.iterations += count
        if self.iterations > MAX_ITERATIONS:
            raise SecurityError(
                f"the template ran more than {MAX_ITERATIONS} loop iterations; loop over the "
                "variables it is given (labels, relations …), not over large ranges"
            )
        if self.iterations % 256 == 0:
            self.check_time()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise SecurityError(
                f"the template took more than {RENDER_SECONDS} s to render; simplify its loops"
            )


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "samalign_template_budget", default=None
)


def _current() -> _Budget:
    """The budget of the render in progress (outside one: a fresh budget for this check)."""
    return _budget.get() or _Budget(deadline=time.monotonic() + RENDER_SECONDS)


def _size(value: Any, limit: int = MAX_VALUE_CHARS) -> int:
    """About how many characters ``value`` stands for (stops counting past ``limit``)."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, bool) or value is None:
        return 1
    if isinstance(value, int):
        return max(1, value.bit_length() // 3)
    if isinstance(value, Mapping):
        items: Iterable[Any] = (x for pair in value.items() for x in pair)
    elif isinstance(value, list | tuple | set | frozenset):
        items = value
    else:
        return 1
    total = 0
    for item in items:
        total += _size(item, limit - total) + 1
        if total > limit:
            break
    return total


def _check_value(value: Any, what: str = "a value") -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise SecurityError(f"{what} is an integer of more than {MAX_INT_BITS} bits")
    if _size(value) > MAX_VALUE_CHARS:
        raise SecurityError(
            f"{what} is larger than {MAX_VALUE_CHARS} characters or items; templates build "
            "prompts, not large data"
        )
    return value


def _check_arguments(args: Iterable[Any], kwargs: Mapping[str, Any]) -> None:
    _current().check_time()
    total = 0
    for arg in (*args, *kwargs.values()):
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > MAX_INT_ARG:
            raise SecurityError(
                f"an integer argument ({arg if arg.bit_length() < 64 else 'huge'}) is over "
                f"the limit of {MAX_INT_ARG}"
            )
        if isinstance(arg, float) and math.isfinite(arg) and abs(arg) > MAX_INT_ARG:
            raise SecurityError(f"a number argument ({arg:g}) is over the limit of {MAX_INT_ARG}")
        total += _size(arg)
        if total > MAX_VALUE_CHARS:
            raise SecurityError(
                f"the arguments of a call are larger than {MAX_VALUE_CHARS} characters or items"
            )


def _check_format(spec: str) -> None:
    if _FORMAT_NUMBER.search(spec) or "%*" in spec:
        raise SecurityError(
            f"format string {_short(spec)} asks for a width or precision over the limit"
        )


def _iterate(iterable: Any) -> Iterator[Any]:
    """A ``{% for %}`` loop's iterable, counted against the render's budget."""
    budget = _current()
    for item in iterable:
        budget.tick()
        yield item


def _concat(*parts: Any) -> str:
    """``a ~ b ~ …`` with the result's size checked before it is built."""
    texts = [str(p) for p in parts]
    if sum(len(t) for t in texts) > MAX_VALUE_CHARS:
        raise SecurityError(f"a ~ concatenation is larger than {MAX_VALUE_CHARS} characters")
    return "".join(texts)


def _pre_check_amplifier(func: Any, args: tuple[Any, ...]) -> None:
    """Refuse the str methods whose result can be much larger than their inputs."""
    func = getattr(func, "__wrapped__", func)  # the sandbox wraps str.format
    owner = getattr(func, "__self__", None)
    name = getattr(func, "__name__", "")
    if not isinstance(owner, str):
        return
    if name in ("format", "format_map"):
        _check_format(owner)
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str):
        old, new = args[0], str(args[1])
        hits = owner.count(old) if old else len(owner) + 1
        if len(owner) + hits * len(new) > MAX_VALUE_CHARS:
            raise SecurityError(f"a replace() result would be over {MAX_VALUE_CHARS} characters")
    elif (
        name == "join"
        and args
        and isinstance(args[0], list | tuple)
        and len(owner) * len(args[0]) > MAX_VALUE_CHARS
    ):
        raise SecurityError(f"a join() result would be over {MAX_VALUE_CHARS} characters")


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that checks its arguments and result (pass-context flags kept)."""

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        plain = [a for a in args if not isinstance(a, Context)]
        _check_arguments(plain, kwargs)
        if name in ("format",) and plain and isinstance(plain[0], str):
            _check_format(plain[0])
        if name == "join" and len(plain) >= 2 and isinstance(plain[1], str):
            items = plain[0]
            if isinstance(items, list | tuple) and len(plain[1]) * len(items) > MAX_VALUE_CHARS:
                raise SecurityError(f"a join result would be over {MAX_VALUE_CHARS} characters")
        if name == "replace" and len(plain) >= 3 and isinstance(plain[0], str):
            text, old, new = plain[0], str(plain[1]), str(plain[2])
            hits = text.count(old) if old else len(text) + 1
            if len(text) + hits * len(new) > MAX_VALUE_CHARS:
                raise SecurityError(f"a replace result would be over {MAX_VALUE_CHARS} characters")
        return _check_value(func(*args, **kwargs), f"the result of filter {name!r}")

    return guarded


class PromptEnvironment(ImmutableSandboxedEnvironment):
    """The Jinja environment of stage prompts (see the module docs): strict, sandboxed, bounded.

    Args:
        filters: Extra filters (each is guarded like the built-in ones).
    """

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, filters: Mapping[str, Callable[..., Any]] | None = None) -> None:
        super().__init__(undefined=StrictUndefined, keep_trailing_newline=False, autoescape=False)
        self.loader = None
        merged = {**self.filters, **(filters or {})}
        self.filters = {name: _guard_filter(name, f) for name, f in merged.items()}
        self.globals[_ITERATE] = _iterate
        self.globals[_VALUE] = _check_value
        self.globals[_CONCAT] = _concat

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """Check an arithmetic operation's size before computing it."""
        _current().check_time()
        ints = isinstance(left, int) and isinstance(right, int)
        sized = (str, list, tuple)
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, sized)
                    and isinstance(times, int)
                    and len(seq) * max(times, 0) > MAX_VALUE_CHARS
                ):
                    raise SecurityError(
                        f"a * repetition would be over {MAX_VALUE_CHARS} characters or items"
                    )
            if ints and left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise SecurityError(f"a * product would be over {MAX_INT_BITS} bits")
        elif operator == "**":
            if ints and abs(left) > 1 and right > 0 and right * left.bit_length() > MAX_INT_BITS:
                raise SecurityError(f"a ** power would be over {MAX_INT_BITS} bits")
        elif operator == "%" and isinstance(left, str):
            _check_format(left)
        elif (
            operator == "+"
            and isinstance(left, sized)
            and isinstance(right, sized)
            and len(left) + len(right) > MAX_VALUE_CHARS
        ):
            raise SecurityError(f"a + result would be over {MAX_VALUE_CHARS} characters")
        return _check_value(super().call_binop(context, operator, left, right))

    def call(
        __self,  # Jinja's signature (the double prefixes avoid keyword clashes)
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """Call an object from a template, checking arguments and result."""
        if __obj in (_iterate, _check_value, _concat):
            return __obj(*args)
        # Jinja passes the loop's and block's variables along (for pass_context functions)
        _check_arguments(args, {k: v for k, v in kwargs.items() if k not in _JINJA_KWARGS})
        _pre_check_amplifier(__obj, args)
        result = super().call(__context, __obj, *args, **kwargs)
        return _check_value(result, f"the result of calling {getattr(__obj, '__name__', 'it')}")


def _refuse(template: nodes.Template) -> None:
    for kind, why in FORBIDDEN.items():
        found = next(iter(template.find_all(kind)), None)
        if found is not None:
            raise ConfigError(f"line {found.lineno}: {why}")
    for loop in template.find_all(nodes.For):
        if loop.recursive:
            raise ConfigError(
                f"line {loop.lineno}: recursive loops are not supported (unbounded recursion)"
            )
    for name in template.find_all(nodes.Name):
        if name.name.startswith("__"):
            raise ConfigError(f"line {name.lineno}: names starting with '__' are reserved")


def _call(name: str, args: list[Any], lineno: int) -> nodes.Call:
    return nodes.Call(nodes.Name(name, "load", lineno=lineno), args, [], None, None, lineno=lineno)


class _Bounder(NodeTransformer):
    """Wrap loop iterables, assigned and printed values, and ``~`` in the budget's checks."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _call(_ITERATE, [node.iter], node.lineno)
        return node

    def visit_Assign(self, node: nodes.Assign) -> nodes.Node:
        self.generic_visit(node)
        node.node = _call(_VALUE, [node.node], node.lineno)
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [
            n if isinstance(n, nodes.TemplateData) else _call(_VALUE, [n], node.lineno)
            for n in node.nodes
        ]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _call(_CONCAT, list(node.nodes), node.lineno)


@dataclass(frozen=True)
class PromptTemplate:
    """A compiled prompt template; :meth:`render` is bounded (see the module docs)."""

    source: str
    compiled: Template

    def render(self, variables: Mapping[str, Any]) -> str:
        """Render with ``variables``.

        Raises:
            ConfigError: The template failed (unknown variable, error in an expression) or ran
                past a limit (iterations, time, value or output size).
        """
        budget = _Budget(deadline=time.monotonic() + RENDER_SECONDS)
        token = _budget.set(budget)
        pieces: list[str] = []
        try:
            for piece in self.compiled.generate(dict(variables)):
                budget.output += len(piece)
                if budget.output > MAX_RENDER_CHARS:
                    raise SecurityError(
                        f"the rendered prompt is longer than {MAX_RENDER_CHARS} characters"
                    )
                pieces.append(piece)
        except TemplateError as err:
            raise ConfigError(str(err) or type(err).__name__) from None
        except RecursionError:
            raise ConfigError("the template nests too deeply to render") from None
        except MemoryError:
            raise ConfigError("the template ran out of memory while rendering") from None
        except Exception as err:  # an expression failed: 1/0, 'a' * 3e8, int('x') …
            raise ConfigError(f"{type(err).__name__}: {_short(str(err), 200)}") from None
        finally:
            _budget.reset(token)
        return "".join(pieces)


def compile_template(environment: PromptEnvironment, source: str) -> PromptTemplate:
    """Compile a prompt template in the sandbox.

    Raises:
        ConfigError: The source is too long, not valid Jinja, or uses a refused construct.
    """
    if not isinstance(source, str):
        raise ConfigError(f"a template must be text, got {type(source).__name__}")
    if len(source) > MAX_TEMPLATE_CHARS:
        raise ConfigError(
            f"the template has {len(source)} characters, over the limit of {MAX_TEMPLATE_CHARS}"
        )
    token = _budget.set(_Budget(deadline=time.monotonic() + RENDER_SECONDS))
    try:
        tree = environment.parse(source)
        _refuse(tree)
        compiled = environment.from_string(_Bounder().visit(tree))
    except ConfigError:
        raise
    except TemplateError as err:
        raise ConfigError(f"not a valid template: {err}") from None
    except RecursionError:
        raise ConfigError("the template nests too deeply to compile") from None
    except Exception as err:  # e.g. constant folding that failed
        raise ConfigError(f"not a valid template: {type(err).__name__}: {err}") from None
    finally:
        _budget.reset(token)
    return PromptTemplate(source=source, compiled=compiled)


__all__ = [
    "FORBIDDEN",
    "MAX_INT_ARG",
    "MAX_INT_BITS",
    "MAX_ITERATIONS",
    "MAX_RENDER_CHARS",
    "MAX_TEMPLATE_CHARS",
    "MAX_VALUE_CHARS",
    "RENDER_SECONDS",
    "PromptEnvironment",
    "PromptTemplate",
    "compile_template",
]
