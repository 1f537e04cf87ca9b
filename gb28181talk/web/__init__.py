"""The HTTP API: ZLMediaKit-compatible ``/index/api/*``, native JSON ``/api/*``, ``/metrics``."""
