"""Events: envelope, channel naming, the event log, publishing and per-process routing."""
