"""Queue mode: connectors deployed to Redis, refreshed by RQ workers."""
