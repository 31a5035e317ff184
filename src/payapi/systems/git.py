"""The ``git`` CLI, isolated: no user or system config, no hooks, no signing, no
credential helpers, no ``ext::`` transport, a fixed author; errors without the
user-info of any URL."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

from payapi.core.errors import PayapiError


class GitError(PayapiError):
    """git failed; the message is its last lines of stderr, without URL user-info."""


# --------------------------------------------------------------------------- git


class Git:
    """The ``git`` CLI on one working tree, isolated from user and system config."""

    def __init__(self, work: Path, name: str, email: str) -> None:
        self.work = work
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("GIT_") or k in ("GIT_SSH", "GIT_SSH_COMMAND", "GIT_SSL_CAINFO")
        }
        env.update(
            GIT_CONFIG_NOSYSTEM="1",
            GIT_CONFIG_GLOBAL=os.devnull,
            GIT_TERMINAL_PROMPT="0",
            GIT_AUTHOR_NAME=name,
            GIT_AUTHOR_EMAIL=email,
            GIT_COMMITTER_NAME=name,
            GIT_COMMITTER_EMAIL=email,
            LC_ALL="C",
        )
        self.env = env

    def __call__(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 120.0,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        argv = [
            "git",
            "-C",
            str(self.work),
            "-c",
            "core.hooksPath=" + os.devnull,
            "-c",
            "commit.gpgsign=false",
            "-c",
            "core.autocrlf=false",
            "-c",
            "core.quotepath=off",
            "-c",
            "credential.helper=",
            "-c",
            "protocol.ext.allow=never",
            *args,
        ]
        try:
            res = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                env={**self.env, **(env or {})},
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            raise GitError("git is not installed") from None
        except subprocess.TimeoutExpired:
            raise GitError(f"git {args[0]} timed out after {timeout:.0f} s") from None
        if check and res.returncode != 0:
            raise GitError(f"git {args[0]} failed: {git_error(res.stderr)}")
        return res


def git_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    text = " ".join(lines[-3:]) or "no detail"
    return re.sub(r"(\w+://)[^/@\s]+@", r"\1", text)  # drop user-info from URLs
