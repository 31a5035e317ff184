"""WAL archiving: ``payapi wal push %p`` (archive_command), ``payapi wal fetch %f %p``
(restore_command).

PostgreSQL runs ``archive_command`` once per WAL segment, so start-up cost is paid per
16 MB of WAL. This module therefore imports only the standard library at import time,
and the repository's base (:mod:`payapi.backup.repository_base`: cryptography,
zstandard, no pydantic) when it acts — never
typer, rich, pydantic-settings, FastAPI or an SDK for a store that is not used.
``python -m payapi`` and the ``payapi`` script hand a plain ``wal push``/``wal fetch``
command line to :func:`fast_path` before the CLI framework is imported; anything else
(``--help``, a typo) goes to the full CLI, which calls the same functions.

Semantics (the repository enforces them, see ``docs/repository-format.md``):

- push: the segment is compressed, encrypted and checksummed; pushing the same content
  twice succeeds and changes nothing; a different segment under an archived name is
  refused (exit 1, PostgreSQL keeps the segment and retries; an operator must look).
- fetch: exit 1 when the file is not in the archive (PostgreSQL's way of finding the end
  of the archive). With ``--abort-on-damage`` (what :mod:`payapi.backup.restore` writes
  into ``restore_command``), a segment that *is* archived but fails its checks, or a
  repository that cannot be reached, exits 126, which makes PostgreSQL abort recovery
  instead of treating the damage as the end of the archive and silently stopping early.

The repository settings are the ``[backup]`` section of ``payapi.toml`` (``--config`` or
``$PAYAPI_CONFIG``), overridden by ``$PAYAPI_BACKUP__REPOSITORY`` etc. like every other
setting, or by ``--repository``/``--key-file``.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

if TYPE_CHECKING:
    from payapi.backup.repository_base import RepositoryBase
    from payapi.backup.wal_prefetch import PreparedSegment

from payapi.core.errors import PayapiError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ABORT_RECOVERY = 126  # > 125: PostgreSQL treats it as fatal, not as "no such file"

CONFIG_ENV = "PAYAPI_CONFIG"
DEFAULT_KEY_ENV = "PAYAPI_BACKUP_KEY"  # = payapi.backup.crypto.KEY_ENV (not imported: light)


class WalError(PayapiError):
    """A push or fetch could not be done; one line for the operator (or the server log)."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code
        self.exit_code = code


PRIMARY = "primary"  # = payapi.core.settings.PRIMARY
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_SECONDARY_FIELDS = ("url", "key_file", "key_env", "s3_endpoint_url", "s3_sse", "s3_region", "wal")


# Value objects are NamedTuples, not dataclasses, on this path: importing dataclasses
# (it imports inspect, ast, dis...) costs about 15 ms, paid once per WAL segment.
class RepositoryRef(NamedTuple):
    """Where the repository is and where its key comes from (never the key itself)."""

    url: str
    key_file: Path | None = None
    key_env: str = DEFAULT_KEY_ENV
    s3_endpoint_url: str | None = None
    s3_sse: str | None = "AES256"
    name: str = PRIMARY
    s3_region: str | None = None
    wal: str = "push"  # for a secondary: push | require | copy (see payapi.core.settings)


def _env(environ: Mapping[str, str], name: str) -> str | None:
    """``PAYAPI_BACKUP__<NAME>``, case-insensitively (as pydantic-settings reads it)."""
    want = f"PAYAPI_BACKUP__{name}".upper()
    for key, value in environ.items():
        if key.upper() == want:
            return value
    return None


def _backup_section(
    config: Path | str | None, env: Mapping[str, str]
) -> tuple[dict[str, object], Path | None]:
    raw = config if config is not None else env.get(CONFIG_ENV)
    if not raw:
        return {}, None
    import tomllib

    path = Path(raw).expanduser().resolve()
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise WalError(f"config file not found: {path}") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise WalError(f"cannot read config {path}: {exc}") from None
    found = doc.get("backup", {})
    return (dict(found) if isinstance(found, dict) else {}), path.parent


