"""The generic actions every runbook may use: ``noop``, ``sleep``, ``shell`` (an argv,
never a shell string), ``http_check`` (GET a URL, expect a status) and ``fail`` (fails on
purpose: for tests and drills of the engine itself)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Annotated

import httpx
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from payapi.core.logs import _SENSITIVE as _SECRET_NAME
from payapi.core.redaction import redact_url
from payapi.recovery.actions import Action, ActionContext, ActionFailed, register
from payapi.recovery.runbook import seconds

OUTPUT_CHARS = 500  # what a journal line keeps of an output


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= OUTPUT_CHARS else line[: OUTPUT_CHARS - 1] + "…"


class NoopParams(_Params):
    message: str = ""


@register
class Noop(Action[NoopParams]):
    name = "noop"
    Params = NoopParams

    def run(self, params: NoopParams, ctx: ActionContext) -> str:
        return params.message or "nothing to do"

    def describe(self, params: NoopParams, ctx: ActionContext) -> str:
        return f"nothing ({params.message})" if params.message else "nothing"


class SleepParams(_Params):
    seconds: Annotated[float, BeforeValidator(seconds)]


@register
class Sleep(Action[SleepParams]):
    name = "sleep"
    Params = SleepParams

    def run(self, params: SleepParams, ctx: ActionContext) -> str:
        if params.seconds > ctx.timeout:
            time.sleep(ctx.timeout)
            raise ActionFailed(
                f"timed out after {ctx.timeout:g}s (asked to sleep {params.seconds:g}s)"
            )
        time.sleep(params.seconds)
        return f"slept {params.seconds:g}s"

    def describe(self, params: SleepParams, ctx: ActionContext) -> str:
        return f"wait {params.seconds:g}s"


class ShellParams(_Params):
    argv: list[str] = Field(min_length=1)
    cwd: Path | None = None
    env: dict[str, str] = Field(default_factory=dict)
    expect_exit: int = 0

    @field_validator("env")
    @classmethod
    def _no_secrets(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if _SECRET_NAME.search(key):
                raise ValueError(
                    f"{key} looks like a secret; runbooks never hold secrets (let the "
                    "command read it from where it lives)"
                )
        return value


@register
class Shell(Action[ShellParams]):
    """Runs one program with its arguments (no shell: ``sh -c`` only if a runbook says
    so, visibly). Its environment is payapi's plus ``env``."""

    name = "shell"
    Params = ShellParams

    def run(self, params: ShellParams, ctx: ActionContext) -> str:
        import os

        try:
            res = subprocess.run(
                params.argv,
                cwd=params.cwd,
                env={**os.environ, **params.env},
                capture_output=True,
                text=True,
                timeout=ctx.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ActionFailed(f"{params.argv[0]}: timed out after {ctx.timeout:g}s") from None
        except OSError as exc:
            raise ActionFailed(f"{params.argv[0]}: {exc.strerror or exc}") from None
        out = _one_line(res.stdout or res.stderr)
        if res.returncode != params.expect_exit:
            err = _one_line(res.stderr or res.stdout)
            raise ActionFailed(f"{params.argv[0]} exited {res.returncode}: {err}")
        return out or f"{params.argv[0]} exited {res.returncode}"

    def describe(self, params: ShellParams, ctx: ActionContext) -> str:
        found = shutil.which(params.argv[0])
        where = f"found at {found}" if found else "NOT FOUND on PATH"
        return f"run {params.argv!r} ({params.argv[0]} {where})"


class HttpCheckParams(_Params):
    url: str = Field(pattern=r"^https?://")
    expect_status: int = Field(default=200, ge=100, le=599)


@register
class HttpCheck(Action[HttpCheckParams]):
    name = "http_check"
    Params = HttpCheckParams

    def _status(self, url: str, timeout: float) -> int:
        with httpx.Client(timeout=timeout, trust_env=False) as client:
            return client.get(url).status_code

    def run(self, params: HttpCheckParams, ctx: ActionContext) -> str:
        shown = redact_url(params.url, keep_user=False)
        try:
            status = self._status(params.url, ctx.timeout)
        except httpx.HTTPError as exc:
            raise ActionFailed(f"GET {shown}: {type(exc).__name__}") from None
        if status != params.expect_status:
            raise ActionFailed(f"GET {shown}: {status}, expected {params.expect_status}")
        return f"GET {shown}: {status}"

    def describe(self, params: HttpCheckParams, ctx: ActionContext) -> str:
        shown = redact_url(params.url, keep_user=False)
        try:  # a GET changes nothing: the approver sees what it answers now
            now = str(self._status(params.url, min(ctx.timeout, 3.0)))
        except httpx.HTTPError as exc:
            now = type(exc).__name__
        return f"GET {shown}, expect {params.expect_status} (now: {now})"


class FailParams(_Params):
    message: str = "failed on purpose"
    # Fail attempts 1..N and succeed after (a flaky step); None: fail every attempt.
    attempts: int | None = Field(default=None, ge=0)


@register
class Fail(Action[FailParams]):
    name = "fail"
    Params = FailParams

    def run(self, params: FailParams, ctx: ActionContext) -> str:
        if params.attempts is None or ctx.attempt <= params.attempts:
            raise ActionFailed(params.message)
        return f"succeeded at attempt {ctx.attempt}"

    def describe(self, params: FailParams, ctx: ActionContext) -> str:
        if params.attempts is None:
            return f"fail ({params.message})"
        return f"fail the first {params.attempts} attempt(s), then succeed"
