"""Exploration for a live session: `python -m engine explore --json`'s result, computed on a
machine of its own in a background thread, with progress and cancellation.

engine.explore.explore() runs to completion in one call, so it runs in a thread (the
worker's loop keeps serving pause, step and other sessions between GIL switches) on a
fresh machine built from the session's scenario: the live machine is never touched. A thin
probe around that machine counts visited states and DFS depth for progress reports, and
stops the search by raising when the exploration is cancelled.
"""

from __future__ import annotations

import threading
import time

from engine.core import new_machine
from engine.explore import StateBoundExceeded
from engine.report import explore_json
from engine.scenario import parse_scenario
from engine.spec import build_spec
from engine.twin import EngineError


class Cancelled(Exception):
    pass


class _Probe:
    """The machine as explore() sees it, counting what it does."""

    def __init__(self, machine, job: ExploreJob):
        object.__setattr__(self, "_m", machine)
        object.__setattr__(self, "_job", job)

    def __getattr__(self, name):
        return getattr(self._m, name)

    def __setattr__(self, name, value):
        setattr(self._m, name, value)

    def state_key(self):
        job = self._job
        job.visited += 1
        if job.cancelled:
            raise Cancelled()
        return self._m.state_key()

    def save(self):
        self._job.depth += 1
        return self._m.save()

    def release(self, mark):
        self._job.depth -= 1
        return self._m.release(mark)


class ExploreJob:
    """One exploration in a daemon thread. Poll `done`; then `result` or `error`
    (`error_code` is "too_big" past max_states, "engine" otherwise)."""

    def __init__(self, scenario_text: str, engine: str, max_states: int, requester, cmd_id):
        self.scenario_text = scenario_text
        self.engine = engine
        self.max_states = max_states
        self.requester = requester
        self.cmd_id = cmd_id
        self.visited = 0
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

    def _run(self) -> None:
        try:
            spec = build_spec(parse_scenario(self.scenario_text))
            probe = _Probe(new_machine(spec, self.engine), self)
            self.result = explore_json(spec, self.engine, self.max_states, probe)
        except Cancelled:
            self.error, self.error_code = "exploration cancelled", "engine"
        except StateBoundExceeded as exc:
            self.error, self.error_code = str(exc), "too_big"
        except EngineError as exc:
            self.error, self.error_code = str(exc), "engine"
        except Exception as exc:  # never let a thread die silently
            self.error, self.error_code = f"exploration failed: {exc!r}", "engine"