def _secondaries(
    section: Mapping[str, object], env: Mapping[str, str]
) -> dict[str, dict[str, str]]:
    """``[backup.secondary.NAME]`` tables, with ``$PAYAPI_BACKUP__SECONDARY__NAME__FIELD``
    over them (names lowercased, as pydantic-settings reads them)."""
    out: dict[str, dict[str, str]] = {}
    tables = section.get("secondary", section.get("secondaries"))
    if isinstance(tables, dict):
        for name, table in tables.items():
            if isinstance(table, dict):
                out[str(name)] = {k: str(v) for k, v in table.items() if v is not None}
    head = "PAYAPI_BACKUP__SECONDARY__"
    for key, value in env.items():
        if not key.upper().startswith(head):
            continue
        name, sep, field = key[len(head) :].partition("__")
        if sep and field.lower() in _SECONDARY_FIELDS:
            out.setdefault(name.lower(), {})[field.lower()] = value
    return out


def _resolve_key_path(kf: str | Path | None, base: Path | None) -> Path | None:
    if not kf:
        return None
    key_path = Path(kf).expanduser()
    if not key_path.is_absolute():
        key_path = ((base or Path.cwd()) / key_path).resolve()
    return key_path


def _sse(value: str | None) -> str | None:
    return None if value in ("", "none", "None") else (value or "AES256")


def _secondary_ref(
    name: str, table: Mapping[str, str], primary: RepositoryRef, base: Path | None
) -> RepositoryRef:
    url = table.get("url", "")
    if not url:
        raise WalError(f"secondary repository {name} has no url", EXIT_USAGE)
    own_key = "key_file" in table or "key_env" in table
    return RepositoryRef(
        url=url,
        key_file=_resolve_key_path(table.get("key_file"), base) if own_key else primary.key_file,
        key_env=table.get("key_env") or primary.key_env,
        s3_endpoint_url=table.get("s3_endpoint_url"),
        s3_sse=_sse(table.get("s3_sse")),
        name=name,
        s3_region=table.get("s3_region"),
        wal=table.get("wal", "push"),
    )


def secondary_refs(
    config: Path | str | None = None, *, environ: Mapping[str, str] | None = None
) -> list[RepositoryRef]:
    """The configured secondary repositories (by name), read as lightly as the primary."""
    env = os.environ if environ is None else environ
    section, base = _backup_section(config, env)
    primary = repository_ref(config, environ=env)
    tables = _secondaries(section, env)
    return [_secondary_ref(n, tables[n], primary, base) for n in sorted(tables)]


def repository_ref(
    config: Path | str | None = None,
    *,
    repository: str | None = None,
    key_file: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
) -> RepositoryRef:
    """Read the ``[backup]`` section without the settings framework (it costs ~0.2 s).

    Same precedence as :func:`payapi.core.settings.load_settings`: explicit arguments, then
    ``$PAYAPI_BACKUP__*``, then the TOML file; relative paths are relative to the file.
    ``repository`` is a URL, or the name of a configured repository (``primary`` or a
    ``[backup.secondary.NAME]``), whose own key and S3 settings are then used.
    """
    env = os.environ if environ is None else environ
    section, base = _backup_section(config, env)

    def pick(name: str) -> str | None:
        value = _env(env, name.upper())
        if value is None:
            v = section.get(name)
            value = None if v is None else str(v)
        return value

    if repository is not None and _NAME.match(repository):
        tables = _secondaries(section, env)
        if repository == PRIMARY:
            repository = None
        elif repository in tables:
            primary = repository_ref(config, environ=env)
            ref = _secondary_ref(repository, tables[repository], primary, base)
            if key_file is not None:
                ref = ref._replace(key_file=_resolve_key_path(key_file, base))
            return ref
    url = repository or pick("repository") or ""
    if not url:
        raise WalError(
            "no backup repository: set [backup] repository in the config "
            "(or $PAYAPI_BACKUP__REPOSITORY)",
            EXIT_USAGE,
        )
    key_path = _resolve_key_path(key_file if key_file is not None else pick("key_file"), base)
    return RepositoryRef(
        url=url,
        key_file=key_path,
        key_env=pick("key_env") or DEFAULT_KEY_ENV,
        s3_endpoint_url=pick("s3_endpoint_url"),
        s3_sse=_sse(pick("s3_sse")),
    )


