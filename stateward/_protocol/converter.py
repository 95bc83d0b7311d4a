"""The one strict converter: messages and frames to JSON-ready dicts and back.

Messages are a tagged union on ``type`` (the class name), frames a tagged union on
``kind``; a frame holding a message (a request or a response frame) holds its message's
wire form. Decoding is strict: ``3`` is not a ``str``, ``True`` is not an ``int``, a
missing or extra field is refused, and every refusal is a
:class:`~stateward.ProtocolError` that names what was wrong. An ``int`` is
accepted for a ``float`` field.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Final

import attrs

from .._errors import ProtocolError
from .._records import resolve_record_types
from .frames import FRAME_KINDS, KIND_OF, Frame, RequestFrame, ResponseFrame
from .messages import MESSAGE_TYPES, ErrorType, JsonValue, Message, Request, Response

if TYPE_CHECKING:
    import cattrs

_REQUEST_TYPES: Final = Request.__args__
_RESPONSE_TYPES: Final = Response.__args__


def encode(message: Message) -> dict[str, Any]:
    """Return the wire form of ``message``: a JSON-ready dict with a ``type`` tag."""
    data: dict[str, Any] = _converter().unstructure(message, Message)
    return data


def decode(data: object) -> Message:
    """Return the message whose wire form is ``data``.

    Raises:
        ProtocolError: ``data`` is not a dict, its ``type`` is missing or unknown, or a
            field is missing, extra or of the wrong type. The message names them.
    """
    if not isinstance(data, dict):
        msg = f"a message must be a dict with a 'type' tag, got {type(data).__name__} {data!r:.80}"
        raise ProtocolError(msg)
    tag = data.get("type")
    if not isinstance(tag, str) or tag not in MESSAGE_TYPES:  # a list tag is unhashable
        known = ", ".join(sorted(MESSAGE_TYPES))
        msg = f"unknown message type {tag!r}; known types: {known}"
        raise ProtocolError(msg)
    try:
        message: Message = _converter().structure(data, Message)  # type: ignore[arg-type]
    except Exception as exc:
        msg = f"bad {tag} message: {_problems(exc, tag)}"
        raise ProtocolError(msg) from exc
    return message


def encode_frame(frame: Frame) -> dict[str, Any]:
    """Return the wire form of ``frame``: a JSON-ready dict with a ``kind`` tag."""
    data: dict[str, Any] = _converter().unstructure(frame, Frame)
    return data


def decode_frame(data: object) -> Frame:
    """Return the frame whose wire form is ``data``.

    Raises:
        ProtocolError: an unknown ``kind``, missing or extra keys, or a field of the
            wrong type; for a request or response frame, also a message that cannot be
            decoded (the error :func:`decode` raises).
    """
    if not isinstance(data, dict):
        msg = f"a frame must be a JSON object, got {type(data).__name__} {data!r:.60}"
        raise ProtocolError(msg)
    kind = data.get("kind")
    cls = FRAME_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        msg = f"a frame of unknown kind {kind!r}: {data!r:.200}"
        raise ProtocolError(msg)
    expected = _KEYS[cls]
    if data.keys() != expected:
        extra = sorted(set(data) - expected)
        if cls is RequestFrame and extra and expected <= set(data):
            msg = (
                f"a request frame holds only 'kind', 'id' and 'msg', not {extra}: a task "
                "process cannot say who it is, the supervisor knows"
            )
        else:
            msg = f"a {kind} frame holds {sorted(expected)}, got {sorted(data)}"
        raise ProtocolError(msg)
    if "id" in expected and type(data["id"]) is not int:
        msg = f"a {kind} frame needs an int 'id', got {data['id']!r}"
        raise ProtocolError(msg)
    member = _MEMBERS.get(cls)
    if member is not None:
        # A request or a response (one per state call): its envelope is checked above,
        # and its message is decoded by the hook the converter would call.
        framed: Frame = cls(data["id"], member(data["msg"], None))
        return framed
    try:
        frame: Frame = _converter().structure(data, Frame)  # type: ignore[arg-type]
    except Exception as exc:
        inner = _find_protocol_error(exc)
        if inner is not None:
            raise inner from None
        msg = f"a malformed {kind} frame: {_problems(exc, str(kind))}: {data!r:.200}"
        raise ProtocolError(msg) from exc
    return frame


def _problems(exc: Exception, path: str) -> str:
    import cattrs

    try:
        return "; ".join(cattrs.transform_error(exc, path=path)) or repr(exc)
    except Exception:  # cattrs cannot word it (it sorts and joins non-str keys)
        return repr(exc)


def _find_protocol_error(exc: BaseException) -> ProtocolError | None:
    """The ProtocolError a nested message hook raised, inside cattrs' exception groups."""
    if isinstance(exc, ProtocolError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find_protocol_error(inner)
            if found is not None:
                return found
    return None


def _strict(kind: type[Any]) -> Any:
    # cattrs structures a str field by calling str(value): 3 would become "3". Refuse.
    def structure(value: object, _: type[Any]) -> Any:
        if type(value) is kind or (kind is float and type(value) is int):
            return kind(value)
        msg = f"expected {kind.__name__}, got {type(value).__name__} {value!r}"
        raise TypeError(msg)

    return structure


def _one_of(classes: tuple[type[Any], ...], what: str) -> Any:
    # A frame's message field: decoded by decode(), so its errors read the same.
    def structure(value: object, _: type[Any]) -> Any:
        message = decode(value)
        if not isinstance(message, classes):
            msg = f"a {what} frame must hold a {what}, got a {type(message).__name__}"
            raise ProtocolError(msg)
        return message

    return structure


#: The keys of each frame's wire form.
_KEYS: Final = {
    cls: frozenset({"kind", *(field.name for field in attrs.fields(cls))})
    for cls in FRAME_KINDS.values()
}
#: How the message of a request or response frame is decoded.
_MEMBERS: Final = {
    RequestFrame: _one_of(_REQUEST_TYPES, "request"),
    ResponseFrame: _one_of(_RESPONSE_TYPES, "response"),
}


def generate_hooks() -> None:
    """Build the converter and every message's and frame's hooks now, not on first use
    (a fork server's template, so that its task processes inherit them)."""
    for cls in (*MESSAGE_TYPES.values(), *FRAME_KINDS.values()):
        _converter().get_structure_hook(cls)
        _converter().get_unstructure_hook(cls)


@functools.cache
def _converter() -> cattrs.Converter:
    """The converter, built on first use (an in-process runtime never uses it: building
    its hooks is most of what importing cattrs and this module would cost)."""
    import cattrs
    from cattrs.strategies import configure_tagged_union

    resolve_record_types()
    converter = cattrs.Converter(forbid_extra_keys=True)
    for kind in (str, int, float, bool):
        converter.register_structure_hook(kind, _strict(kind))
    converter.register_structure_hook(JsonValue, lambda value, _: value)
    converter.register_unstructure_hook(ErrorType, lambda value: value.value)
    configure_tagged_union(
        Message, converter, tag_generator=lambda cls: cls.__name__, tag_name="type"
    )
    converter.register_structure_hook(Request, _MEMBERS[RequestFrame])
    converter.register_structure_hook(Response, _MEMBERS[ResponseFrame])
    for union in (Request, Response):
        converter.register_unstructure_hook(union, encode)
    configure_tagged_union(Frame, converter, tag_generator=KIND_OF.__getitem__, tag_name="kind")
    return converter
