"""The two-region lab's status as a table (``lab status``, ``make demo``)."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def regions_table(status: dict[str, Any]) -> Table:
    table = Table(title=f"payapi two-region lab in {status['dir']}", show_header=True)
    for col in ("region", "server", "role", "pid", "where"):
        table.add_column(col)
    for name, r in status["regions"].items():
        mark = f"{name} (serving)" if name == status["active_region"] else name
        for m in r["postgres"]["members"]:
            pid = str(m["pid"] or "-")
            table.add_row(mark, f"postgres {m['name']}", m["role"], pid, f"127.0.0.1:{m['port']}")
            mark = ""
        for m in r["redis"]["members"]:
            table.add_row("", "redis", m["role"], str(m["pid"] or "-"), f"127.0.0.1:{m['port']}")
        for s in r["redis"]["sentinels"]:
            table.add_row("", "sentinel", "", str(s["pid"] or "-"), f"127.0.0.1:{s['port']}")
        for v in r["vault"]["servers"]:
            table.add_row("", "vault", "", str(v["pid"] or "-"), v["url"])
        for svc in ("sapi", "eapi"):
            table.add_row("", svc, "" if r[svc] else "replicas 0", "", r[svc] or "-")
    return table