def open_repository(ref: RepositoryRef, **store_options: Any) -> RepositoryBase:
    """The repository's base (config and WAL): no pydantic, no backup code imported."""
    from payapi.backup.repository_base import RepositoryBase

    return RepositoryBase.open_configured(
        ref.url,
        key_file=ref.key_file,
        key_env=ref.key_env,
        s3_endpoint_url=ref.s3_endpoint_url,
        s3_sse=ref.s3_sse,
        s3_region=ref.s3_region,
        **store_options,
    )


def push(
    repo: RepositoryBase, path: Path | str, *, prepared: PreparedSegment | None = None
) -> bool:
    """Archive the file at ``path`` under its own name. True if stored, False if the same
    content was already there; :class:`WalConflict` if different content was.
    ``prepared``: the same file, already being read on a thread (see :func:`fast_path`)."""
    p = Path(path)
    if not p.is_file():
        raise WalError(f"WAL file {p} does not exist")
    return repo.put_wal(p.name, p, prepared=prepared)


def fetch(repo: RepositoryBase, name: str, dest: Path | str) -> None:
    """Write archived file ``name`` to ``dest`` (checked before it is renamed into place)."""
    repo.get_wal(name, dest)


# --------------------------------------------------------------------------- commands


def _quote(word: str) -> str:
    import shlex

    return shlex.quote(word)


def _options(repository: str | None, key_file: Path | str | None) -> str:
    out = ""
    if repository:
        out += f" --repository {_quote(repository)}"
    if key_file:
        out += f" --key-file {_quote(str(Path(key_file).absolute()))}"
    return out


def _base(python: str | None, config: Path | str | None) -> str:
    words = [str(Path(python or sys.executable).absolute()), "-m", "payapi"]
    if config is not None:
        words += ["--config", str(Path(config).absolute())]
    return " ".join(_quote(w) for w in words)


def archive_command(
    config: Path | str | None,
    *,
    python: str | None = None,
    repository: str | None = None,
    key_file: Path | str | None = None,
) -> str:
    """The ``archive_command`` value (unquoted) that pushes into the configured repository."""
    return f"{_base(python, config)} wal push{_options(repository, key_file)} %p"


def restore_command(
    config: Path | str | None,
    *,
    python: str | None = None,
    repository: str | None = None,
    key_file: Path | str | None = None,
) -> str:
    """The ``restore_command`` value (unquoted); damage aborts recovery (see module doc)."""
    opts = _options(repository, key_file)
    return f"{_base(python, config)} wal fetch --abort-on-damage{opts} %f %p"


def guc_string(value: str) -> str:
    """A value quoted for ``postgresql.conf``."""
    return "'" + value.replace("'", "''") + "'"


# --------------------------------------------------------------------------- the fast path


class Invocation(NamedTuple):
    action: str  # push | fetch
    args: tuple[str, ...]
    config: str | None = None
    repository: str | None = None
    key_file: str | None = None
    abort_on_damage: bool = False


