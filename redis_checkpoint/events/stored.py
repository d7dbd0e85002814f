"""The stored form of events in Redis: compact msgpack, decoded without validation.

An event is stored as a msgpack array `[code, recorded_at, field, ...]`: `code` names its
class (`EVENT_CODES`), `recorded_at` is integer microseconds since the epoch, and the
event's own fields follow in declaration order, each in a compact form: bytes as msgpack
bin, UUIDs as 16 bytes, times as microseconds, enums as their values, nested models as
arrays of their fields. The envelope's `seq` and `workflow_id` are not stored: they are the
stream entry's id and the history's own, so decoding takes them as arguments.

The forms are derived once, at import, from the models' annotations. Encoding checks the
type of every value it writes; decoding trusts what it reads (only its shape is checked)
and builds the models without validation. `dump_event` stays the Aion JSON form.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from enum import Enum
from functools import cache
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, NamedTuple, Union, get_args, get_origin
from uuid import UUID, SafeUUID

import msgpack
from pydantic import AwareDatetime, BaseModel, StrictStr
from pydantic.fields import FieldInfo

from ..codec import trusted
from . import models as ev
from .encoding import EPOCH, from_micros, micros
from .models import EventBase
from .values import I64, SearchAttributeType, SearchAttributeValue, Timestamp

_MICROSECOND = timedelta(microseconds=1)

EVENT_CODES: tuple[type[EventBase], ...] = (
    ev.WorkflowStarted,
    ev.WorkflowCompleted,
    ev.WorkflowFailed,
    ev.WorkflowCancelled,
    ev.WorkflowTimedOut,
    ev.WorkflowContinuedAsNew,
    ev.WorkflowReopened,
    ev.SearchAttributesUpdated,
    ev.ActivityScheduled,
    ev.ActivityStarted,
    ev.ActivityCompleted,
    ev.ActivityFailed,
    ev.ActivityCancelled,
    ev.TimerStarted,
    ev.TimerFired,
    ev.TimerCancelled,
    ev.WithTimeoutCompleted,
    ev.SignalReceived,
    ev.SignalSent,
    ev.ChildWorkflowStarted,
    ev.ChildWorkflowCompleted,
    ev.ChildWorkflowFailed,
    ev.ChildWorkflowCancelled,
    ev.ScheduleCreated,
    ev.ScheduleUpdated,
    ev.SchedulePaused,
    ev.ScheduleResumed,
    ev.ScheduleDeleted,
    ev.ScheduleTriggered,
)
"""An event class's stored code is its index here. Append only: a released code never
changes, or stored histories would decode as other events."""


class _Form(NamedTuple):
    """How values of one annotation are stored."""

    kind: type  # the Python type of the values (a union picks its member by it)
    encode: Callable[[Any], Any]  # checks the value's type, returns its msgpack form
    decode: Callable[[Any], Any] | None  # None: the msgpack value is the value itself


def _refused(value: Any, what: str) -> ValueError:
    return ValueError(f"expected {what}, got {value!r:.80}")


def _form(annotation: Any, metadata: Sequence[Any] = ()) -> _Form:
    """The stored form of a field's annotation (and the constraints in its metadata)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        flat = [m for item in args[1:] for m in _constraints(item)]
        return _form(args[0], [*metadata, *flat])
    if origin is Union or origin is UnionType:
        return _union(args, metadata)
    if origin is list:
        return _list(_form(args[0]))
    if origin is dict and args[0] is str:
        return _dict(_form(args[1]))
    if origin is Literal:
        return _choice(type(args[0]), {v: v for v in args}, lambda v: v, f"one of {args}")
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        members = {m.value: m for m in annotation}
        return _choice(annotation, members, lambda v: v.value, f"a {annotation.__name__}")
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _model_form(annotation)
    return _leaf(annotation, metadata)


def _constraints(item: Any) -> list[Any]:
    return list(item.metadata) if isinstance(item, FieldInfo) else [item]


