"""What one engine worker lets its sessions hold (issue 9, item 8): settings in README.md.

- explorations: at most this many at once on the worker (each holds its search's states);
- loaded_bytes: the sessions a worker keeps loaded (their machines and checkpoints). A
  session that would take the worker past it is refused after idle sessions are unloaded.
A limit reached is the `limit` error naming the setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Quotas:
    explorations: int = 2
    loaded_bytes: int = 4 << 30
    jobs: set = field(default_factory=set)  # the worker's running ExploreJobs

    @classmethod
    def from_settings(cls) -> Quotas:
        from django.conf import settings

        return cls(
            explorations=settings.PTVIZ_EXPLORATIONS,
            loaded_bytes=settings.PTVIZ_WORKER_MEMORY_MB << 20,
        )

    def as_options(self) -> dict:
        return {
            "explorations": self.explorations,
            "loaded_bytes": self.loaded_bytes,
        }