def parse_argv(argv: Sequence[str]) -> Invocation | None:
    """A plain ``[--config C] wal push|fetch [options] ARGS`` command line, or None.

    None means "not for the fast path": help, an unknown option or a wrong number of
    arguments is left to the full CLI, which prints proper usage.
    """
    args = list(argv)
    config: str | None = None
    while args and args[0].startswith("--config"):
        if args[0] == "--config" and len(args) >= 2:
            config, args = args[1], args[2:]
        elif args[0].startswith("--config="):
            config, args = args[0].split("=", 1)[1], args[1:]
        else:
            return None
    if len(args) < 2 or args[0] != "wal" or args[1] not in ("push", "fetch"):
        return None
    inv = Invocation(action=args[1], args=(), config=config)
    rest = args[2:]
    positional: list[str] = []
    while rest:
        word = rest.pop(0)
        if word == "--":
            positional += rest
            break
        name, eq, value = word.partition("=")
        if name in ("--repository", "--key-file") and (eq or rest):
            value = value if eq else rest.pop(0)
            if name == "--repository":
                inv = inv._replace(repository=value)
            else:
                inv = inv._replace(key_file=value)
        elif word == "--abort-on-damage" and inv.action == "fetch":
            inv = inv._replace(abort_on_damage=True)
        elif word.startswith("-") and word != "-":
            return None
        else:
            positional.append(word)
    want = 1 if inv.action == "push" else 2
    if len(positional) != want:
        return None
    return inv._replace(args=tuple(positional))


def _say(message: str, what: str = "error") -> None:
    sys.stderr.write(f"{what}: {' '.join(message.split())}\n")
    sys.stderr.flush()


# A secondary in ``push`` mode may not hold up archiving for long when it is unreachable
# (the DR region is down): few retries, short timeouts, and after a failure it is skipped
# for a while (one line per skipped segment says so; ``backup copy`` fills the gap).
# ``require`` keeps the defaults and is never skipped.
_BEST_EFFORT_S3 = {"max_attempts": 2, "connect_timeout": 3.0, "read_timeout": 30.0}
PUSH_BACKOFF_SECONDS = 300.0


def _backoff_marker(ref: RepositoryRef) -> Path:
    """A file whose mtime is the last failed push to ``ref`` (per user and URL)."""
    import hashlib
    import tempfile

    digest = hashlib.sha256(ref.url.encode("utf-8")).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"payapi-wal-push-{os.getuid()}-{digest}.failed"


def _backing_off(marker: Path, now: float) -> float | None:
    """Seconds since the last failure if still within the back-off, else None."""
    try:
        age = now - marker.stat().st_mtime
    except OSError:
        return None
    return age if 0 <= age < PUSH_BACKOFF_SECONDS else None


def push_to_secondaries(config: str | Path | None, path: Path | str) -> int:
    """Push one WAL file to every configured secondary whose ``wal`` mode is ``push`` or
    ``require``; the exit code: failed only if a ``require`` secondary failed. Failures
    of ``push`` secondaries are one line on stderr (the server log): ``backup copy`` and
    the next ``backup run`` fill the gap."""
    from payapi.backup.errors import RepositoryError

    code = EXIT_OK
    try:
        refs = secondary_refs(config)
    except WalError as exc:
        _say(str(exc))
        return exc.code
    import time

    for ref in refs:
        if ref.wal not in ("push", "require"):
            continue
        required = ref.wal == "require"
        marker = _backoff_marker(ref)
        if not required and (age := _backing_off(marker, time.time())) is not None:
            _say(
                f"push to secondary {ref.name} skipped: it failed {age:.0f}s ago (retried "
                f"after {PUSH_BACKOFF_SECONDS:.0f}s; backup copy fills the gap)",
                "warning",
            )
            continue
        try:
            options: dict[str, Any] = {} if required else dict(_BEST_EFFORT_S3)
            with open_repository(ref, **options) as repo:
                push(repo, path)
        except (RepositoryError, WalError, OSError, ValueError) as exc:
            what = "error" if required else "warning"
            _say(f"push to secondary {ref.name}: {exc}", what)
            if required:
                code = EXIT_FAILED
            else:
                with contextlib.suppress(OSError):
                    marker.touch()
            continue
        with contextlib.suppress(OSError):
            marker.unlink(missing_ok=True)
    return code


