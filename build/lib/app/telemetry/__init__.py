"""What the server tells about itself: Prometheus metrics (``metrics``), OpenTelemetry
traces of runs (``tracing``, opt-in) and JSON log lines (``json_logs``)."""
