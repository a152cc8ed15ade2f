"""Metrics (Ray's metrics pipeline), traces (OpenTelemetry) and structured logs of the serving app."""
