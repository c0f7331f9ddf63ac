from django.apps import AppConfig


class DebuggerConfig(AppConfig):
    """The web debugger: sessions, recordings, share links, the websocket consumer."""

    name = "ptviz.debugger"
    label = "debugger"
    verbose_name = "ptviz debugger"
    default_auto_field = "django.db.models.BigAutoField"
