"""What the stages report: the event interface they call (events.py) and why
each trace happened, told through the `tracejit` logger (log.py)."""