def _leaf(annotation: Any, metadata: Sequence[Any]) -> _Form:
    if annotation is int:
        return _integer(metadata)
    if annotation is str:
        shortest = max([0, *(m.min_length for m in metadata if hasattr(m, "min_length"))])
        fits = (lambda v: len(v) >= shortest) if shortest else None
        return _exact(str, f"a str of {shortest}+ characters" if fits else "a str", fits)
    if annotation in (bytes, bool, float):
        return _exact(annotation, annotation.__name__)
    if annotation is UUID:
        return _Form(UUID, _uuid_bytes, _uuid)
    if annotation in (datetime, AwareDatetime):
        return _Form(datetime, _micros, from_micros)
    raise TypeError(f"events have no stored form for {annotation!r}")


def _integer(metadata: Sequence[Any]) -> _Form:
    low = max([-(2**63), *(m.ge for m in metadata if hasattr(m, "ge"))])  # msgpack's range
    high = min([2**64 - 1, *(m.le for m in metadata if hasattr(m, "le"))])
    return _exact(int, f"an int in {low}..{high}", lambda v: low <= v <= high)


def _exact(kind: type, what: str, fits: Callable[[Any], bool] | None = None) -> _Form:
    """Values of exactly `kind` (a bool is no int) that fit, stored as they are."""

    def encode(value: Any) -> Any:
        if type(value) is not kind or (fits is not None and not fits(value)):
            raise _refused(value, what)
        return value

    return _Form(kind, encode, None)


def _uuid_bytes(value: Any) -> bytes:
    if not isinstance(value, UUID):
        raise _refused(value, "a UUID")
    return value.bytes


# A UUID is its two slots (the guard test pins them); `UUID(bytes=...)` costs three times
# as much, checking what this package wrote itself.
_set_int, _set_safe = vars(UUID)["int"].__set__, vars(UUID)["is_safe"].__set__
_from_bytes, _UNKNOWN = int.from_bytes, SafeUUID.unknown


def _uuid(value: bytes) -> UUID:
    if len(value) != 16:
        raise ValueError(f"a UUID is 16 bytes, not {len(value)}")
    uuid = object.__new__(UUID)
    _set_int(uuid, _from_bytes(value))
    _set_safe(uuid, _UNKNOWN)
    return uuid


def _micros(value: Any) -> int:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise _refused(value, "a timezone-aware datetime")
    return micros(value)


def _choice(kind: type, members: dict[Any, Any], stored: Callable[[Any], Any], what: str) -> _Form:
    """A Literal's values or an enum's members, stored as `stored(member)`."""

    def encode(value: Any) -> Any:
        if type(value) is not kind or stored(value) not in members:
            raise _refused(value, what)
        return stored(value)

    return _Form(kind, encode, members.__getitem__)


def _union(args: Sequence[Any], metadata: Sequence[Any]) -> _Form:
    """`X | None` stores None as nil; several types are told apart as `_either` does."""
    options = [a for a in args if a is not NoneType]
    forms = [_form(a, metadata if len(options) == 1 else ()) for a in options]
    form = forms[0] if len(forms) == 1 else _either(forms)
    if len(options) == len(args):
        return form
    encode, decode = form.encode, form.decode
    return _Form(
        form.kind,
        lambda value: None if value is None else encode(value),
        None if decode is None else lambda stored: None if stored is None else decode(stored),
    )


def _either(members: list[_Form]) -> _Form:
    """The member whose type the value has, stored as `[index, value]`; or as the value
    alone where each member's msgpack value is the value itself (msgpack tells the types
    apart, as for `str | int`)."""
    index = {form.kind: i for i, form in enumerate(members)}
    plain = all(form.decode is None for form in members)

    def encode(value: Any) -> Any:
        i = index.get(type(value))
        if i is None:
            raise _refused(value, " or ".join(form.kind.__name__ for form in members))
        return members[i].encode(value) if plain else [i, members[i].encode(value)]

    def decode(stored: Any) -> Any:
        i, value = stored
        decode = members[i].decode
        return value if decode is None else decode(value)

    return _Form(object, encode, None if plain else decode)


def _list(item: _Form) -> _Form:
    encode, decode = item.encode, item.decode or _same

    def encode_list(value: Any) -> Any:
        if type(value) is not list:
            raise _refused(value, "a list")
        return [encode(x) for x in value]

    def decode_list(stored: Any) -> Any:
        return [decode(x) for x in stored]

    return _Form(list, encode_list, None if item.decode is None else decode_list)


