"""Helpers shared by the tests: connectors whose "remote" a test controls
(connectors.py), polling until something happens (wait.py), the environment that makes
queue-mode workers react in seconds (timing.py), process-group inspection
(processes.py), and hostile bundle archives (bundle_bombs.py)."""
