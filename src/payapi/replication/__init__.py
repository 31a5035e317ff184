"""Replication across regions (the next issue): observe cluster state, decide (pure),
act through payapi.systems."""
