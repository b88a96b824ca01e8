"""Reading config text that nobody vouches for: bounded YAML and JSON.

Theory of operation. A config reaches the proxy as bytes (a file for
`--check`/`--config`/SIGHUP, a request body for PUT /config) and may be
anything: another encoding, a billion-laughs alias bomb, a thousand nested
brackets, a number with ten thousand digits. Each of those either crashes a
stock parser (RecursionError, ValueError) or makes it, or the validation
after it, take unbounded time and memory. So every dimension is bounded
*before* the expensive step, and every refusal is a `TextError` whose message
names what is wrong and what to change:

- size: at most MAX_BYTES bytes, checked before decoding;
- encoding: UTF-8 only (a UTF-8 byte-order mark is dropped); a UTF-16/32
  byte-order mark, or bytes that are not UTF-8, are refused with the position;
- nesting: at most MAX_DEPTH levels, checked while composing (PyYAML's
  composer is recursive, so it stops before Python's own recursion limit);
- aliases: the document is measured *as expanded* (every alias counts as a
  copy of what it names) and refused beyond MAX_NODES nodes; an alias that
  refers to itself is refused. The measure is memoised per node, so a bomb
  is refused after a walk of its compact form, never expanded;
- scalars: at most MAX_SCALAR characters; integers at most MAX_INT_DIGITS
  digits; .inf and .nan are refused (no setting takes them, and an infinite
  value could not be written back by GET /config).

JSON goes through its own parser (json.loads) with the same limits, so a body
sent with Content-Type: application/json is held to the same rules.

Error text quotes values through `excerpt`, which cuts them to a few dozen
characters: an error message never grows with the input.
"""
from __future__ import annotations

import codecs
import json
import math

import yaml
from yaml.composer import ComposerError
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

# A real config is a few KB (a thousand backends is ~60 KB): far below these.
MAX_BYTES = 512 * 1024
MAX_DEPTH = 32
MAX_NODES = 50_000
MAX_SCALAR = 64 * 1024
MAX_INT_DIGITS = 30
EXCERPT = 40


class TextError(ValueError):
    """The text cannot become config data; the message says why and what to change."""


def excerpt(value: object, limit: int = EXCERPT) -> str:
    """repr() of a value cut to about `limit` characters (error messages stay small)."""
    if isinstance(value, (dict, list, tuple)):
        kind = type(value).__name__
        return f"a {kind} of {len(value)} item{'s' if len(value) != 1 else ''}"
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


_BOMS = [
    (codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"),
]


def decode(raw: bytes, what: str = "the config") -> str:
    """UTF-8 bytes -> text, or TextError naming the encoding problem and where it is."""
    if len(raw) > MAX_BYTES:
        raise TextError(f"{what} is {len(raw)} bytes; the limit is {MAX_BYTES} bytes "
                        "(a real config is a few KB: split it or remove what is unused)")
    for bom, name in _BOMS:
        if raw.startswith(bom):
            raise TextError(f"{what} is {name} (it starts with a {name} byte-order mark); "
                            "save it as UTF-8")
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        hint = (" (NUL bytes: it looks UTF-16 without a byte-order mark)"
                if b"\x00" in raw[:64] else "")
        raise TextError(f"{what} is not UTF-8: byte {exc.start} (line {line}) is "
                        f"{raw[exc.start:exc.start + 1]!r}{hint}; save it as UTF-8") from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise TextError(f"{what} contains a NUL character (line {line}); "
                        "it looks UTF-16: save it as UTF-8")
    return text


# ---------------------------------------------------------------- YAML

class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that stops at MAX_DEPTH while composing and bounds scalars."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise TextError(f"nested more than {MAX_DEPTH} levels deep (line "
                                f"{mark.line + 1}); a config is a few levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_yaml_int(self, node):
        digits = sum(ch.isdigit() for ch in node.value)
        if digits > MAX_INT_DIGITS:
            raise TextError(f"an integer of {digits} digits (line {node.start_mark.line + 1}); "
                            f"no setting takes more than {MAX_INT_DIGITS} digits")
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node):
        value = super().construct_yaml_float(node)
        if not math.isfinite(value):
            raise TextError(f"{excerpt(node.value)} (line {node.start_mark.line + 1}) is not "
                            "a finite number; write a number within the setting's range")
        return value


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)
_BoundedLoader.add_constructor("tag:yaml.org,2002:float", _BoundedLoader.construct_yaml_float)