def _dict(item: _Form) -> _Form:
    encode, decode = item.encode, item.decode or _same

    def encode_dict(value: Any) -> Any:
        if type(value) is not dict or not all(type(key) is str for key in value):
            raise _refused(value, "a dict with str keys")
        return {key: encode(x) for key, x in value.items()}

    def decode_dict(stored: Any) -> Any:
        return {key: decode(x) for key, x in stored.items()}

    return _Form(dict, encode_dict, None if item.decode is None else decode_dict)


def _same(value: Any) -> Any:
    return value


class _Shape:
    """A model's fields, stored as an array in declaration order; an event's without its
    envelope, which goes first: `[code, recorded_at, field, ...]`."""

    def __init__(self, model: type[BaseModel], event: bool = False) -> None:
        fields = {n: f for n, f in model.model_fields.items() if not (event and n == "envelope")}
        self.model = model
        self.names = tuple(fields)
        self.forms = tuple(_form(f.annotation, f.metadata) for f in fields.values())
        # Validators that see several fields at once check what the types cannot.
        self.whole = bool(model.__pydantic_decorators__.model_validators)
        self.decode = _builder(model, self.names, [form.decode for form in self.forms], event)

    def encode(self, value: Any) -> list[Any]:
        """The stored fields of `value`; ValueError names the first that cannot be stored."""
        if type(value) is not self.model:
            raise _refused(value, self.model.__name__)
        if self.whole:
            self.model.model_validate(value.__dict__)
        fields, stored = value.__dict__, []
        for name, form in zip(self.names, self.forms, strict=True):
            if name not in fields:
                raise ValueError(f"{self.model.__name__}.{name} is missing")
            try:
                stored.append(form.encode(fields[name]))
            except ValueError as exc:
                raise ValueError(f"{self.model.__name__}.{name}: {exc}") from None
        return stored


def _builder(
    model: type[BaseModel], names: Sequence[str], decoders: Sequence[Any], event: bool
) -> Callable[..., Any]:
    """The trusted decoder of `model`'s stored fields, written out as a function once (as
    dataclasses writes `__init__`): a dict display costs half of building one in a loop,
    and unpacking checks the number of fields. Payload's reads

        def build(stored):
            [f0, f1] = stored
            return trusted(model, {'content_type': d0(f0), 'bytes': f1})

    and an event's `build(stored, envelope)` skips the code and time ahead of its fields.
    """
    targets = [f"f{i}" for i in range(len(names))]
    values = [
        f"{name!r}: {f if decode is None else f'd{i}({f})'}"
        for i, (name, decode, f) in enumerate(zip(names, decoders, targets, strict=True))
    ]
    if event:
        targets, values = ["_", "_", *targets], ["'envelope': envelope", *values]
    source = (
        f"def build(stored{', envelope' if event else ''}):\n"
        f"    [{', '.join(targets)}] = stored\n"
        f"    return trusted(model, {{{', '.join(values)}}})\n"
    )
    namespace: dict[str, Any] = {"trusted": trusted, "model": model}
    namespace.update((f"d{i}", decode) for i, decode in enumerate(decoders))
    exec(source, namespace)
    build: Callable[..., Any] = namespace["build"]
    return build


@cache
def _model_form(model: type[BaseModel]) -> _Form:
    if model is SearchAttributeValue:
        return _Form(model, _encode_attribute, _decode_attribute)
    shape = _Shape(model)
    return _Form(model, shape.encode, shape.decode)


_ATTRIBUTE_DATA = {
    SearchAttributeType.STRING: _form(StrictStr),
    SearchAttributeType.INT: _form(I64),
    SearchAttributeType.FLOAT: _form(float),  # validation made it a float
    SearchAttributeType.BOOL: _form(bool),
    SearchAttributeType.DATETIME: _form(Timestamp),
    SearchAttributeType.KEYWORD_LIST: _form(list[StrictStr]),
}
_ATTRIBUTE_TYPES = {kind.value: kind for kind in SearchAttributeType}


