"""HTTP routes (docs/protocol.md, "HTTP"); the websocket route is in debugger/routing.py."""

from django.urls import path

from ptviz.debugger import bugreports, views

urlpatterns = [
    path("", views.gallery, name="gallery"),
    path("sessions/new", views.session_new, name="session-new"),
    path("s/<str:token>/", views.session_page, name="session-page"),
    path("sessions/<uuid:session_id>/fork", views.session_fork, name="session-fork"),
    path("sessions/<uuid:session_id>/links", views.session_links, name="session-links"),
    path(
        "sessions/<uuid:session_id>/links/<str:token>/revoke",
        views.link_revoke,
        name="link-revoke",
    ),
    path("sessions/<uuid:session_id>/recording.json", views.recording, name="recording"),
    path("recordings/import", views.recording_import, name="recording-import"),
    path("sessions/<uuid:session_id>/bundle", bugreports.bundle_export, name="bundle"),
    path("sessions/<uuid:session_id>/report", bugreports.report, name="report"),
    path("bundles/import", bugreports.bundle_import, name="bundle-import"),
    path("dumps/import", bugreports.dump_import, name="dump-import"),
    path("docs/protocol", views.protocol_doc, name="protocol-doc"),
]