def _expanded_size(root) -> int:
    """Nodes of the document with every alias expanded, without expanding it.

    Aliases make the composed graph a DAG sharing nodes; the expanded size of
    a node is 1 + the sizes of its children, memoised by node identity. An
    alias to a node that is still being measured is a cycle.
    """
    sizes: dict[int, int] = {}
    open_: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_.discard(key)
            size = 1
            for child in _children(node):
                size += sizes[id(child)]
            sizes[key] = min(size, MAX_NODES + 1)
            continue
        if key in sizes:
            continue
        if key in open_:
            raise TextError(f"an alias (line {node.start_mark.line + 1}) refers to a node that "
                            "contains it; a config cannot refer to itself")
        if isinstance(node, ScalarNode) and len(node.value) > MAX_SCALAR:
            raise TextError(f"a value of {len(node.value)} characters (line "
                            f"{node.start_mark.line + 1}); the limit is {MAX_SCALAR}")
        open_.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_:
                raise TextError(f"an alias (line {child.start_mark.line + 1}) refers to a "
                                "node that contains it; a config cannot refer to itself")
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def _children(node):
    if isinstance(node, SequenceNode):
        return node.value
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return ()


def parse_yaml(text: str) -> object:
    """YAML text -> plain data within the bounds above, or TextError."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node)
        if size > MAX_NODES:
            raise TextError(f"more than {MAX_NODES} values once its aliases (*name) are "
                            "expanded; an alias bomb? Write the values out, or use fewer "
                            "aliases")
        return loader.construct_document(node)
    except ComposerError as exc:
        raise TextError(f"not valid YAML: {_yaml_problem(exc)}") from None
    except yaml.YAMLError as exc:
        raise TextError(f"not valid YAML: {_yaml_problem(exc)}") from None
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's message, without the echo of the source line (which can be huge)."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    context = getattr(exc, "context", None)
    if problem is None:
        return excerpt(str(exc), 200)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    prefix = f"{context}: " if context else ""
    return f"{prefix}{problem}{where}"[:300]


# ---------------------------------------------------------------- JSON

def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise TextError(f"an integer of {len(text.lstrip('-'))} digits; no setting takes "
                        f"more than {MAX_INT_DIGITS} digits")
    return int(text)


def _json_float(text: str) -> float:
    if len(text) > 64:
        raise TextError(f"a number of {len(text)} characters; write it shorter")
    value = float(text)
    if not math.isfinite(value):
        raise TextError(f"{excerpt(text)} is not a finite number")
    return value


def _json_constant(name: str):
    raise TextError(f"{name} is not JSON a config can hold; write a finite number")


def parse_json(text: str) -> object:
    """JSON text -> plain data within the same bounds as YAML, or TextError."""
    try:
        data = json.loads(text, parse_int=_json_int, parse_float=_json_float,
                          parse_constant=_json_constant)
    except RecursionError:
        raise TextError(f"nested more than {MAX_DEPTH} levels deep; a config is a few "
                        "levels deep") from None
    except json.JSONDecodeError as exc:
        raise TextError(f"not valid JSON: {exc.msg} (line {exc.lineno}, column "
                        f"{exc.colno})") from None
    check_shape(data)
    return data


def check_shape(data: object) -> None:
    """Depth, count and string-length bounds on already parsed data (iterative)."""
    count = 0
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise TextError(f"more than {MAX_NODES} values; a real config has far fewer")
        if depth > MAX_DEPTH:
            raise TextError(f"nested more than {MAX_DEPTH} levels deep; a config is a few "
                            "levels deep")
        if isinstance(value, dict):
            for k, v in value.items():
                stack.append((k, depth + 1))
                stack.append((v, depth + 1))
        elif isinstance(value, (list, tuple)):
            stack.extend((v, depth + 1) for v in value)
        elif isinstance(value, str) and len(value) > MAX_SCALAR:
            raise TextError(f"a value of {len(value)} characters; the limit is {MAX_SCALAR}")
        elif isinstance(value, int) and not isinstance(value, bool):
            if value.bit_length() > MAX_INT_DIGITS * 4:
                raise TextError(f"an integer of more than {MAX_INT_DIGITS} digits")
        elif isinstance(value, float) and not math.isfinite(value):
            raise TextError(f"{value!r} is not a finite number")


def parse_text(text: str, as_json: bool = False) -> object:
    return parse_json(text) if as_json else parse_yaml(text)


def parse_bytes(raw: bytes, as_json: bool = False, what: str = "the config") -> object:
    """Bytes of a file or request body -> plain data, or TextError."""
    return parse_text(decode(raw, what), as_json=as_json)
