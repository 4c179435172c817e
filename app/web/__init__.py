"""The worker's web endpoint: the views (views.py), the HTML status page (status_page.py),
liveness and readiness (health.py)."""
