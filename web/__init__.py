"""The technician's local view: a read-only page with charts, /metrics and /healthz.

``view`` reads the store (read-only), ``series`` shapes chart data (pure),
``pages`` renders HTML (pure), ``metrics`` is the Prometheus collector,
``app`` the WSGI application and ``server`` the waitress thread the supervisor
starts when ``web.listen`` is set. ``static/`` holds the page's script and
style and the vendored uPlot (MIT, ``static/uPlot.LICENSE``).
"""