def run(inv: Invocation, *, prepared: PreparedSegment | None = None) -> int:
    """Do one push or fetch; the exit code PostgreSQL (and the contract) expects.

    For a fetch, only "not in the archive" is exit 1; with ``--abort-on-damage`` every
    other failure (damaged segment, unreadable key, unreachable repository, bad config)
    is 126, so that recovery stops loudly rather than ending early in silence.

    A push without ``--repository`` goes to the primary repository, then to the
    secondaries (:func:`push_to_secondaries`), also when the primary failed: the DR copy
    then holds everything PostgreSQL handed over.

    ``prepared`` (a push only) is the segment already being read, hashed and compressed
    on a thread; the primary (or ``--repository``) push uses it, the secondaries read
    the file themselves.
    """
    fetching = inv.action == "fetch"
    try:
        code = _run_one(inv, prepared)
    finally:
        if prepared is not None:
            prepared.cancel()  # not used (a failure, an archived segment): stop reading
    if not fetching and inv.repository is None:
        code = max(code, push_to_secondaries(inv.config, inv.args[0]))
    return code


def _run_one(inv: Invocation, prepared: PreparedSegment | None = None) -> int:
    from payapi.backup.errors import CorruptObject, NotFound, RepositoryError

    fetching = inv.action == "fetch"
    failed = EXIT_ABORT_RECOVERY if (fetching and inv.abort_on_damage) else EXIT_FAILED
    try:
        ref = repository_ref(inv.config, repository=inv.repository, key_file=inv.key_file)
        with open_repository(ref) as repo:
            if fetching:
                try:
                    fetch(repo, inv.args[0], inv.args[1])
                except CorruptObject:
                    raise
                except NotFound:
                    return EXIT_FAILED  # the normal end of the archive: say nothing
            else:
                push(repo, inv.args[0], prepared=prepared)
        return EXIT_OK
    except CorruptObject as exc:  # includes MissingObject: indexed, yet absent
        _say(str(exc))
        return failed
    except WalError as exc:
        _say(str(exc))
        return failed if fetching else exc.code
    except (RepositoryError, OSError) as exc:
        _say(str(exc) if isinstance(exc, RepositoryError) else f"{inv.action}: {exc}")
        return failed
    except ValueError as exc:  # an invalid WAL file name
        _say(str(exc))
        return failed if fetching else EXIT_USAGE


def exit_now(code: int) -> NoReturn:
    """End the process at once with ``code``, without the interpreter's teardown.

    A push or fetch is done when :func:`run` returns: every file it wrote is closed and
    fsynced (or renamed into place by the store), and no thread it started is still
    needed. Tearing down the interpreter (module dicts, the GC, the atexit hooks) then
    costs about 8 ms of CPU per segment for nothing. stdout and stderr are flushed first,
    so the one-line message PostgreSQL logs is never lost.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def fast_path(
    argv: Sequence[str], *, hard_exit: bool = False, prepared: PreparedSegment | None = None
) -> None:
    """If ``argv`` is a plain ``wal push``/``wal fetch``, do it and exit; else return.

    ``hard_exit`` (the entry points: ``python -m payapi`` and the ``payapi`` script) ends
    the process with :func:`exit_now`; otherwise :class:`SystemExit` is raised.
    ``prepared``: the entry points' guess at the segment to push, already being read
    (:func:`payapi.backup.wal_prefetch.prefetch_for_argv`); used only if it is the file
    this command line pushes, cancelled otherwise.
    """
    inv = parse_argv(argv)
    if prepared is not None and (
        inv is None or inv.action != "push" or prepared.path != os.fspath(inv.args[0])
    ):
        prepared.cancel()
        prepared = None
    if inv is None:
        return
    if inv.action == "push" and prepared is None:
        # Reading, SHA-256 and zstd of the segment release the GIL: started now, they run
        # on the other core while the repository's modules (cryptography...) import.
        from payapi.backup.wal_prefetch import PreparedSegment

        prepared = PreparedSegment(inv.args[0])
    code = run(inv, prepared=prepared)
    if hard_exit:
        exit_now(code)
    raise SystemExit(code)
