"""What may be stored as state: keys, JSON values, and their encoded form.

The supervisor checks every key and value here before a request reaches the store (so a
hand-built request cannot get past it), and the client raises the refusal in the
caller's frame. A value is
stored as its JSON text, so a stored value never aliases the caller's object.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any, Final

from ._errors import StateTypeError, StateValueError

#: The longest key accepted, in characters.
MAX_KEY_LENGTH: Final = 512
#: The default limit on one value's JSON encoding, in bytes.
DEFAULT_MAX_VALUE_BYTES: Final = 64 * 1024
#: The deepest nesting of lists and dicts within each other that a value may have
#: (``[]`` is 1 deep, ``{"a": [1]}`` 2). Far beyond any record shape, and far enough
#: below Python's recursion limit (1000) that every reader can walk a value recursively.
MAX_DEPTH: Final = 100
#: How much of a value an error message shows before cutting it with "…".
_SHOWN_CHARS: Final = 60
_WORD_CHARS: Final = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_."

_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_SCALARS: Final = (str, int, bool)


def check_key(key: object) -> str:
    """Return ``key`` if it is a valid state key.

    A str subclass (a ``StrEnum`` member) is accepted and returned as the plain str.

    Raises:
        StateTypeError: the key is not a str.
        StateValueError: the key is empty or longer than 512 characters.
    """
    if type(key) is not str:
        if not isinstance(key, str):
            msg = f"state keys must be str, got {type(key).__name__} {key!r}; convert it with str()"
            raise StateTypeError(msg, key=key)
        key = str.__str__(key)  # the plain str, whatever the subclass's __str__ says
    if not key:
        msg = "state keys must not be empty; pick a name such as 'job_id'"
        raise StateValueError(msg, key=key)
    if len(key) > MAX_KEY_LENGTH:
        msg = (
            f"state key {key[:40]!r}... is {len(key)} characters long; "
            f"keys may have at most {MAX_KEY_LENGTH}"
        )
        raise StateValueError(msg, key=key)
    if not key.isascii():
        try:
            key.encode()
        except UnicodeEncodeError as exc:  # a lone surrogate: no store can hold it
            msg = (
                f"state key {key!r} is not valid text ({exc.reason} at position "
                f"{exc.start}); decode the bytes it came from with errors='replace'"
            )
            raise StateValueError(msg, key=key) from None
    return key


def find_non_json(
    value: object,
    path: str = "value",
    *,
    none_ok: bool = False,
    tuples_ok: bool = False,
    depth: int = 0,
) -> tuple[str, object, str] | None:
    """The first part of ``value`` that JSON would not give back as it is, or ``None``.

    The walk goes no deeper than :data:`MAX_DEPTH`, so it never meets Python's
    recursion limit, not even on a list that contains itself.

    Returns:
        ``(path, part, problem)``: where it sits (``value['when']``), the part itself (for
        ``"key"``, the dict key), and what is wrong: ``"nan"`` (NaN or infinity),
        ``"key"`` (a dict key that is not a str), ``"none"`` (unless ``none_ok``),
        ``"depth"`` (lists and dicts nested deeper than :data:`MAX_DEPTH`; the part is
        the whole value) or ``"type"`` (any other type; tuples too, unless ``tuples_ok``).
    """
    if isinstance(value, _SCALARS):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value, "nan")
    is_list = isinstance(value, list) or (tuples_ok and isinstance(value, tuple))
    if (is_list or isinstance(value, dict)) and depth == MAX_DEPTH:
        return (path, value, "depth")
    if is_list:
        assert isinstance(value, list | tuple)
        for index, item in enumerate(value):
            found = find_non_json(
                item, f"{path}[{index}]", none_ok=none_ok, tuples_ok=tuples_ok, depth=depth + 1
            )
            if found is not None:
                return found
        return None
    if isinstance(value, dict):
        for name, item in value.items():
            if type(name) is not str:
                return (path, name, "key")
            found = find_non_json(
                item, f"{path}[{name!r}]", none_ok=none_ok, tuples_ok=tuples_ok, depth=depth + 1
            )
            if found is not None:
                return found
        return None
    if value is None:
        return None if none_ok else (path, value, "none")
    return (path, value, "type")


def nesting_depth(value: object) -> int | None:
    """How many lists (or tuples) and dicts ``value`` nests within each other.

    Walks without recursion, so any depth can be measured.

    Returns:
        0 for a scalar, 1 for ``[1, 2]``, 2 for ``{"a": [1]}``; ``None`` if the value
        contains itself.
    """
    if not isinstance(value, list | tuple | dict):
        return 0
    deepest = 1
    on_path = {id(value)}
    stack: list[tuple[object, Iterator[object]]] = [(value, _children(value))]
    while stack:
        container, children = stack[-1]
        for child in children:
            if isinstance(child, list | tuple | dict):
                if id(child) in on_path:
                    return None
                on_path.add(id(child))
                stack.append((child, _children(child)))
                deepest = max(deepest, len(stack))
                break
        else:
            stack.pop()
            on_path.discard(id(container))
    return deepest


def _children(
    container: list[object] | tuple[object, ...] | dict[object, object],
) -> Iterator[object]:
    return iter(container.values() if isinstance(container, dict) else container)


def shorten(value: object, limit: int = _SHOWN_CHARS) -> str:
    """``repr(value)``, cut visibly with "…" when longer than ``limit`` characters.

    The cut falls between words, so that no name is shown half (``tzinfo=…``, not
    ``tzinfo=da…``).
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    whole = cut.rstrip(_WORD_CHARS)
    return (whole or cut) + "…"


