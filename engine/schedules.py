"""Schedules for people: run-length encoded, folded to one line (issue 7).

A schedule is a list of actor names, one per micro-step. Long ones (a 1 GiB write-protect
is 786,960 steps) are never printed whole: text folds them (`host0 x 786,948`), JSON
carries a schedule longer than SCHEDULE_LISTED_MAX as `schedule_rle` ([[name, count],
...]) in place of `schedule` (README, "Extensions to the contract").
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

SCHEDULE_LISTED_MAX = 10_000
LINE_MAX = 200  # a schedule up to this long prints as `run --schedule` takes it


class RunLength(Sequence):
    """A schedule held as its runs ([[name, count], ...]), as a core's run hands it back:
    a sequence of names that never holds one per micro-step (`run` of a million leaves
    is millions of steps)."""

    def __init__(self, runs: list[list]):
        self.runs: list[list] = []
        for name, count in runs:
            if count <= 0:
                continue
            if self.runs and self.runs[-1][0] == name:
                self.runs[-1][1] += count
            else:
                self.runs.append([name, count])
        self.total = sum(n for _, n in self.runs)

    def __len__(self) -> int:
        return self.total

    def named(self, names: list[str]) -> RunLength:
        """Runs of actor indexes as runs of their names."""
        return RunLength([[names[a], n] for a, n in self.runs])

    def __iter__(self) -> Iterator[str]:
        for name, count in self.runs:
            for _ in range(count):
                yield name

    def __getitem__(self, index):
        if isinstance(index, slice):
            return list(self)[index]
        if index < 0:
            index += self.total
        if not 0 <= index < self.total:
            raise IndexError(index)
        for name, count in self.runs:
            if index < count:
                return name
            index -= count
        raise IndexError(index)

    def __add__(self, other) -> list:
        return list(self) + list(other)

    def __radd__(self, other) -> list:
        return list(other) + list(self)

    def __eq__(self, other) -> bool:
        return list(self) == list(other) if isinstance(other, Sequence) else NotImplemented


def rle(schedule: Sequence[str]) -> list[list]:
    """[[name, count], ...] for runs of one actor."""
    if isinstance(schedule, RunLength):
        return [list(run) for run in schedule.runs]
    out: list[list] = []
    for name in schedule:
        if out and out[-1][0] == name:
            out[-1][1] += 1
        else:
            out.append([name, 1])
    return out


def expand(runs: list[list]) -> list[str]:
    return [name for name, count in runs for _ in range(count)]


def fold(schedule: list[str], width: int = LINE_MAX) -> str:
    """The schedule on one line: comma-separated when it fits, else runs (`host0 x 4`),
    cut with a count of what is left when even those do not fit."""
    plain = ",".join(schedule) if len(schedule) <= width else ""  # (a name and a comma each)
    if plain and len(plain) <= width:
        return plain
    parts = [name if n == 1 else f"{name} x {n:,}" for name, n in rle(schedule)]
    line = ", ".join(parts)
    if len(line) <= width:
        return line
    shown: list[str] = []
    used = 0
    for part in parts:
        if used + len(part) + 2 > width - 40:
            break
        shown.append(part)
        used += len(part) + 2
    rest = sum(n for _, n in rle(schedule)[len(shown) :])
    return f"{', '.join(shown)}, ... ({rest:,} more steps; {len(schedule):,} in all)"


def compact_schedule(obj: dict, key: str) -> dict:
    """obj with its schedule `key` as JSON: a list, or `key_rle` runs when longer than
    SCHEDULE_LISTED_MAX."""
    schedule = obj.get(key)
    if isinstance(schedule, list | RunLength) and len(schedule) > SCHEDULE_LISTED_MAX:
        obj[f"{key}_rle"] = rle(schedule)
        del obj[key]
    elif isinstance(schedule, RunLength):
        obj[key] = list(schedule)
    return obj


def compact_json(out: dict) -> dict:
    """`run`/`explore`/`replay` JSON with long schedules as `*_rle` fields only."""
    compact_schedule(out, "schedule")
    for final in out.get("final_states", []):
        compact_schedule(final, "example_schedule")
    for violation in out.get("violations", []):
        compact_schedule(violation, "schedule")
    return out
