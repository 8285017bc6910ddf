"""What every component shares and nothing Redis-specific: handler running, backoff, life cycle."""
