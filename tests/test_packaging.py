"""`pip install .` installs everything raybot imports at run time (the README's first command must work)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.harness import REPO

# Every entry point of the runtime: serve (HTTP and Socket Mode), the CLI's other commands, and the sandbox.
RUNTIME_MODULES = ("bot.cli", "bot.server", "bot.app", "bot.store", "bot.sandbox.run", "alembic.command")
# Imported when present, never needed: the test environment has them, `pip install .` need not.
OPTIONAL = {
    "pygments": "Mako (Alembic's templates) highlights tracebacks with it when it is installed",
    "setuptools": "its _distutils_hack is loaded by the virtualenv's .pth file at interpreter start",
}


def _runtime_closure(
    name: str, extras: frozenset[str] = frozenset(), seen: set[str] | None = None, lines: list[str] | None = None
) -> set[str]:
    """The distributions `pip install <name>[extras]` installs (`lines`: its requirements, else its installed
    metadata's), following the installed dependencies' own metadata, markers evaluated."""
    seen = set() if seen is None else seen
    key = canonicalize_name(name)
    if key in seen:
        return seen
    seen.add(key)
    for line in metadata.requires(name) or [] if lines is None else lines:
        requirement = Requirement(line)
        environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
        if requirement.marker is not None and not any(requirement.marker.evaluate(env) for env in environments):
            continue
        _runtime_closure(requirement.name, frozenset(requirement.extras), seen)
    return seen


def test_everything_the_runtime_imports_is_a_runtime_dependency() -> None:
    # A fresh interpreter, so that what the tests themselves imported does not count.
    code = f"import importlib, json, sys; [importlib.import_module(m) for m in {RUNTIME_MODULES!r}]; " + (
        "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    top_levels = json.loads(done.stdout)
    providers = metadata.packages_distributions()
    imported = {canonicalize_name(d) for module in top_levels for d in providers.get(module, [])}
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    installed = _runtime_closure("raybot", lines=declared)  # pyproject's own list, not the installed metadata
    missing = imported - installed - {"raybot"} - set(OPTIONAL)
    assert not missing, f"imported at run time but not installed by `pip install .`: {sorted(missing)}"
    assert "greenlet" in installed  # SQLAlchemy's async engine needs it (sqlalchemy[asyncio])
