"""The public surface: __all__ is sorted and complete, and importing modelget stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import modelget


def test_all_is_sorted_and_resolvable() -> None:
    assert modelget.__all__ == sorted(modelget.__all__)
    for name in modelget.__all__:
        assert hasattr(modelget, name), name


def test_import_and_help_do_not_load_heavy_libraries() -> None:
    heavy = [
        "torch",
        "safetensors",
        "huggingface_hub",
        "modelscope_hub",
        "numpy",
        "aria2p",
        "httpx",
    ]
    code = (
        "import json, sys, modelget, modelget.cli\n"
        "try:\n    modelget.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()[-1]
    assert json.loads(out) == []


def test_every_error_class_and_exit_code_is_exported() -> None:
    from modelget import errors

    classes = {
        name
        for name, obj in vars(errors).items()
        if isinstance(obj, type) and issubclass(obj, errors.ModelgetError)
    }
    codes = {name for name in vars(errors) if name.startswith("EXIT_")}
    assert classes and codes
    assert classes | codes <= set(modelget.__all__)
    for name in classes | codes:
        assert getattr(modelget, name) is getattr(errors, name), name


def test_the_api_functions_are_functions_whatever_was_imported_first() -> None:
    """``modelget.plan``, ``probe``, ``verify``, ``export`` and ``doctor`` share their names
    with modules; importing those modules (as the pipeline does) must not replace them."""
    names = [
        "doctor",
        "export",
        "list_models",
        "load_test",
        "lock",
        "model_root",
        "plan",
        "probe",
        "pull",
        "remove",
        "verify",
    ]
    code = (
        "import inspect, json\n"
        "import modelget.api, modelget.plan, modelget.probe, modelget.verify\n"
        "import modelget.export, modelget.doctor.report, modelget.loadtest\n"
        "import modelget\n"
        "from modelget import verify\n"
        "from modelget.verify import hash_file\n"
        f"print(json.dumps([n for n in {names!r} if not inspect.isfunction(getattr(modelget, n))]"
        " + ([] if inspect.isfunction(verify) else ['from-import'])))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()[-1]
    assert json.loads(out) == []
    assert set(names) <= set(modelget.__all__)
    # The modules stay importable by their full names.
    assert sys.modules["modelget.verify"].__name__ == "modelget.verify"
