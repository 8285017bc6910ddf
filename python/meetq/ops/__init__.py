"""Operations: the `meetq` command line, the demo, metrics and the dashboard."""