def depth_problem(value: object) -> str:
    """Say why ``value``, which :func:`find_non_json` found too deep, is refused.

    Returns:
        A predicate, e.g. ``"nests lists and dicts 101 levels deep, over the limit ..."``.
    """
    depth = nesting_depth(value)
    if depth is None:
        return "contains itself, so it has no JSON form"
    return (
        f"nests lists and dicts {depth} levels deep, over the limit of {MAX_DEPTH}; "
        "flatten it (e.g. a list of records) or store its json.dumps() text as a str"
    )


_HINTS: Final = {
    "tuple": "use a list",
    "set": "use a sorted list",
    "frozenset": "use a sorted list",
    "bytes": "decode it or base64-encode it to str",
    "datetime": "store value.isoformat() or a timestamp",
    "date": "store value.isoformat()",
    "Decimal": "store str(value) or a float",
}


def _check_json(value: object, key: str) -> None:
    found = find_non_json(value)
    if found is None:
        return
    path, part, problem = found
    if problem == "depth":
        msg = f"cannot store the value for key {key!r}: it {depth_problem(value)}"
        raise StateValueError(msg, key=key)
    if problem == "nan":
        msg = (
            f"cannot store {part!r} at {path} for key {key!r}: JSON has no NaN or "
            "infinity; store a string such as 'nan' or a separate flag instead"
        )
        raise StateValueError(msg, key=key)
    if problem == "key":
        msg = (
            f"cannot store key {key!r}: {path} has a {type(part).__name__} key "
            f"{part!r}; JSON objects have str keys only, so convert it with str()"
        )
        raise StateTypeError(msg, key=key, path=path)
    if problem == "none":
        msg = (
            f"cannot store None at {path} for key {key!r}: None means 'absent' when read; "
            "leave the entry out or use a sentinel"
        )
        raise StateValueError(msg, key=key)
    hint = _HINTS.get(type(part).__name__, "convert it to str, int, float, bool, list or dict")
    msg = (
        f"cannot store key {key!r}: {path} is a {type(part).__name__} ({shorten(part)}), "
        f"which is not a JSON value; {hint}"
    )
    raise StateTypeError(msg, key=key, path=path)


def encode_value(key: str, value: object, max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES) -> str:
    """Check ``value`` and return its JSON text.

    Args:
        key: The key the value is stored under (for error messages).
        value: A JSON value: str, int, finite float, bool, list, or dict with str keys.
        max_value_bytes: The largest accepted encoding, in UTF-8 bytes.

    Returns:
        The compact JSON encoding.

    Raises:
        StateValueError: ``None`` (at the top or nested), NaN or infinity, nested deeper
            than :data:`MAX_DEPTH`, or too large.
        StateTypeError: a part of the value is not JSON; ``.path`` says where.
    """
    if value is None:
        msg = (
            f"cannot store None for key {key!r}: None means 'absent' when read; "
            f"call delete({key!r}) to remove the key instead"
        )
        raise StateValueError(msg, key=key)
    _check_json(value, key)
    try:
        text = _ENCODER.encode(value)
    except ValueError as exc:  # e.g. an int too large to write as decimal digits
        msg = f"cannot store the value for key {key!r}: {exc}; store it as a str instead"
        raise StateValueError(msg, key=key) from exc
    try:
        size = len(text.encode()) if not text.isascii() else len(text)
    except UnicodeEncodeError as exc:  # a lone surrogate in a str of the value
        msg = (
            f"cannot store the value for key {key!r}: it holds a str that is not valid "
            f"text ({exc.reason}); decode the bytes it came from with errors='replace'"
        )
        raise StateValueError(msg, key=key) from None
    if size > max_value_bytes:
        msg = (
            f"value for key {key!r} is {size} bytes as JSON, over the limit of "
            f"{max_value_bytes}; store a reference (a path or URI) to the data instead, "
            "or raise max_value_bytes on open_runtime()"
        )
        raise StateValueError(msg, key=key)
    return text


