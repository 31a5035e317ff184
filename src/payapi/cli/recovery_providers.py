"""The lab's code the recovery engine runs, handed to it from here: :mod:`payapi.recovery`
may not import :mod:`payapi.lab` (the layers contract), so the CLI installs providers
before it runs, resumes or approves a run.

One function per provider, so that each can be installed (and merged) on its own.
"""

from __future__ import annotations


def install_system_recovery() -> None:
    """The ``system_recovery`` action of the ``system-recovery`` runbook: the lab's
    rebuilds (into a folder, into a region) as :mod:`payapi.lab.system_recovery`."""
    from payapi.lab.system_recovery import LabSystemRecovery
    from payapi.recovery import actions_system

    actions_system.install(LabSystemRecovery())
