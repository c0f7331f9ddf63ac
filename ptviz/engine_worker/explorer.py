"""Exploration for a live session: `python -m engine explore --json`'s result, computed in a
process of its own, with progress, a memory limit and cancellation.

engine.explore.explore() runs to completion in one call and its state set grows with the
search (a 4,096-leaf scenario: about 0.5 GB). Running it in a child process
(`python -m ptviz.engine_worker.explorer`, JSON lines over its stdin/stdout) keeps that
memory out of the worker (it is returned when the process ends), lets the worker's loop
and its other sessions run without sharing a GIL with the search, bounds the memory with
RLIMIT_AS, and makes cancelling immediate (the process is killed). A thin probe around the
child's machine counts visited states and DFS depth for the progress reports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

from ptviz import protocol as P

PROGRESS_EVERY = 0.25  # seconds between the child's progress lines


class _Probe:
    """The machine as explore() sees it, counting what it does."""

    def __init__(self, machine, report):
        object.__setattr__(self, "_m", machine)
        object.__setattr__(self, "_report", report)
        object.__setattr__(self, "visited", 0)
        object.__setattr__(self, "depth", 0)
        object.__setattr__(self, "_next", time.monotonic() + PROGRESS_EVERY)

    def __getattr__(self, name):
        return getattr(self._m, name)

    def __setattr__(self, name, value):
        if name in ("visited", "depth", "_next"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._m, name, value)

    def state_key(self):
        self.visited += 1
        if self.visited & 255 == 0 and time.monotonic() > self._next:
            self._next = time.monotonic() + PROGRESS_EVERY
            self._report({"progress": [self.visited, self.depth]})
        return self._m.state_key()

    def save(self):
        self.depth += 1
        return self._m.save()

    def release(self, mark):
        self.depth -= 1
        return self._m.release(mark)


def _vm_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def child_main() -> None:
    """The child: one request on stdin; progress lines, then one answer, on stdout."""
    out = sys.stdout

    def report(obj) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    from engine.core import new_machine
    from engine.explore import StateBoundExceeded
    from engine.report import explore_json
    from engine.scenario import parse_scenario
    from engine.spec import build_spec
    from engine.twin import EngineError

    req = json.loads(sys.stdin.readline())
    memory = int(req.get("memory_bytes") or 0)
    if memory:
        import resource

        limit = _vm_bytes() + memory  # on top of what the interpreter maps already
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        spec = build_spec(parse_scenario(req["scenario"]))
        probe = _Probe(new_machine(spec, req["engine"]), report)
        result = explore_json(spec, req["engine"], req["max_states"], probe)
        report({"progress": [probe.visited, probe.depth]})
        report({"ok": result})
    except StateBoundExceeded as exc:
        report({"error": [P.TOO_BIG, str(exc)]})
    except MemoryError:
        report(
            {
                "error": [
                    P.LIMIT,
                    f"the exploration needs more memory than this server's limit of "
                    f"{memory >> 20} MiB (PTVIZ_EXPLORE_MEMORY_MB); lower max_states",
                ]
            }
        )
    except EngineError as exc:
        report({"error": [P.ENGINE, str(exc)]})
    except Exception as exc:  # never end without an answer
        report({"error": [P.ENGINE, f"exploration failed: {exc!r}"]})


class ExploreJob:
    """One exploration in a child process. Poll `done`; then `result` or `error`
    (`error_code`: "too_big" past max_states, "limit" past the memory limit, "engine"
    otherwise)."""

    def __init__(
        self,
        scenario_text: str,
        engine: str,
        max_states: int,
        requester,
        cmd_id,
        memory_bytes: int = 0,
    ):
        self.request = {
            "scenario": scenario_text,
            "engine": engine,
            "max_states": max_states,
            "memory_bytes": memory_bytes,
        }
        self.requester = requester
        self.cmd_id = cmd_id
        self.visited = 0
        self.depth = 0
        self.cancelled = False
        self.result: dict | None = None
        self.error: str | None = None
        self.error_code: str | None = None
        self.answered = threading.Event()
        self.started = time.monotonic()
        self.last_report = self.started
        self._proc: subprocess.Popen | None = None

    def start(self) -> ExploreJob:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "ptviz.engine_worker.explorer"],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, name="ptviz-explore-reader", daemon=True).start()
        return self

    def _read(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(self.request) + "\n")
            proc.stdin.close()
            for line in proc.stdout:
                msg = json.loads(line)
                if "progress" in msg:
                    self.visited, self.depth = msg["progress"]
                elif "ok" in msg:
                    self.result = msg["ok"]
                else:
                    self.error_code, self.error = msg["error"]
        except (OSError, ValueError):
            pass
        finally:
            code = proc.wait()
            if self.cancelled:
                self.result, self.error_code, self.error = None, P.ENGINE, "exploration cancelled"
            elif self.result is None and self.error is None:
                self.error_code = P.ENGINE
                self.error = f"the exploration process ended without an answer (exit {code})"
            self.answered.set()

    @property
    def finished(self) -> bool:
        return self.answered.is_set()

    @property
    def done(self) -> bool:
        return self.answered.is_set()

    def cancel(self) -> None:
        """Stop now; `done` then reports "exploration cancelled"."""
        if self.answered.is_set() or self._proc is None:
            return
        self.cancelled = True
        self._proc.kill()
        self.answered.wait(5)


if __name__ == "__main__":
    child_main()
