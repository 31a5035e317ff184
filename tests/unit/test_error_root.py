"""Every error an operator can see is a PayapiError: one line, and the CLI's one catch."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import payapi
from payapi.core.errors import PayapiError

# Exceptions that are not failures an operator sees, and why.
NOT_OPERATOR_ERRORS = {
    # HTTP answers: route code raises them and the app renders them as the response body.
    "payapi.web.ApiError",
    "payapi.vault.errors.ConjurError",
    # SIGTERM as an exception, a sibling of KeyboardInterrupt: it must pass every
    # ``except Exception`` so that the drill's ``finally`` restores normal operation.
    "payapi.drills.runner.Terminated",
}


def _exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(payapi.__path__, "payapi."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == info.name
                and not name.startswith("_")
            ):
                found[f"{info.name}.{name}"] = obj
    return found


def test_every_public_exception_class_derives_from_payapi_error() -> None:
    classes = _exception_classes()
    assert len(classes) > 30  # the walk found the packages
    outside = sorted(
        name
        for name, cls in classes.items()
        if not issubclass(cls, PayapiError) and name not in NOT_OPERATOR_ERRORS
    )
    assert outside == []


def test_messages_are_one_line_and_exit_codes_are_kept() -> None:
    from payapi.core.errors import UsageError

    assert str(PayapiError("no backup\n   repository")) == "no backup repository"
    assert PayapiError("x").exit_code == 1
    assert UsageError("x").exit_code == 2
