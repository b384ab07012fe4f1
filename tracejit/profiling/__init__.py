"""The profiler: `profile`, `profiler` (profiler.py), their text (text.py) and
a Chrome/Perfetto timeline (timeline.py)."""
