"""The user's own model code: find, import and ship the module a model spec's ``_target_`` names.

A model config may name a callable of the user's project (``_target_: my_models.TinyNet``). The
same name is stored in every checkpoint and registry package, and a stored spec is data from
elsewhere: it must not be able to call ``os.system`` or any other importable callable. So a
target outside masklab is only resolved when

- its top-level module lies in one known folder (``code_root``): the project for checkpoints,
  the ``code/`` folder shipped inside a package for packages. The module is looked up there with
  ``importlib.machinery.PathFinder`` before anything is imported, so a refused spec runs no code;
- that module is not named like a standard-library module (it would shadow it for the whole process);
- the object the dotted path reaches is defined in that module (``my_models.os.system`` is refused).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import re
import shutil
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from masklab.errors import UserError

DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


@dataclass(frozen=True)
class CodeModule:
    """A top-level module of the user's code: ``name`` (``my_models``) and ``path``, its ``.py``
    file or package folder."""

    name: str
    path: Path


def find_code_module(target: str, code_root: Path, where: str) -> CodeModule:
    """The top-level module of ``target`` inside ``code_root``, found without importing anything.

    ``where`` says what ``code_root`` is in error messages ("the project", "package /x").
    """
    if not isinstance(target, str) or not DOTTED.match(target):
        raise UserError(f"model _target_ {target!r}: expected a dotted path <module>.<callable>, "
                        f"e.g. my_models.TinyNet")
    name = target.split(".")[0]
    if name == "masklab" or name in sys.stdlib_module_names or name in sys.builtin_module_names:
        raise UserError(f"model _target_ '{target}': module '{name}' is not user code in {where}; expected "
                        f"masklab.models.build_model or a callable of a module of your own")
    # A package's code/ may have been written moments ago: drop cached folder listings first.
    importlib.invalidate_caches()
    spec = importlib.machinery.PathFinder.find_spec(name, [str(code_root)]) if code_root.is_dir() else None
    if spec is None:
        raise UserError(f"model _target_ '{target}': module '{name}' not found in {where}; "
                        f"expected {code_root / name}.py or {code_root / name}/")
    if spec.origin and spec.has_location:
        origin = Path(spec.origin)
        path = origin.parent if origin.name == "__init__.py" else origin
    else:  # a namespace package: a folder without __init__.py
        path = Path(next(iter(spec.submodule_search_locations)))
    return CodeModule(name, path.resolve())


def import_code_target(target: str, code_root: Path, where: str) -> Callable:
    """Import the module of ``target`` from ``code_root`` and return the callable it names.

    ``code_root`` goes onto ``sys.path`` (as MLflow does with a model's ``code_paths``) so the
    module's own imports of sibling modules work. A module of the same name already imported from
    another folder (an earlier package's copy of the user's code) is replaced; one imported from an
    installed library is never replaced.
    """
    module = find_code_module(target, code_root, where)
    loaded = _import_from(module, code_root, target)
    obj: object = loaded
    path = module.name
    for part in target.split(".")[1:]:
        path = f"{path}.{part}"
        if hasattr(obj, part):
            obj = getattr(obj, part)
        elif isinstance(obj, ModuleType) and hasattr(obj, "__path__"):  # a submodule its package does not import
            try:
                obj = importlib.import_module(path)
            except ImportError as exc:
                raise UserError(f"model _target_ '{target}': cannot import '{path}' from {module.path}: {exc}") from exc
        else:
            raise UserError(f"model _target_ '{target}': '{path}' does not exist in {module.path}")
    defined_in = getattr(obj, "__module__", None) or ""
    if defined_in.split(".")[0] != module.name or not callable(obj):
        what = getattr(obj, "__qualname__", type(obj).__name__)
        raise UserError(f"model _target_ '{target}': names {what} from module '{defined_in or '?'}'; expected a "
                        f"class or function defined in {module.path}")
    return obj


def copy_code_module(module: CodeModule, dest_dir: Path) -> Path:
    """Copy the module's file or package folder into ``dest_dir`` (caches left out); returns the copy."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / module.path.name
    if module.path.is_dir():
        shutil.copytree(module.path, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        shutil.copy2(module.path, dest)
    return dest


def _import_from(module: CodeModule, code_root: Path, target: str) -> ModuleType:
    root = str(code_root.resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    existing = sys.modules.get(module.name)
    if existing is not None:
        if _location(existing) == module.path:
            return existing
        if _is_installed(existing):
            raise UserError(f"model _target_ '{target}': module '{module.name}' in {code_root} has the name of the "
                            f"installed module imported from {_location(existing)}; rename your module")
        for name in [n for n in sys.modules if n == module.name or n.startswith(module.name + ".")]:
            del sys.modules[name]
    # Loaded from the spec found in code_root, so no other folder on sys.path can supply it.
    spec = importlib.machinery.PathFinder.find_spec(module.name, [root])
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[module.name] = loaded
    try:
        spec.loader.exec_module(loaded)
    except Exception as exc:
        del sys.modules[module.name]
        raise UserError(f"model _target_ '{target}': importing {module.path} failed: "
                        f"{type(exc).__name__}: {exc}") from exc
    return loaded


def _location(module: ModuleType) -> Path | None:
    """The file or package folder a module was imported from (None for built-ins)."""
    file = getattr(module, "__file__", None)
    if file:
        path = Path(file).resolve()
        return path.parent if path.name == "__init__.py" else path
    paths = list(getattr(module, "__path__", []) or [])
    return Path(paths[0]).resolve() if paths else None


def _is_installed(module: ModuleType) -> bool:
    """Whether ``module`` comes from the interpreter's standard library or site-packages."""
    location = _location(module)
    if location is None:
        return True
    scheme = sysconfig.get_paths()
    roots = {Path(scheme[k]).resolve() for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in scheme}
    return any(location.is_relative_to(r) for r in roots)
