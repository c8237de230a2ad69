"""Reading YAML that may come from anyone (domain files, training configs, label maps), bounded.

``yaml.safe_load`` builds no Python objects beyond plain data, but it still trusts the file's
size and shape: a few hundred bytes of nested aliases (a "billion laughs" file) expand into a
structure with billions of items once anything walks it, and deep nesting exhausts the parser's
recursion. :func:`load_yaml` first reads the file's event stream — iteratively, without building
anything — and refuses, with a :class:`~samalign.errors.ConfigError`:

* text longer than ``max_chars`` (:data:`MAX_YAML_CHARS` by default);
* nesting deeper than :data:`MAX_YAML_DEPTH`;
* a document whose size, with every alias expanded, exceeds :data:`MAX_YAML_NODES` nodes.

Only then is the text loaded with PyYAML's safe loader (libyaml's when installed). Error
messages never quote more than a short piece of the input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from samalign.errors import ConfigError, shorten

MAX_YAML_CHARS = 4_000_000
"""Longest YAML text read (characters)."""

MAX_YAML_DEPTH = 64
"""Deepest nesting of lists and mappings."""

MAX_YAML_NODES = 1_000_000
"""Most nodes (scalars, lists, mappings) a document may have with its aliases expanded."""

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when it is there: ~20x


def check_yaml_shape(
    text: str,
    *,
    origin: str,
    max_depth: int = MAX_YAML_DEPTH,
    max_nodes: int = MAX_YAML_NODES,
) -> None:
    """Refuse YAML nested too deeply or expanding (through aliases) into too many nodes.

    Raises:
        ConfigError: Naming the file and the limit.
    """
    sizes: dict[str, int] = {}  # anchor -> expanded size of the node it names
    stack: list[tuple[str | None, int]] = []
    total = 0
    try:
        for event in yaml.parse(text, Loader=_LOADER):
            added = 0
            if isinstance(event, yaml.CollectionStartEvent):
                stack.append((event.anchor, 1))
                if len(stack) > max_depth:
                    raise ConfigError(
                        f"{origin}: YAML nested more than {max_depth} levels deep{_at(event)}; "
                        "a samalign file needs only a few levels"
                    )
                continue
            if isinstance(event, yaml.CollectionEndEvent):
                anchor, added = stack.pop()
                if anchor is not None:
                    sizes[anchor] = added
            elif isinstance(event, yaml.ScalarEvent):
                added = 1
                if event.anchor is not None:
                    sizes[event.anchor] = 1
            elif isinstance(event, yaml.AliasEvent):
                added = sizes.get(event.anchor or "", 1)
            else:
                continue
            if stack:
                anchor, size = stack[-1]
                stack[-1] = (anchor, size + added)
                current = size + added
            else:
                total += added
                current = total
            if current > max_nodes:
                raise ConfigError(
                    f"{origin}: YAML expands to more than {max_nodes} values (aliases such as "
                    "*name repeat what they point to); write the values out, or split the file"
                )
    except yaml.YAMLError as err:
        raise ConfigError(f"{origin}: not valid YAML: {shorten(str(err), 600)}") from None


def load_yaml(
    text: str,
    *,
    origin: str,
    max_chars: int = MAX_YAML_CHARS,
    max_depth: int = MAX_YAML_DEPTH,
    max_nodes: int = MAX_YAML_NODES,
) -> Any:
    """Parse untrusted YAML text with bounded size, nesting and alias expansion.

    Args:
        text: The YAML text.
        origin: What the text is (a path), for messages.
        max_chars: Longest text accepted.
        max_depth: Deepest nesting accepted.
        max_nodes: Most values accepted, aliases expanded.

    Returns:
        The parsed data (plain dicts, lists, strings, numbers …).

    Raises:
        ConfigError: The text is not YAML or is over a limit (the message names which).
    """
    if len(text) > max_chars:
        raise ConfigError(
            f"{origin}: the file has {len(text)} characters, over the limit of {max_chars} for "
            "a YAML file samalign reads"
        )
    check_yaml_shape(text, origin=origin, max_depth=max_depth, max_nodes=max_nodes)
    try:
        return yaml.load(text, Loader=_LOADER)  # a safe loader: CSafeLoader or SafeLoader
    except yaml.YAMLError as err:
        raise ConfigError(f"{origin}: not valid YAML: {shorten(str(err), 600)}") from None
    except RecursionError:  # pragma: no cover - check_yaml_shape bounds the nesting first
        raise ConfigError(f"{origin}: YAML nested too deeply") from None


def load_yaml_file(
    path: str | Path, *, what: str = "YAML file", max_chars: int = MAX_YAML_CHARS
) -> Any:
    """Read and parse an untrusted YAML (or JSON) file with :func:`load_yaml`'s bounds.

    The file must be a regular file (not a folder, device or pipe) of UTF-8 text; a leading
    byte-order mark is dropped.

    Args:
        path: The file.
        what: What the file is, for messages (``domain file``, ``training config`` …).
        max_chars: Longest text accepted.

    Raises:
        ConfigError: The file is missing, not a regular file, too large, not UTF-8, or not
            valid YAML within the bounds.
    """
    file = Path(path)
    origin = str(file) if len(str(file)) <= 300 else str(file)[:300] + "…"
    try:
        exists, regular = file.exists(), file.is_file()
    except (OSError, ValueError) as err:  # a name too long, a NUL byte
        raise ConfigError(f"{origin}: not a usable path ({err})") from None
    if not exists:
        raise ConfigError(f"{origin}: {what} not found")
    if not regular:
        raise ConfigError(f"{origin}: not a regular file; pass the path of a {what}")
    try:
        size = file.stat().st_size
        if size > 4 * max_chars:  # UTF-8 needs at most 4 bytes a character
            raise ConfigError(
                f"{origin}: the {what} is {size} bytes, over the limit of {max_chars} characters"
            )
        raw = file.read_bytes()
    except OSError as err:
        raise ConfigError(f"{origin}: cannot read the {what}: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{origin}: not UTF-8 text (byte {err.start}); save the {what} as UTF-8"
        ) from None
    return load_yaml(text.removeprefix("\ufeff"), origin=origin, max_chars=max_chars)


def _at(event: yaml.Event) -> str:
    mark = event.start_mark
    return f" (line {mark.line + 1})" if mark is not None else ""


__all__ = [
    "MAX_YAML_CHARS",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "check_yaml_shape",
    "load_yaml",
    "load_yaml_file",
]