def decode_value(text: str) -> Any:
    """Return the value whose JSON encoding is ``text``, however deep it nests.

    A value stored by an older release may nest deeper than :data:`MAX_DEPTH`, and
    deeper than ``json.loads`` can follow (it recurses): such text is decoded without
    recursion instead, so every stored value can be read.
    """
    try:
        return json.loads(text)
    except RecursionError:
        return _decode_without_recursion(text)


_TOKEN: Final = re.compile(
    r'[ \t\n\r]*(?:([\[\]{},:])|("(?:[^"\\]|\\.)*")|(true|false|null)|'
    r"(-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?))",
    re.DOTALL,
)
_LITERALS: Final = {"true": True, "false": False, "null": None}
_NO_KEY: Final = object()


def _decode_without_recursion(text: str) -> Any:
    # Scalars are decoded by json; lists and dicts are built on an explicit stack.
    containers: list[Any] = []
    keys: list[Any] = []  # per container: the dict key waiting for its value
    result: list[Any] = []
    position = 0
    while (match := _TOKEN.match(text, position)) is not None:
        position = match.end()
        punctuation, string, literal, number = match.groups()
        if punctuation in ("[", "{"):
            containers.append([] if punctuation == "[" else {})
            keys.append(_NO_KEY)
            continue
        if punctuation in (",", ":"):
            continue
        if punctuation is not None:  # "]" or "}"
            if not containers or isinstance(containers[-1], list) != (punctuation == "]"):
                break
            keys.pop()
            value = containers.pop()
        elif literal is not None:
            value = _LITERALS[literal]
        else:
            value = json.loads(string if string is not None else number)
        if not containers:
            result.append(value)
        elif isinstance(containers[-1], list):
            containers[-1].append(value)
        elif keys[-1] is _NO_KEY:
            keys[-1] = value
        else:
            containers[-1][keys[-1]] = value
            keys[-1] = _NO_KEY
    if len(result) != 1 or containers or match is not None or text[position:].strip():
        msg = f"not a JSON value at character {position}: {text[position : position + 20]!r}"
        raise ValueError(msg)
    return result[0]


def dump_json(value: object, *, indent: int | None = None) -> str:
    """JSON text of ``value`` for people to read (``ensure_ascii=False``), at any depth.

    A value too deep for ``json.dumps`` (one an older release stored) is written compact,
    without recursion, whatever ``indent`` says.
    """
    try:
        return json.dumps(value, indent=indent, ensure_ascii=False)
    except RecursionError:
        return _encode_without_recursion(value)


_SCALAR_ENCODER: Final = json.JSONEncoder(ensure_ascii=False)


def _encode_without_recursion(value: object) -> str:
    out: list[str] = []
    # Per open container: its remaining items, its closing bracket, "no item yet".
    stack: list[tuple[Iterator[Any], str, list[bool]]] = []

    def begin(item: object) -> None:
        if isinstance(item, list | tuple):
            out.append("[")
            stack.append((iter(item), "]", [True]))
        elif isinstance(item, dict):
            out.append("{")
            stack.append((iter(item.items()), "}", [True]))
        else:
            out.append(_SCALAR_ENCODER.encode(item))

    begin(value)
    while stack:
        items, closer, first = stack[-1]
        item: Any = next(items, _NO_KEY)
        if item is _NO_KEY:
            out.append(closer)
            stack.pop()
            continue
        if not first[0]:
            out.append(",")
        first[0] = False
        if closer == "}":
            name, item = item
            out.append(_SCALAR_ENCODER.encode(name) + ":")
        begin(item)
    return "".join(out)


#: The most decimal digits of an int that stateward stores: Python's default limit on
#: converting an int to or from text (``sys.int_max_str_digits``), which every process
#: that reads the value back must meet.
MAX_INT_DIGITS: Final = 4300
_INT_BOUND: Final = 10**MAX_INT_DIGITS


def check_int_digits(key: str, number: int, what: str) -> int:
    """Return ``number`` if it has at most :data:`MAX_INT_DIGITS` digits.

    Args:
        key: The key it is for (for the message).
        number: The int.
        what: What it is, for the message: ``"the amount"``, ``"the result"``.

    Raises:
        StateValueError: it has more digits.
    """
    if -_INT_BOUND < number < _INT_BOUND:
        return number
    raise StateValueError(int_digits_message(key, what), key=key)


def int_digits_message(key: str, what: str) -> str:
    """What :func:`check_int_digits` says (for a store that adds in SQL)."""
    return (
        f"cannot increment key {key!r}: {what} is an int of more than {MAX_INT_DIGITS} "
        "digits, more than Python converts to text by default; nothing was written; "
        "keep such numbers as str"
    )


