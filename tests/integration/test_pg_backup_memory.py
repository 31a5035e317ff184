"""Peak memory of a backup of a database larger than the memory target.

The backup streams ``pg_basebackup``'s tar through compression and encryption into the
repository chunk by chunk; nothing the size of the database is ever held. This test
backs up a ~290 MB database (one ``generate_series`` INSERT, archiving off: only the
backup is measured) and reads the peak RSS of the ``payapi backup run`` process tree
(``RUSAGE_CHILDREN`` of a wrapper: the largest of payapi and pg_basebackup).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.integration.pg_backup_env import make_env

TARGET_BYTES = 256 << 20

_WRAPPER = textwrap.dedent(
    """
    import json, resource, subprocess, sys
    res = subprocess.run(sys.argv[1:], capture_output=True, text=True)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"rc": res.returncode, "stdout": res.stdout, "stderr": res.stderr,
                      "peak_bytes": peak_kib * 1024}))
    """
)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_backup_of_a_database_larger_than_the_target_stays_under_it() -> None:
    env = make_env(prefix="payapi-rss-", archive=False)
    try:
        env.psql(
            "CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 7) AS pad "
            "FROM generate_series(1, 1100000) g"
        )
        size = int(env.psql("SELECT pg_database_size('payment_db')"))
        assert size > TARGET_BYTES
        argv = [sys.executable, "-m", "payapi", "--config", str(env.config),
                "backup", "run", "--component", "db", "--full", "--json"]  # fmt: skip
        res = subprocess.run(
            [sys.executable, "-c", _WRAPPER, *argv],
            capture_output=True, text=True, timeout=800, check=True,
        )  # fmt: skip
        measured = json.loads(res.stdout)
        assert measured["rc"] == 0, measured["stderr"]
        backup = json.loads(measured["stdout"])
        assert backup["bytes"] > TARGET_BYTES
        peak = measured["peak_bytes"]
        print(f"backup of {backup['bytes'] >> 20} MiB: peak RSS {peak >> 20} MiB")
        assert peak < TARGET_BYTES, f"peak RSS {peak >> 20} MiB"
    finally:
        env.close()
