"""Engine workers: the processes that own live sessions (DESIGN.md, "Processes").

host.py      SessionHost: one live session, the protocol commands, persistence, deltas
loop.py      EngineLoop: the sessions of one worker, leases, heartbeats, run slices
store.py     the database side: load from a recording (checkpoints), append, leases
explorer.py  exploration in a child process, with progress; the CLI's explore JSON
distributed.py  the worker on the Redis channel layer (`manage.py engineworker`)
embedded.py  N worker processes started with the server, and their bridge
"""
