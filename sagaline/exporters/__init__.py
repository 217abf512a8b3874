"""Exporters built on :mod:`sagaline.telemetry`: each ``install()``-able on its own.

- :mod:`~sagaline.exporters.logs`: one log line per transition, and the saga's ids on every
  log line written while a step runs.
- :mod:`~sagaline.exporters.prometheus`: counters of sagas by outcome and a histogram of
  step durations, served by workers over HTTP.
- :mod:`~sagaline.exporters.otel`: OpenTelemetry spans, one trace per saga.
"""
