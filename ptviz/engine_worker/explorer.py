"""Exploration for a live session: `python -m engine explore --json`'s result, computed
from the session's current moment (its machine state: injected operations, the steps taken
so far) on a machine of its own in a background thread, with progress and cancellation.

engine.explore.explore() runs to completion in one call, so it runs in a thread (the
worker's loop keeps serving pause, step and other sessions between GIL switches) on a
copy of the live machine's state: the live machine is never touched. The explorer calls
back every few thousand new states with the number of distinct states so far (the
progress reports) and stops when that callback raises (cancel). The machine itself is the
engine's, unwrapped, so the search runs as fast as the CLI's.
"""

from __future__ import annotations

import threading
import time

from engine.core import new_machine
from engine.explore import StateBoundExceeded
from engine.report import explore_json
from engine.twin import EngineError

# Counts a browser cannot hold exactly as a JSON number (above Number.MAX_SAFE_INTEGER)
# are sent as decimal strings (docs/protocol.md, "explore_result").
SAFE_INTEGER = (1 << 53) - 1


class Cancelled(Exception):
    pass


def exact_counts(result: dict) -> dict:
    """The explore result with its interleaving counts above 2^53 - 1 as strings."""

    def exact(n):
        return str(n) if isinstance(n, int) and n > SAFE_INTEGER else n

    out = dict(result, interleavings=exact(result["interleavings"]))
    out["final_states"] = [dict(f, count=exact(f["count"])) for f in result["final_states"]]
    return out


class ExploreJob:
    """One exploration in a daemon thread. Poll `done`; then `result` or `error`
    (`error_code` is "too_big" past max_states, "cancelled" after cancel(), "engine"
    otherwise). `states` counts distinct states (at most max_states)."""

    def __init__(
        self,
        live,
        max_states: int,
        requester,
        cmd_id,
        *,
        server_limit: int | None = None,
    ):
        self.spec = live.spec
        self.engine = live.engine
        self.state = live.machine.get_state()  # taken now, on the worker's thread
        self.position = live.position
        self.max_states = max_states
        self.server_limit = server_limit or max_states
        self.requester = requester
        self.cmd_id = cmd_id
        self.states = 0
        self.depth = 0
        self.cancelled = False
        self.result: dict | None = None
        self.error: str | None = None
        self.error_code: str | None = None
        self.started = time.monotonic()
        self.last_report = self.started
        self._thread = threading.Thread(target=self._run, name="ptviz-explore", daemon=True)

    def start(self) -> ExploreJob:
        self._thread.start()
        return self

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def cancel(self) -> None:
        self.cancelled = True

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _progress(self, states: int, depth: int) -> None:
        self.states, self.depth = states, depth
        if self.cancelled:
            raise Cancelled()

    def _run(self) -> None:
        try:
            machine = new_machine(self.spec, self.engine)
            machine.set_state(self.state)
            result = explore_json(
                self.spec, self.engine, self.max_states, machine, on_progress=self._progress
            )
            self.states = result["states"]
            result["from_position"] = self.position
            self.result = exact_counts(result)
        except Cancelled:
            self.error, self.error_code = (
                f"exploration cancelled after {self.states:,} states",
                "cancelled",
            )
        except StateBoundExceeded:
            self.error, self.error_code = self.too_big_message(), "too_big"
        except EngineError as exc:
            self.error, self.error_code = str(exc), "engine"
        except Exception as exc:  # never let a thread die silently
            self.error, self.error_code = f"exploration failed: {exc!r}", "engine"

    def too_big_message(self) -> str:
        if self.max_states < self.server_limit:
            raise_it = (
                f"raise the max states field (up to {self.server_limit:,}, this server's "
                "PTVIZ_EXPLORE_MAX_STATES)"
            )
        else:
            raise_it = (
                f"{self.server_limit:,} is this server's limit (PTVIZ_EXPLORE_MAX_STATES; "
                "the CLI has no such limit)"
            )
        return (
            f"exploration passed {self.max_states:,} states: {raise_it}, or make the scenario "
            "smaller (fewer actors, operations or leaves)"
        )
