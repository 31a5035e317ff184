import sys

from payapi.backup.wal import fast_path

# `python -m payapi wal push %p` runs once per WAL segment: skip the CLI framework.
fast_path(sys.argv[1:], hard_exit=True)

from payapi.cli.main import main  # noqa: E402

main()
