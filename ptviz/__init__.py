"""ptviz: the Django project around the engine (DESIGN.md, "Processes").

`ptviz.debugger` is the web app (models, views, websocket consumer, commands);
`ptviz.engine_worker` owns live sessions (SessionHost) and its two transports.
"""