def decode_stored(key: str, text: str) -> Any:
    """:func:`decode_value` of the value stored under ``key``.

    Raises:
        StateValueError: the stored text cannot be read here (e.g. an int past the
            interpreter's digit limit, written by another program).
    """
    try:
        return decode_value(text)
    except (ValueError, RecursionError) as exc:
        msg = (
            f"the value stored under key {key!r} cannot be read ({_reason(exc)}); "
            "overwrite the key with a new value, or delete it"
        )
        raise StateValueError(msg, key=key) from None


def decode_listed(text: str) -> Any:
    """:func:`decode_value` for a listing: a value that cannot be read becomes a str
    marker, ``"<unreadable: why>"``, so that one row does not fail the whole listing."""
    try:
        return decode_value(text)
    except (ValueError, RecursionError) as exc:
        return f"<unreadable: {_reason(exc)}>"


def _reason(exc: BaseException) -> str:
    # The first clause: json's and int()'s messages go on with advice that does not apply.
    return str(exc).split(";")[0].split(": value has")[0][:100] or type(exc).__name__


_CANONICAL: Final = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), sort_keys=True
)


def canonical_json(value: Any) -> str:
    """The canonical JSON text of a JSON value: object keys sorted, compact, ``-0.0``
    as ``0.0`` (which it equals). Two values have one canonical text exactly when
    :func:`json_equal` holds; compare-and-set (PostgreSQL's digest) and mapped items'
    identities use it.

    Raises:
        TypeError: a value json cannot encode, or dict keys that cannot be sorted.
        ValueError: NaN or infinity.
    """
    kind = type(value)
    if kind in _PLAIN or (kind is dict and all(type(v) in _PLAIN for v in value.values())):
        return _CANONICAL.encode(value)  # nothing to normalise (an expand() item, mostly)
    return _CANONICAL.encode(_normalise(value))


#: JSON types a value of which canonical_json need not copy (not float: -0.0).
_PLAIN: Final = frozenset({str, int, bool, type(None)})


def _normalise(value: Any) -> Any:
    # A copy with -0.0 as 0.0, built without recursion: a stored value may nest deeper
    # than the accessor's limit (an older release accepted any depth).
    root: list[Any] = [value]
    pending: list[tuple[Any, Any, Any]] = [(root, 0, value)]
    while pending:
        target, slot, item = pending.pop()
        if type(item) is float:
            item = 0.0 if item == 0 else item
        elif isinstance(item, list | tuple):
            item, children = [None] * len(item), list(enumerate(item))
            pending += [(item, index, child) for index, child in children]
        elif isinstance(item, dict):
            item, children = dict.fromkeys(item), list(item.items())
            pending += [(item, key, child) for key, child in children]
        target[slot] = item
    return root[0]


def json_equal(a: object, b: object) -> bool:
    """Compare two JSON values exactly: ``True`` is not ``1`` and ``1`` is not ``1.0``."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return a == b


class OutOfRangeError(ValueError):
    """A JSON number too large for a float (``1e999``): it would read as infinity."""


def parse_json(text: str) -> Any:
    """Parse ``text`` as strict JSON (no NaN or Infinity); raise ValueError if it is not.

    Raises:
        OutOfRangeError: a number is too large for a float.
        ValueError: ``text`` is not JSON.
    """

    def refuse(constant: str) -> Any:
        msg = f"{constant} is not JSON"
        raise ValueError(msg)

    def finite(number: str) -> float:
        value = float(number)
        if not math.isfinite(value):
            msg = f"{number} is too large for a float (it would be infinity)"
            raise OutOfRangeError(msg)
        return value

    return json.loads(text, parse_constant=refuse, parse_float=finite)


def value_from_text(text: str, remove_hint: str) -> Any:
    """A value typed by a person (CLI argument, page form) as strict JSON.

    Args:
        text: What was typed.
        remove_hint: How to remove a key instead, for the refusal of ``null``.

    Raises:
        ValueError: ``text`` is not JSON, a number too large, or ``null``; the
            message says how to write what was meant.
    """
    try:
        value = parse_json(text)
    except OutOfRangeError as exc:
        msg = f"{text!r}: {exc}; store a smaller number or the number as a string"
        raise ValueError(msg) from None
    except ValueError as exc:
        if re.fullmatch(r"[^\s\"'\[\]{},:]+", text):
            msg = (
                f"{text!r} is not JSON; to store a string, quote it as JSON: "
                f"'\"{text}\"' (numbers, true/false, lists and objects are taken as JSON)"
            )
        else:
            msg = f"{text!r} is not valid JSON ({exc}); quote strings as JSON, e.g. '\"text\"'"
        raise ValueError(msg) from None
    if value is None:
        msg = f"null cannot be stored; to remove the key {remove_hint}"
        raise ValueError(msg)
    return value
