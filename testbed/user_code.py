"""Loading the user's own code from a reference: ``module:attribute`` or ``path/to/file.py:attribute``.

Models (``model: my_pkg.nets:build``), strategies (``name: my_pkg.policy:MyScheduler``) and datasets
(``data: my_pkg.data:load``) may live outside the package. A reference is resolved like this:

* ``my_pkg.nets:build`` imports ``my_pkg.nets`` from ``sys.path``, then from the current directory,
  then from any folder given with :func:`add_search_path` (an experiment file's folder);
* ``nets/model.py:build`` (a path ending in ``.py``) loads that file: absolute, or relative to the
  current directory, then to the same folders. Its folder goes on ``sys.path`` so it can import
  its siblings.

Every folder a reference was found in goes on ``sys.path`` and on ``PYTHONPATH``, which the
processes the testbed starts inside emulated hosts (device agents, cloud server) inherit, so they
resolve the same reference to the same code. Errors are one line:
:class:`UserCodeError` names the reference and what went wrong.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from testbed.errors import TestbedError

_SEARCH_PATHS: list[Path] = []  # folders besides sys.path and the current directory
_MODULE_OF: dict[str, Any] = {}  # reference -> the module it was loaded from


class UserCodeError(TestbedError):
    """A user reference cannot be loaded or its object breaks the contract; names both."""

    def __init__(self, ref: str, message: str):
        self.ref = ref
        self.message = message
        super().__init__(f"{ref}: {message}")


def is_user_ref(name: Any) -> bool:
    """True for ``module:attribute`` / ``file.py:attribute`` references (registry names have no colon)."""
    return isinstance(name, str) and ":" in name


def add_search_path(folder: str | Path) -> None:
    """Also look for user modules and files in ``folder`` (e.g. the folder of an experiment file)."""
    folder = Path(folder).resolve()
    if folder in _SEARCH_PATHS:
        _SEARCH_PATHS.remove(folder)
    _SEARCH_PATHS.insert(0, folder)  # the latest experiment's folder wins over earlier ones


def _remember(folder: Path) -> None:
    """Put ``folder`` on sys.path and PYTHONPATH: processes started from here (device agents and the
    cloud server inside emulated hosts inherit the environment) then resolve the same references."""
    text = str(folder.resolve())
    if text not in sys.path:
        sys.path.append(text)  # appended: user code never shadows installed packages
    existing = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != text]
    os.environ["PYTHONPATH"] = os.pathsep.join([text, *existing])  # latest first, as in _bases()


def _bases() -> list[Path]:
    return [Path.cwd(), *_SEARCH_PATHS]


def split_ref(ref: str) -> tuple[str, str]:
    if not is_user_ref(ref):
        raise UserCodeError(str(ref), "expected a reference 'module:attribute' or 'path/to/file.py:attribute'")
    target, _, attribute = ref.rpartition(":")
    if not target or not attribute.isidentifier():
        raise UserCodeError(ref, "expected 'module:attribute' or 'path/to/file.py:attribute' "
                                 f"(attribute must be a Python name, got {attribute!r})")
    return target, attribute


def _load_file(ref: str, target: str):
    path = Path(target)
    bases = [Path("/")] if path.is_absolute() else [*_bases(), *(Path(entry) for entry in sys.path if entry)]
    base = next((b for b in bases if (b / path).is_file()), None)
    if base is None:
        looked = ", ".join(str(b) for b in _bases())
        raise UserCodeError(ref, f"file {target!r} not found (looked in {looked} and sys.path)")
    found = (base / path).resolve()
    module_name = f"_testbed_user_{found.stem}_{hashlib.sha1(str(found).encode()).hexdigest()[:10]}"
    # The folder a relative path was found in is what child processes need to find it again; the
    # file's own folder lets it import its siblings.
    if not path.is_absolute():
        _remember(base)
    if module_name in sys.modules:
        return sys.modules[module_name]
    if str(found.parent) not in sys.path:
        sys.path.append(str(found.parent))
    spec = importlib.util.spec_from_file_location(module_name, found)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise UserCodeError(ref, f"importing {found} failed: {type(exc).__name__}: {exc}") from exc
    return module


def _import_module(ref: str, name: str, retry: bool = True):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing_itself = exc.name is not None and (name == exc.name or name.startswith(exc.name + "."))
        if not missing_itself:  # the module exists but one of its own imports fails
            raise UserCodeError(ref, f"importing {name} failed: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        raise UserCodeError(ref, f"importing {name} failed: {type(exc).__name__}: {exc}") from exc
    # Not on sys.path: try the current directory and the registered folders.
    top = name.split(".")[0]
    for base in _bases():
        if retry and ((base / top).is_dir() or (base / f"{top}.py").is_file()):
            _remember(base)
            importlib.invalidate_caches()
            return _import_module(ref, name, retry=False)
    looked = ", ".join(str(b) for b in _bases())
    raise UserCodeError(ref, f"no module named {name!r} on sys.path or in {looked}")


def load_object(ref: str) -> Any:
    """The object a reference names; :class:`UserCodeError` on a bad reference or a failing import."""
    target, attribute = split_ref(ref)
    if target.endswith(".py") or "/" in target or os.sep in target:
        module = _load_file(ref, target)
    else:
        module = _import_module(ref, target)
        if getattr(module, "__file__", None):
            depth = target.count(".") + (1 if Path(module.__file__).name == "__init__.py" else 0)
            _remember(Path(module.__file__).resolve().parents[depth])
    _MODULE_OF[ref] = module
    try:
        return getattr(module, attribute)
    except AttributeError:
        public = sorted(n for n in vars(module) if not n.startswith("_"))[:12]
        raise UserCodeError(ref, f"module {target} has no attribute {attribute!r} "
                                 f"(it defines {', '.join(public) or 'nothing public'})") from None


def load_callable(ref: str, what: str) -> Any:
    """Like :func:`load_object`, and the object must be callable (``what`` says what it should be)."""
    obj = load_object(ref)
    if not callable(obj):
        raise UserCodeError(ref, f"expected {what}, got a {type(obj).__name__} that is not callable")
    return obj


def fingerprint(ref: str) -> str:
    """sha256 of the source file of a reference's module: changing the code changes cache keys."""
    if ref not in _MODULE_OF:
        load_object(ref)
    file = getattr(_MODULE_OF[ref], "__file__", None)
    if not file or not Path(file).is_file():
        return "no-source"
    return hashlib.sha256(Path(file).read_bytes()).hexdigest()
