"""Running the service: Prometheus metrics (metrics.py) and systemd notifications (notify.py).
May import decode (for its counters) and the shared modules; nothing that handles frames."""
