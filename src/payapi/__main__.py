import sys

# `python -m payapi wal push %p` runs once per WAL segment: start reading the segment on a
# thread first (it overlaps the imports below), then skip the CLI framework.
from payapi.backup.wal_prefetch import prefetch_for_argv

_prepared = prefetch_for_argv(sys.argv[1:])

from payapi.backup.wal import fast_path  # noqa: E402

fast_path(sys.argv[1:], hard_exit=True, prepared=_prepared)

from payapi.cli.main import main  # noqa: E402

main()
