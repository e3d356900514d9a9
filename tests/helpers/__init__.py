"""Helpers shared by the tests: connectors whose "remote" a test controls
(connectors.py), polling until something happens (wait.py), the environment that makes
queue-mode workers react in seconds (timing.py), and process-group inspection
(processes.py)."""
