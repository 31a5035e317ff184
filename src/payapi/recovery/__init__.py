"""Recovery procedures: the regional failover (``regional``, decided in
``regional_plan``) and the runbook engine (runbooks as data, the action registry, a pure
planner, an executor that writes a resumable journal; see docs/runbooks.md)."""
