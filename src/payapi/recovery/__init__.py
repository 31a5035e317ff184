"""Recovery procedures as runbooks (the next issues): runbooks as data, the step
catalogue, an executor that writes a journal."""
