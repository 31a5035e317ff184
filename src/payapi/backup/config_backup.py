"""A configuration backup run: build the export, commit it to the Git working tree if
it changed, store it in the backup repository, push every remote. The caller holds the
``configuration`` component's lock (:func:`payapi.backup.engines.run_backup`)."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

from payapi.backup.config_export import (
    Export,
    build_export,
    tar_files,
)
from payapi.backup.config_format import (
    COMPONENT,
    EXPORT_FILE,
    OBJECT,
    TYPE,
    ConfigBackupError,
    ConfigMeta,
)
from payapi.backup.config_secrets import (
    SecretBox,
)
from payapi.backup.manifest import BackupInfo
from payapi.backup.repository import Repository
from payapi.core.journal import Journal
from payapi.core.logs import get_logger
from payapi.core.redaction import redact_url
from payapi.core.settings import (
    ConfigBackupSettings,
)
from payapi.systems.git import Git, GitError, git_error
from payapi.systems.kubernetes import KubeError, KubeSource, OfficialKubeSource

_REMOTE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

log = get_logger("payapi.backup.config")


def _note(journal: Journal, message: str) -> None:
    log.info("config_backup", step=message)
    journal.note(message)


def _prepare_repo(git: Git, branch: str, remotes: Mapping[str, str], journal: Journal) -> None:
    work = git.work
    fresh = not (work / ".git").exists()
    if fresh:
        if work.exists() and any(work.iterdir()):
            raise ConfigBackupError(
                f"{work} is not empty and not a Git repository; refusing to export into it"
            )
        work.mkdir(parents=True, exist_ok=True)
        git("init", "-q", "-b", branch)
    current = {
        ln.split()[0]: ln.split()[1]
        for ln in git("remote", "-v").stdout.splitlines()
        if ln.endswith("(push)")
    }
    for name, url in sorted(remotes.items()):
        if not _REMOTE.match(name):
            raise ConfigBackupError(f"invalid remote name {name!r}")
        if name not in current:
            git("remote", "add", name, url)
        elif current[name] != url:
            git("remote", "set-url", name, url)
    has_head = git("rev-parse", "-q", "--verify", "HEAD", check=False).returncode == 0
    if not has_head:
        # A new exporter (a rebuilt region): continue the history a remote already has,
        # so that pushes fast-forward instead of being refused.
        for name in sorted(remotes):
            res = git("fetch", "-q", name, branch, check=False)
            if res.returncode == 0:
                git("checkout", "-q", "-B", branch, "FETCH_HEAD")
                _note(journal, f"continuing the history of {name}/{branch}")
                break
    else:
        tracked = git("ls-tree", "--name-only", "HEAD").stdout.split()
        if EXPORT_FILE not in tracked:
            raise ConfigBackupError(
                f"{work} holds a Git history that is not payapi exports; refusing to "
                "replace its files"
            )


def _write_tree(work: Path, files: Mapping[str, bytes]) -> None:
    for entry in work.iterdir():
        if entry.name == ".git":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    for path, data in files.items():
        dest = work / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)


# --------------------------------------------------------------------------- run


@dataclass
class ConfigBackupResult:
    """One export: the backup (new, or the existing one of an unchanged configuration),
    the new commit (None when nothing changed) and how each remote's push went."""

    backup: BackupInfo
    stored: bool
    commit: str | None
    head: str
    pushed: list[str] = field(default_factory=list)
    push_errors: dict[str, str] = field(default_factory=dict)
    files: int = 0
    secret_values_encrypted: int = 0
    secret_files_referenced: int = 0

    @property
    def changed(self) -> bool:
        return self.commit is not None

    @property
    def ok(self) -> bool:
        return not self.push_errors

    def to_json(self) -> dict[str, Any]:
        b = self.backup
        return {
            "backup_id": b.backup_id,
            "component": b.component,
            "type": b.type,
            "started_at": b.started_at.isoformat(),
            "finished_at": b.finished_at.isoformat(),
            "bytes": b.bytes,
            "stored_bytes": b.stored_bytes,
            "objects": b.objects,
            "stored": self.stored,
            "changed": self.changed,
            "commit": self.commit,
            "head": self.head,
            "pushed": list(self.pushed),
            "push_errors": dict(self.push_errors),
            "files": self.files,
            "secret_values_encrypted": self.secret_values_encrypted,
            "secret_files_referenced": self.secret_files_referenced,
        }


def default_sources(settings: Any, *, deploy_dir: Path | None = None) -> list[tuple[str, Path]]:
    """What a configuration export holds by default, from :class:`payapi.core.settings.Settings`:
    the DR plan, ``deploy/`` (if given and present), the config file and, beside it, the
    lab's ``payapi.local.toml`` and ``lab.json`` when they exist, plus
    ``config_backup.sources`` when the settings have that section."""
    from importlib import resources

    out: list[tuple[str, Path]] = []
    plan = getattr(settings, "plan_file", None)
    if plan is None:
        packaged = resources.files("payapi").joinpath("data", "dr-plan.yaml")
        plan = Path(str(packaged))
    out.append(("dr-plan.yaml", Path(plan)))
    section = getattr(settings, "config_backup", None)
    deploy = deploy_dir or (section.deploy_dir if section is not None else None)
    if deploy is not None and Path(deploy).is_dir():
        out.append(("deploy", Path(deploy)))
    config_path = getattr(settings, "config_path", None)
    if config_path is not None:
        config_path = Path(config_path)
        out.append((config_path.name, config_path))
        for sibling in ("payapi.local.toml", "lab.json"):
            p = config_path.parent / sibling
            if p.is_file() and p.name != config_path.name:
                out.append((sibling, p))
    if section is not None:
        out.extend((Path(p).name, Path(p)) for p in section.sources)
    return out


