"""Every error has a stable kebab-case code, a documented exit code and one root."""

from __future__ import annotations

import re

from modelget import errors


def _all_error_classes() -> list[type[errors.ModelgetError]]:
    found: list[type[errors.ModelgetError]] = []
    todo: list[type[errors.ModelgetError]] = [errors.ModelgetError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_codes_are_kebab_case_and_unique() -> None:
    classes = _all_error_classes()
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes)), codes
    for code in codes:
        assert re.fullmatch(r"[a-z]+(-[a-z0-9]+)*", code), code


def test_exit_codes_are_the_documented_ones() -> None:
    allowed = {
        errors.EXIT_ERROR,
        errors.EXIT_USAGE,
        errors.EXIT_PARTIAL,
        errors.EXIT_VERIFY,
        errors.EXIT_INTERRUPTED,
    }
    for cls in _all_error_classes():
        assert cls.exit_code in allowed, cls


def test_config_error_locates_the_problem() -> None:
    exc = errors.ConfigError("unknown kind 'ftp'", path="m.yaml", line=7, field="mirrors[1].kind")
    assert str(exc) == "m.yaml:7: mirrors[1].kind: unknown kind 'ftp'"
    assert exc.exit_code == 2
    assert exc.to_dict()["code"] == "config-invalid"