def _encode_attribute(value: Any) -> list[Any]:
    """`[type, data]`: the data is `Any` to pydantic, so its form follows the type."""
    if type(value) is not SearchAttributeValue:
        raise _refused(value, "SearchAttributeValue")
    kind, data = value.__dict__.get("type"), value.__dict__.get("data")
    if type(kind) is not SearchAttributeType:
        raise ValueError(f"SearchAttributeValue.type: {_refused(kind, 'a SearchAttributeType')}")
    try:
        return [kind.value, _ATTRIBUTE_DATA[kind].encode(data)]
    except ValueError as exc:
        raise ValueError(f"SearchAttributeValue.data: {exc}") from None


def _decode_attribute(stored: list[Any]) -> SearchAttributeValue:
    kind, data = stored
    kind = _ATTRIBUTE_TYPES[kind]
    decode = _ATTRIBUTE_DATA[kind].decode
    values = {"type": kind, "data": data if decode is None else decode(data)}
    return trusted(SearchAttributeValue, values)


_ENVELOPE = _Shape(ev.EventEnvelope)
_ENVELOPE_MODEL, _trusted, _unpackb = ev.EventEnvelope, trusted, msgpack.unpackb
_SHAPES = [_Shape(model, event=True) for model in EVENT_CODES]
_CODES = {model: code for code, model in enumerate(EVENT_CODES)}
if set(EVENT_CODES) != set(ev.EVENT_TYPES.values()):  # a new event needs a code
    raise RuntimeError("EVENT_CODES must list every event class exactly once")


def encode_event(event: EventBase) -> bytes:
    """The stored bytes of one event: `[code, recorded_at, field, ...]` in msgpack.

    Every value's type is checked (an event built with `model_construct` may hold
    anything), so all that is written decodes back to an equal event.

    Raises:
        ValueError: `event` holds a value that its annotation does not allow; the message
            names the field.
    """
    code = _CODES.get(type(event))
    if code is None:
        raise _refused(event, "an Aion event")
    _, recorded_at, _ = _ENVELOPE.encode(event.__dict__.get("envelope"))
    stored = [code, recorded_at, *_SHAPES[code].encode(event)]
    try:
        return msgpack.packb(stored)
    except UnicodeEncodeError as exc:  # a str with a lone surrogate
        raise ValueError(f"{type(event).__name__} cannot be stored: {exc}") from None


def decode_event(data: bytes, seq: int, workflow_id: UUID) -> EventBase:
    """The event stored as `data` by `encode_event`, at `seq` of `workflow_id`'s history.

    Trusted: the models are built without validation, as `encode_event` checked every
    value; what is checked is the form (msgpack, an array, a known code, the number of
    fields), so a record this package did not write is refused. The checks that building
    makes anyway (unpacking the fields counts them) are only spelled out for a record that
    fails: reading a long history is this function, a thousand times.

    Raises:
        ValueError: `data` is not an event's stored form; the message says why.
    """
    try:
        stored = _unpackb(data)
        code = stored[0] if type(stored) is list else None  # a map would unpack as keys
        if type(code) is not int or code < 0:
            raise ValueError("no event code")
        at = EPOCH + stored[1] * _MICROSECOND
        envelope = {"seq": seq, "recorded_at": at, "workflow_id": workflow_id}
        event: EventBase = _SHAPES[code].decode(stored, _trusted(_ENVELOPE_MODEL, envelope))
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise _diagnosis(data, exc) from None
    return event


def _diagnosis(data: bytes, exc: Exception) -> ValueError:
    """Why `data` is not an event's stored form."""
    try:
        stored = msgpack.unpackb(data)
    except Exception as error:
        return ValueError(f"not msgpack ({type(error).__name__}: {error})")
    if type(stored) is not list or not stored:
        return ValueError(f"expected an array [code, recorded_at, ...], got {stored!r:.80}")
    code = stored[0]
    if type(code) is not int or not 0 <= code < len(_SHAPES):
        return ValueError(f"no event has the code {code!r:.20}")
    shape = _SHAPES[code]
    if len(stored) != 2 + len(shape.names):
        name, width = shape.model.__name__, 2 + len(shape.names)
        return ValueError(f"a stored {name} is an array of {width}, not {len(stored)}")
    return ValueError(f"not a stored {shape.model.__name__}: {exc}")