def run_config_backup(
    repo: Repository,
    settings: ConfigBackupSettings,
    *,
    sources: Sequence[Path | tuple[str, Path]],
    git_dir: Path,
    remotes: Mapping[str, str],
    kube_context: str | None = None,
    kube_source: KubeSource | None = None,
    journal: Journal | None = None,
) -> ConfigBackupResult:
    """Export the configuration, commit it if it changed, store it, push every remote.

    ``sources`` are files or folders (optionally ``(name, path)``); each lands under
    ``files/<name>``. ``kube_context`` exports the namespace ``settings.kube_namespace``
    through the official client; ``kube_source`` replaces that client (tests, or another
    way to reach the cluster). The caller holds the ``configuration`` component's lock.

    A failed push does not raise: ``result.push_errors`` names it (``result.ok`` is
    False) and the next run pushes again. Everything else raises
    :class:`ConfigBackupError` (or a repository error).
    """
    repo.require_config()
    try:
        if kube_source is None and kube_context:
            kube_source = OfficialKubeSource(kube_context, settings.kube_config_file)
        return _run(
            repo,
            settings,
            sources,
            Path(git_dir),
            remotes,
            kube_source,
            journal or Journal.silent(),
        )
    except (GitError, KubeError) as exc:  # one error type for the caller, same message
        raise ConfigBackupError(str(exc)) from None


def _run(
    repo: Repository,
    settings: ConfigBackupSettings,
    sources: Sequence[Path | tuple[str, Path]],
    git_dir: Path,
    remotes: Mapping[str, str],
    kube: KubeSource | None,
    journal: Journal,
) -> ConfigBackupResult:
    box = SecretBox(repo.key)
    if kube is not None:
        _note(journal, f"exporting namespace {settings.kube_namespace} ({kube.description})")
    export = build_export(
        sources,
        box,
        kube=kube,
        namespace=settings.kube_namespace,
        secret_patterns=settings.secret_patterns,
    )
    tree = export.tree_sha256()
    _note(
        journal,
        f"export: {len(export.files)} files, {export.secret_values} secret values encrypted, "
        f"{len(export.referenced)} secret files referenced",
    )

    git = Git(git_dir, settings.author_name, settings.author_email)
    _prepare_repo(git, settings.branch, remotes, journal)
    _write_tree(git_dir, export.files)
    git("add", "-A")
    commit: str | None = None
    if git("diff", "--cached", "--quiet", check=False).returncode != 0:
        changes = git("diff", "--cached", "--name-status").stdout.strip().splitlines()
        now = repo.now().astimezone(UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        message = f"config export {stamp}: {len(changes)} file(s) changed\n\n" + "\n".join(
            changes[:200]
        )
        if len(changes) > 200:
            message += f"\n... and {len(changes) - 200} more"
        date = now.isoformat()
        git(
            "commit",
            "-q",
            "--no-verify",
            "-m",
            message,
            env={"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date},
        )
        commit = git("rev-parse", "HEAD").stdout.strip()
        _note(journal, f"committed {commit[:12]} ({len(changes)} file(s) changed)")
    else:
        _note(journal, "configuration unchanged: no commit")
    head = git("rev-parse", "HEAD").stdout.strip()

    backup, stored = _store(repo, export, tree, head, settings, box.key_id, journal)

    pushed: list[str] = []
    errors: dict[str, str] = {}
    for name in sorted(remotes):
        res = git("push", "--porcelain", name, f"HEAD:refs/heads/{settings.branch}", check=False)
        if res.returncode == 0:
            pushed.append(name)
        else:
            errors[name] = git_error(res.stderr)
            log.error(
                "config_push_failed", remote=name, url=redact_url(remotes[name], keep_user=False)
            )
    if pushed:
        _note(journal, f"pushed to {', '.join(pushed)}")
    return ConfigBackupResult(
        backup=backup,
        stored=stored,
        commit=commit,
        head=head,
        pushed=pushed,
        push_errors=errors,
        files=len(export.files),
        secret_values_encrypted=export.secret_values,
        secret_files_referenced=len(export.referenced),
    )


def _store(
    repo: Repository,
    export: Export,
    tree: str,
    head: str,
    settings: ConfigBackupSettings,
    key_id: str,
    journal: Journal,
) -> tuple[BackupInfo, bool]:
    """Store the export unless the newest backup already holds exactly this tree."""
    backups = repo.list_backups(COMPONENT)
    if backups and ConfigMeta.of(backups[-1]).tree_sha256 == tree:
        _note(journal, f"the repository already holds this export ({backups[-1].backup_id})")
        return backups[-1], False
    with (
        tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool,
        repo.begin_backup(COMPONENT, TYPE, None) as writer,
    ):
        tar_files(export.files, spool)  # type: ignore[arg-type]
        spool.seek(0)
        writer.add_object(OBJECT, spool)
        meta = ConfigMeta(
            commit=head,
            branch=settings.branch,
            tree_sha256=tree,
            files=len(export.files),
            secret_values_encrypted=export.secret_values,
            secret_files_referenced=len(export.referenced),
            secrets_key_id=key_id,
            kubernetes=export.kube,
        )
        writer.set_meta(**meta.dump())
        info = writer.commit()
    _note(journal, f"stored {info.backup_id}")
    return info, True
