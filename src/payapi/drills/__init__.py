"""DR drills (the next issues): scenarios, the traffic probe, RTO/RPO arithmetic, reports."""
