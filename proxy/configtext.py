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
- nesting: at most MAX_DEPTH levels, checked on the parser's events before
  any node is built (building recurses, so it must never see a deep input);
- aliases: the document is measured *as expanded* (every alias counts as a
  copy of what it names) and refused beyond MAX_NODES values; an alias inside
  the node it names is refused. Sizes are summed per anchor, so a bomb is
  refused after one walk of its compact text, never expanded;
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

# A real config is a few KB (a thousand backends is ~60 KB): far below these.
MAX_BYTES = 256 * 1024
MAX_DEPTH = 32
MAX_NODES = 50_000
MAX_SCALAR = 64 * 1024
MAX_INT_DIGITS = 30
EXCERPT = 40


class TextError(ValueError):
    """The text cannot become config data; the message says why and what to change.
    ``path`` names the setting when the problem is in one (``listeners.web.bind``)."""

    def __init__(self, detail: str, path: str = ""):
        super().__init__(f"{path}: {detail}" if path else detail)
        self.detail = detail
        self.path = path


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

# libyaml (C) when PyYAML was built with it: ~10x faster than the pure-Python
# reader, which matters because PUT /config is read on the proxy's own loop.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _BoundedLoader(_Loader):
    """A safe loader whose integers and floats are bounded (see `_prescan` for the rest)."""

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


def _line(event) -> int:
    mark = getattr(event, "start_mark", None)
    return mark.line + 1 if mark is not None else 0


def _prescan(text: str) -> None:
    """Walk the parser's events once, before anything is built: depth, scalar
    length and the size of the document with every alias expanded.

    Sizes are counted, never expanded: each open collection sums its children,
    an alias adds the recorded size of the node its anchor names, so a
    billion-laughs bomb is measured in a walk of its compact text. An alias to
    a collection that is still open would make the document contain itself.
    """
    parse = yaml.parse
    kwargs = {"Loader": _Loader}
    stack: list[list] = []  # [anchor, size] per open collection
    sizes: dict[str, int] = {}
    total = 0
    aliases = 0

    def add(size: int) -> None:
        nonlocal total
        if stack:
            stack[-1][1] += size
        else:
            total += size

    for event in parse(text, **kwargs):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            if len(stack) >= MAX_DEPTH:
                raise TextError(f"nested more than {MAX_DEPTH} levels deep (line "
                                f"{_line(event)}); a config is a few levels deep")
            stack.append([event.anchor, 1])
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            anchor, size = stack.pop()
            size = min(size, MAX_NODES + 1)
            if anchor is not None:
                sizes[anchor] = size
            add(size)
        elif isinstance(event, yaml.ScalarEvent):
            if len(event.value) > MAX_SCALAR:
                raise TextError(f"a value of {len(event.value)} characters (line "
                                f"{_line(event)}); the limit is {MAX_SCALAR}")
            if event.anchor is not None:
                sizes[event.anchor] = 1
            add(1)
        elif isinstance(event, yaml.AliasEvent):
            if any(anchor == event.anchor for anchor, _ in stack):
                raise TextError(f"the alias *{excerpt(event.anchor)} (line {_line(event)}) "
                                "is inside the node it names; a config cannot contain itself")
            if event.anchor not in sizes:
                raise TextError(f"the alias *{excerpt(event.anchor)} (line {_line(event)}) "
                                "names no anchor defined before it")
            aliases += 1
            add(sizes[event.anchor])
        elif isinstance(event, yaml.DocumentStartEvent) and total:
            raise TextError("more than one YAML document (a second '---'); "
                            "send one config")
        if total > MAX_NODES or (stack and stack[-1][1] > MAX_NODES):
            if aliases:
                raise TextError(f"more than {MAX_NODES} values once its aliases (*name) "
                                "are expanded (an alias bomb?); write the values out, or "
                                "use fewer aliases")
            raise TextError(f"more than {MAX_NODES} values; a real config has far fewer "
                            "(split it, or remove what is unused)")


def parse_yaml(text: str) -> object:
    """YAML text -> plain data within the bounds above, or TextError."""
    try:
        _prescan(text)
        return yaml.load(text, Loader=_BoundedLoader)
    except yaml.YAMLError as exc:
        raise TextError(f"not valid YAML: {_yaml_problem(exc)}") from None


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
    """Depth, count, string-length and integer-size bounds on already parsed data
    (iterative: no recursion however deep). The message names where it is."""
    count = 0
    stack: list[tuple[object, int, str]] = [(data, 1, "")]
    while stack:
        value, depth, path = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise TextError(f"more than {MAX_NODES} values; a real config has far fewer")
        if depth > MAX_DEPTH:
            raise TextError(f"nested more than {MAX_DEPTH} levels deep; a config is "
                            "a few levels deep", path)
        if isinstance(value, dict):
            for k, v in value.items():
                name = str(k) if len(str(k)) <= 40 else str(k)[:40] + "..."
                stack.append((k, depth + 1, path))
                stack.append((v, depth + 1, f"{path}.{name}" if path else name))
        elif isinstance(value, (list, tuple)):
            stack.extend((v, depth + 1, f"{path}[{i}]") for i, v in enumerate(value))
        elif isinstance(value, str) and len(value) > MAX_SCALAR:
            raise TextError(f"a value of {len(value)} characters; the limit is "
                            f"{MAX_SCALAR}", path)
        elif isinstance(value, int) and not isinstance(value, bool):
            if value.bit_length() > MAX_INT_DIGITS * 4:
                raise TextError(f"an integer of more than {MAX_INT_DIGITS} digits", path)


def parse_text(text: str, as_json: bool = False) -> object:
    return parse_json(text) if as_json else parse_yaml(text)


def parse_bytes(raw: bytes, as_json: bool = False, what: str = "the config") -> object:
    """Bytes of a file or request body -> plain data, or TextError."""
    return parse_text(decode(raw, what), as_json=as_json)


# -- writing -------------------------------------------------------------------------------

# PyYAML, told to keep Unicode readable, writes NEL (U+0085) raw inside a single-quoted
# scalar, and its own reader then folds it into a space: a sticky secret with one would not
# survive GET /config -> PUT /config. Double quotes escape it ("\N"), so such strings get them.
_FOLDED_BREAKS = ("\x85", "\u2028", "\u2029")


class _ConfigDumper(yaml.SafeDumper):
    pass


def _represent_str(dumper: yaml.SafeDumper, value: str):
    style = '"' if any(ch in value for ch in _FOLDED_BREAKS) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ConfigDumper.add_representer(str, _represent_str)


def dump_yaml(data: object) -> str:
    """Config data -> YAML text that parse_yaml reads back to equal data (GET /config)."""
    return yaml.dump(data, Dumper=_ConfigDumper, sort_keys=False, allow_unicode=True)
