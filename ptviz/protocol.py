"""docs/protocol.md in code: message shapes, command validation, error codes.

No Django and no I/O here: the consumer parses and authorizes with it, the engine worker
builds its replies with it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

VERSION = 1

# error codes (docs/protocol.md, "error")
BAD_MESSAGE = "bad_message"
FORBIDDEN = "forbidden"
ENGINE = "engine"
REWOUND = "rewound"  # a decision from a viewer looking at the past (it must choose)
NO_MOMENT = "no_moment"  # a moment (or branch) that is not in this session
REVOKED = "revoked"  # the share link was revoked or expired (the socket closes)
UNAVAILABLE = "unavailable"
TOO_BIG = "too_big"
CANCELLED = "cancelled"  # (an exploration; sent as an explore_cancelled message)
LIMIT = "limit"  # a per-worker quota (loaded memory, concurrent explorations)
RATE_LIMITED = "rate_limited"  # over the per-connection message rate

# command -> role needed. Time travel (seek, back, live) moves only the sender's cursor,
# so viewing is enough; decisions change the shared head.
CONTROL_COMMANDS = ("step", "run", "pause", "inject", "explore", "explore_cancel")
VIEW_COMMANDS = (
    "subscribe",
    "unsubscribe",
    "resync",
    "seek",
    "back",
    "live",
    "moment",
    "follow",
    "focus",
    "hello",
    "history",
)
RUN_UNTIL = ("violation",)
COMMANDS = CONTROL_COMMANDS + VIEW_COMMANDS
# The "type"s a browser sends: a command, or the short resync (docs/protocol.md).
CLIENT_TYPES = ("command", "resync")
RUN_MODES = ("round_robin", "random")
# Every integer a browser sends fits a signed 64-bit slot (the Redis layer's msgpack and
# the engine's counters); a run's speed is finite and at most this many steps per second.
INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1
MAX_SPEED = 1e9

# The internal messages between consumers and engine workers (over the channel layer or,
# embedded, the bridge's pipes). Every one names its session.
ENGINE_CHANNEL = "ptviz-engine"  # the shared, load-balanced channel of the engine workers
OUT = "ptviz.out"  # layer message type a consumer relays: {"type": OUT, "msg": {...}}
JOIN = "engine.join"  # a viewer connected or wants a fresh snapshot: viewer, tables
LEAVE = "engine.leave"  # a viewer disconnected: viewer
COMMAND = "engine.command"  # a browser command: viewer, msg (validated), role
TAKEOVER = "engine.takeover"  # (embedded) rebuild the session and resend a snapshot
SEEN = "engine.seen"  # a viewer's heartbeat: viewer, tables (the engine expires the silent)
PRELOAD = "engine.preload"  # a page of the session was served: load it before its socket joins
DISCARD = "discard"  # emit kind: remove a viewer's channel from the session's group


def group_name(session_id: str) -> str:
    return f"session-{session_id}"


def message(type_: str, **fields) -> dict:
    return {"v": VERSION, "type": type_, **fields}


def error(code: str, text: str, id_: Any = None) -> dict:
    return message("error", id=id_, code=code, message=text)


def ack(id_: Any) -> dict:
    return message("ack", id=id_)


@dataclass
class ProtocolError(Exception):
    code: str
    text: str
    id: Any = None

    def as_message(self) -> dict:
        return error(self.code, self.text, self.id)


def parse_table_address(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        addr = value
    elif isinstance(value, str):
        addr = int(value.replace("_", ""), 16 if value.lower().startswith("0x") else 10)
    else:
        raise ValueError(value)
    if addr < 0 or addr >= 1 << 64:
        raise ValueError(value)
    return addr


def _int(obj: dict, key: str, id_: Any, *, minimum: int = 0, default: Any = ...) -> Any:
    if key not in obj or obj[key] is None:
        if default is ...:
            raise ProtocolError(BAD_MESSAGE, f"'{obj['cmd']}' needs an integer '{key}'", id_)
        return default
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(BAD_MESSAGE, f"'{obj['cmd']}': '{key}' must be an integer", id_)
    if value < minimum:
        raise ProtocolError(BAD_MESSAGE, f"'{obj['cmd']}': '{key}' must be >= {minimum}", id_)
    if value > INT_MAX:
        raise ProtocolError(BAD_MESSAGE, f"'{obj['cmd']}': '{key}' must be < 2**63", id_)
    return value


MAX_STR = 4096


def _str(obj: dict, key: str, id_: Any) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ProtocolError(BAD_MESSAGE, f"'{obj['cmd']}' needs a string '{key}'", id_)
    if len(value) > MAX_STR:
        raise ProtocolError(
            BAD_MESSAGE, f"'{obj['cmd']}': '{key}' is longer than {MAX_STR} characters", id_
        )
    return value.strip()


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


# A "\\uD800"-"\\uDFFF" escape: JSON may hold a lone surrogate that way, which UTF-8 (so
# msgpack, the database, another viewer's page) cannot.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def loads(text: str | bytes, *, unicode: bool = True):
    """json.loads for untrusted text: NaN, Infinity, numbers that overflow a double and
    (unless `unicode` is false: the caller checks not_unicode itself) strings that are
    not Unicode are refused (ValueError); deep nesting raises RecursionError."""
    if isinstance(text, str):
        try:
            raw = text.encode()
        except UnicodeEncodeError:
            raise ValueError("the text holds a lone surrogate (not Unicode)") from None
    else:
        raw = text
    obj = json.loads(raw, parse_float=_finite, parse_constant=_no_constant)
    if unicode and _SURROGATE_ESCAPE.search(raw) and not_unicode(obj):
        raise ValueError("a string holds a lone surrogate (not Unicode)")
    return obj


def not_unicode(obj) -> bool:
    """True when a string in a parsed JSON value holds a lone surrogate."""
    try:
        json.dumps(obj, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return True
    return False


def parse_client_message(text: str | None) -> dict:
    """One browser message -> a normalized command dict {"cmd", "id", ...fields}.

    `{"type": "resync"}` (no id) is accepted as a short form of the resync command.
    Raises ProtocolError(bad_message) naming what is wrong, whatever the input: nothing
    a browser sends may crash the consumer.
    """
    try:
        return _parse_client_message(text)
    except ProtocolError:
        raise
    except Exception as exc:  # RecursionError, a digit limit, anything unforeseen
        raise ProtocolError(BAD_MESSAGE, f"malformed message ({type(exc).__name__})") from None


def _parse_client_message(text: str | None) -> dict:
    if text is None:
        raise ProtocolError(BAD_MESSAGE, "binary frames are not part of the protocol")
    try:
        obj = loads(text, unicode=False)  # (checked below, once the id is known)
    except ValueError as exc:
        raise ProtocolError(BAD_MESSAGE, f"the message is not JSON ({exc})") from None
    except RecursionError:
        raise ProtocolError(BAD_MESSAGE, "the message is nested too deeply") from None
    if not isinstance(obj, dict):
        raise ProtocolError(BAD_MESSAGE, "the message must be a JSON object")
    id_ = obj.get("id")
    if id_ is not None and (
        isinstance(id_, bool)
        or not isinstance(id_, int | str)
        or (isinstance(id_, int) and not INT_MIN <= id_ <= INT_MAX)
        or (isinstance(id_, str) and len(id_) > 64)
    ):
        id_ = None
    if "\\u" in text and not_unicode(obj):  # (only an escape can make a lone surrogate)
        if isinstance(id_, str) and not_unicode(id_):
            id_ = None
        raise ProtocolError(BAD_MESSAGE, "a string holds a lone surrogate (not Unicode)", id_)
    if obj.get("v") != VERSION:
        raise ProtocolError(BAD_MESSAGE, f'"v" must be {VERSION}', id_)
    kind = obj.get("type")
    if kind == "resync":
        return {"cmd": "resync", "id": id_}
    if kind not in CLIENT_TYPES:
        raise ProtocolError(
            BAD_MESSAGE, f"unknown message type {kind!r} (types: {', '.join(CLIENT_TYPES)})", id_
        )
    if not isinstance(id_, int):
        raise ProtocolError(BAD_MESSAGE, "a command needs an integer 'id' below 2**63", id_)
    cmd = obj.get("cmd")
    if cmd not in COMMANDS:
        raise ProtocolError(
            BAD_MESSAGE, f"unknown command {cmd!r} (commands: {', '.join(COMMANDS)})", id_
        )
    out: dict[str, Any] = {"cmd": cmd, "id": id_}
    if cmd in ("step", "inject", "run"):
        branch = obj.get("branch", False)
        if not isinstance(branch, bool):
            raise ProtocolError(BAD_MESSAGE, f"'{cmd}': 'branch' must be true or false", id_)
        out["branch"] = branch
    if cmd == "step":
        out["actor"] = _str(obj, "actor", id_)
    elif cmd == "inject":
        out["actor"] = _str(obj, "actor", id_)
        out["op"] = _str(obj, "op", id_)
    elif cmd == "run":
        mode = obj.get("mode", "round_robin")
        if mode not in RUN_MODES:
            raise ProtocolError(
                BAD_MESSAGE, f"'run': 'mode' must be one of {', '.join(RUN_MODES)}", id_
            )
        speed = obj.get("speed", 0)
        if (
            isinstance(speed, bool)
            or not isinstance(speed, int | float)
            or not 0 <= speed <= MAX_SPEED  # (False for NaN)
        ):
            raise ProtocolError(
                BAD_MESSAGE, f"'run': 'speed' must be a number from 0 to {MAX_SPEED:g}", id_
            )
        out["mode"] = mode
        out["seed"] = _int(obj, "seed", id_, minimum=INT_MIN, default=0)
        out["speed"] = float(speed)
        out["max_steps"] = _int(obj, "max_steps", id_, minimum=1, default=None)
        until = obj.get("until")
        if until is not None and until not in RUN_UNTIL:
            raise ProtocolError(
                BAD_MESSAGE, f"'run': 'until' must be one of {', '.join(RUN_UNTIL)}", id_
            )
        out["until"] = until
    elif cmd == "back":
        out["n"] = _int(obj, "n", id_, minimum=1, default=1)
    elif cmd == "seek":
        if obj.get("moment") is not None:
            out["moment"] = _str(obj, "moment", id_)[:40]
        else:
            out["position"] = _int(obj, "position", id_)
            out["branch"] = _int(obj, "branch", id_, default=None)
    elif cmd == "follow":
        target = obj.get("viewer")
        if target is not None and (not isinstance(target, str) or len(target) > 20):
            raise ProtocolError(BAD_MESSAGE, "'follow': 'viewer' must be a viewer id or null", id_)
        out["viewer"] = target
    elif cmd == "focus":
        addr = obj.get("addr")
        if addr is not None:
            try:
                addr = hex(parse_table_address(addr))
            except ValueError:
                raise ProtocolError(
                    BAD_MESSAGE, f"'focus': {addr!r} is not a descriptor address", id_
                ) from None
        out["addr"] = addr
    elif cmd == "history":
        try:
            out["addr"] = hex(parse_table_address(obj.get("addr")))
        except ValueError:
            raise ProtocolError(
                BAD_MESSAGE, "'history' needs 'addr': a descriptor address", id_
            ) from None
    elif cmd == "hello":
        out["name"] = _str(obj, "name", id_)[:60]
    elif cmd == "explore":
        out["max_states"] = _int(obj, "max_states", id_, minimum=1, default=None)
    elif cmd in ("subscribe", "unsubscribe"):
        tables = obj.get("tables")
        if not isinstance(tables, list) or len(tables) > 4096:
            raise ProtocolError(
                BAD_MESSAGE, f"'{cmd}' needs 'tables': a list of table addresses", id_
            )
        addrs = []
        for value in tables:
            try:
                addrs.append(parse_table_address(value))
            except ValueError:
                raise ProtocolError(
                    BAD_MESSAGE, f"'{cmd}': {value!r} is not a table address", id_
                ) from None
        out["tables"] = addrs
    return out
