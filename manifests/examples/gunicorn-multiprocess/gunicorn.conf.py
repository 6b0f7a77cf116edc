"""gunicorn settings of the example API (illustrative)."""

bind = "0.0.0.0:8000"
workers = 4
# Recycle workers now and then, as production deployments do against leaks. Each new worker is a
# new pid with counters starting at zero; the sidecar keeps the old worker's counts, so the
# aggregated counters never go backwards.
max_requests = 2000
max_requests_jitter = 200
# gunicorn's worker heartbeat files; /tmp is an emptyDir (the root filesystem is read-only).
worker_tmp_dir = "/tmp"
accesslog = None
