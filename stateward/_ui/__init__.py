"""``stateward ui``: an HTTP API and web pages over a runtime's out-of-band admin.

``app.make_app`` builds the ASGI application (Starlette) for an open runtime;
``app.serve`` serves it with Hypercorn's trio worker in the runtime's trio loop. The
application reaches the store only through ``rt.state`` and ``rt.runs``, so the
supervisor stays the store's only owner.

Modules: ``data`` (what the API and pages read and write, and their errors),
``api`` (the Airflow-compatible state-store routes and stateward's own), ``pages``
(server-rendered HTML), ``charts`` (SVG drawn on the server), ``auth`` (token, cookie,
CSRF, read-only), ``app`` (the routing table and the server).
"""
