"""Copy the project code that the `evaluate` metric modules in `metrics/` run into their folders, so that each folder
is self-contained: it can be uploaded as-is as a Hub Space (`evaluate.load("<user>/amrg_clinical_efficacy")`) and
loaded with `evaluate.load` where this repository is not installed.

    python scripts/vendor_metric_code.py            # rewrite the copies from the current amrg/ sources
    python scripts/vendor_metric_code.py --check    # exit 1, naming the files, if a copy differs from its source

What `evaluate` (0.4.6, `evaluate/loading.py`) does with a module folder decides the layout:
- it reads the metric script's own top-level `from .x import y` lines (`get_imports`) and copies each `x.py` from
  beside the script into its module cache; it does not follow the imports of those files, so the script must import
  every vendored module itself (checked here), and the modules must be flat siblings of the script (`from .pkg.x`
  names `pkg.py`);
- it copies no data files, and the cached copy is what runs: the labeler's phrase lists therefore travel inside a
  generated Python module (`labeler_resources.py`); `resources/` beside it holds the same files for reading, with
  the upstream licence;
- it hashes the copied Python files to name the cache entry, so a changed phrase list is a new cache entry.

Copies are verbatim but for a header and the project imports, rewritten to the module-local form
(`from amrg.data import labeler_rules as rules` -> `from . import labeler_rules as rules`). The modules copied are the
closure of each metric's root module over its project imports (function-level ones included); `modeling_amrg` is
never copied whole (it imports torch and transformers), only the literal constants named in `CONSTANTS`. An import
that fits none of these is refused with the file and line named. Files in a metric folder that the script did not
produce and that are not hand-written (`HAND_WRITTEN`) are stale copies: removed on write, reported by `--check`.
"""

from __future__ import annotations

import argparse
import ast
import logging
import sys
from dataclasses import dataclass
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python scripts/...`: the repository is importable without installing it
    sys.path.insert(0, str(REPO))

from amrg.fileio import staged_file  # noqa: E402


logger = logging.getLogger("vendor_metric_code")

PROJECT_PACKAGES = ("amrg", "modeling_amrg", "configuration_amrg", "processing_amrg")
# Literal constants copied out of modules that are not vendored whole: source module -> (local module, names).
CONSTANTS = {
    "modeling_amrg.configuration_amrg": ("chexpert_observations", ("CHEXPERT_OBSERVATIONS",)),
}
RESOURCES = Path("amrg/data/resources")
RESOURCES_MODULE = "labeler_resources"
# Plus the metric script itself. packages.txt: the Debian packages a Space installs (Java for METEOR).
HAND_WRITTEN = ("README.md", "app.py", "requirements.txt", "packages.txt")


@dataclass(frozen=True)
class MetricSpec:
    """A metric folder `metrics/<name>/` (script `<name>.py`), the project modules its script runs and whether it
    needs the labeler's resource files."""

    name: str
    roots: tuple[str, ...]
    resources: bool = False


METRICS = (
    MetricSpec("amrg_nlg", ("amrg.evaluation.nlg",)),
    MetricSpec("amrg_clinical_efficacy", ("amrg.evaluation.clinical_efficacy",), resources=True),
)


def _header(source: str, what: str) -> str:
    return (f"# Copied by scripts/vendor_metric_code.py from {source}\n# ({what}).\n"
            "# Do not edit here: edit the source and run `python scripts/vendor_metric_code.py`\n"
            "# (tests/test_metric_modules.py fails while a copy differs from what its source gives).\n")


def _module_file(root: Path, module: str) -> Path | None:
    """The source file of a project module, or None when `module` is not a module file (a package or a name)."""
    path = root.joinpath(*module.split(".")).with_suffix(".py")
    return path if path.is_file() else None


def _local_name(module: str) -> str:
    return module.rsplit(".", 1)[-1]


def _is_project(module: str | None) -> bool:
    return module is not None and module.split(".")[0] in PROJECT_PACKAGES


class _Vendoring:
    """The closure of one metric's root modules and the rewritten text of each."""

    def __init__(self, root: Path, spec: MetricSpec) -> None:
        self.root = root
        self.modules: dict[str, Path] = {}  # dotted name -> source file
        self.constants: dict[str, set[str]] = {}  # CONSTANTS source module -> names used
        pending = list(spec.roots)
        while pending:
            module = pending.pop()
            if module in self.modules:
                continue
            path = _module_file(root, module)
            if path is None:
                raise ValueError(f"metric {spec.name}: root module {module} has no source file under {root}")
            self.modules[module] = path
            for node in self._project_imports(path):
                pending.extend(self._dependencies(path, node))
        locals_ = {}
        for module in self.modules:
            other = locals_.setdefault(_local_name(module), module)
            if other != module:
                raise ValueError(f"metric {spec.name}: {other} and {module} would both be copied as "
                                 f"{_local_name(module)}.py")
        for local, _ in CONSTANTS.values():
            if local in locals_:
                raise ValueError(f"metric {spec.name}: constants module {local}.py clashes with {locals_[local]}")

    @staticmethod
    def _project_imports(path: Path) -> list[ast.ImportFrom]:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found = []
        for node in ast.walk(tree):
            where = f"{path}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import) and any(_is_project(alias.name) for alias in node.names):
                raise ValueError(f"{where}: `import {node.names[0].name}` cannot be vendored; use `from ... import`")
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    raise ValueError(f"{where}: relative imports cannot be vendored; import from the package")
                if _is_project(node.module):
                    found.append(node)
        return found

    def _dependencies(self, path: Path, node: ast.ImportFrom) -> list[str]:
        """The project modules that `node` needs copied (recording constants), refusing what cannot be vendored."""
        module = node.module
        names = [alias.name for alias in node.names]
        if module in CONSTANTS:
            allowed = CONSTANTS[module][1]
            unknown = [name for name in names if name not in allowed]
            if unknown:
                raise ValueError(f"{path}:{node.lineno}: imports {unknown} from {module}, which is not vendored; "
                                 f"only the constants {list(allowed)} are (CONSTANTS in this script)")
            self.constants.setdefault(module, set()).update(names)
            return []
        if _module_file(self.root, module) is not None:
            return [module]
        submodules = [f"{module}.{name}" for name in names]
        missing = [name for name, sub in zip(names, submodules) if _module_file(self.root, sub) is None]
        if missing:
            raise ValueError(f"{path}:{node.lineno}: `from {module} import {', '.join(names)}`: {missing} are not "
                             "module files, so this import cannot be vendored")
        return submodules

    def rewrite(self, path: Path) -> str:
        """`path`'s text with its project imports made module-local and the copy header prepended."""
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines(keepends=True)
        imports = self._project_imports(path)
        for node in sorted(imports, key=lambda n: n.lineno, reverse=True):
            module = node.module
            if module in CONSTANTS:
                target = f"from .{CONSTANTS[module][0]} import "
                parts = [alias.name + (f" as {alias.asname}" if alias.asname else "") for alias in node.names]
            elif module in self.modules:
                target = f"from .{_local_name(module)} import "
                parts = [alias.name + (f" as {alias.asname}" if alias.asname else "") for alias in node.names]
            else:  # submodules of a package: `from amrg.data import labeler_rules as rules`
                target = "from . import "
                parts = []
                for alias in node.names:
                    local = _local_name(f"{module}.{alias.name}")
                    bound = alias.asname or alias.name
                    parts.append(local if bound == local else f"{local} as {bound}")
            first, last = lines[node.lineno - 1], lines[node.end_lineno - 1]
            # The indentation before an import and the import itself are ASCII, so AST byte offsets are characters.
            lines[node.lineno - 1:node.end_lineno] = [
                first[:node.col_offset] + target + ", ".join(parts) + last[node.end_col_offset:]]
        relative = path.relative_to(self.root).as_posix()
        if not imports:
            return _header(relative, "verbatim") + source
        # The import block is the source's with its project lines rewritten, so isort's order may not hold.
        return _header(relative, "its project imports made module-local") + "# ruff: noqa: I001\n" + "".join(lines)

    def constants_module(self, module: str) -> str:
        """A module holding the named literal constants of `module`, copied as written."""
        path = _module_file(self.root, module)
        source = path.read_text(encoding="utf-8")
        statements = {}
        for node in ast.parse(source).body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
                if isinstance(node, ast.AnnAssign) else []
            for target in targets:
                if isinstance(target, ast.Name) and target.id in self.constants[module]:
                    try:
                        ast.literal_eval(node.value)
                    except ValueError:
                        raise ValueError(f"{path}:{node.lineno}: {target.id} is not a literal, so it cannot be "
                                         "copied on its own") from None
                    statements[target.id] = ast.get_source_segment(source, node)
        missing = sorted(self.constants[module] - set(statements))
        if missing:
            raise ValueError(f"{path}: no top-level assignment of {missing}")
        body = "\n\n".join(statements[name] for name in sorted(statements))
        names = ", ".join(f"`{name}`" for name in sorted(statements))
        return (_header(path.relative_to(self.root).as_posix(), "these constants only") +
                f'"""{names} of `{module}`, copied alone: that module imports torch and\n'
                'transformers, which a metric does not need."""\n\n\n' + body + "\n")


def _resource_files(root: Path) -> list[Path]:
    folder = root / RESOURCES
    return sorted(path for path in folder.rglob("*") if path.is_file() and "__pycache__" not in path.parts)


def _resources_module(root: Path) -> str:
    """The labeler's phrase lists (`*.txt` under `amrg/data/resources`) as text in a Python module, with the
    upstream licence of the CheXpert lists in its docstring (it travels wherever the module is copied)."""
    folder = root / RESOURCES
    licence = (folder / "chexpert_labeler" / "LICENSE.chexpert-labeler").read_text(encoding="utf-8")
    lines = [
        _header(RESOURCES.as_posix() + "/", "the phrase lists, as text"),
        '"""The phrase lists that `labeler.ReportLabeler` reads, keyed by their path under `resources/`.\n\n'
        "`evaluate` copies only the Python files a metric script imports into its module cache, never data files,\n"
        "so the lists travel inside this module; `resources/` beside it holds the same files for reading.\n\n"
        "`chexpert_labeler/phrases/` is copied byte-for-byte from stanfordmlgroup/chexpert-labeler, under this\n"
        "licence (`labeler_extensions/` are this project's own):\n\n"
        + "".join(f"    {line}".rstrip() + "\n" for line in licence.splitlines()) + '"""\n\n\n',
        "PHRASE_FILES: dict[str, str] = {\n",
    ]
    for path in _resource_files(root):
        if path.suffix != ".txt":
            continue
        text = path.read_bytes().decode("utf-8")
        chunks = text.splitlines(keepends=True) or [""]
        lines.append(f"    {path.relative_to(folder).as_posix()!r}: (\n")
        lines.extend(f"        {chunk!r}\n" for chunk in chunks)
        lines.append("    ),\n")
    lines.append("}\n")
    return "".join(lines)


def vendored_files(spec: MetricSpec, root: Path = REPO) -> dict[str, bytes]:
    """Every file the script produces in `metrics/<spec.name>/`: relative path -> content."""
    vendoring = _Vendoring(root, spec)
    files = {f"{_local_name(module)}.py": vendoring.rewrite(path).encode("utf-8")
             for module, path in vendoring.modules.items()}
    for module in vendoring.constants:
        files[f"{CONSTANTS[module][0]}.py"] = vendoring.constants_module(module).encode("utf-8")
    if spec.resources:
        files[f"{RESOURCES_MODULE}.py"] = _resources_module(root).encode("utf-8")
        for path in _resource_files(root):
            files[(Path("resources") / path.relative_to(root / RESOURCES)).as_posix()] = path.read_bytes()
    return dict(sorted(files.items()))


def required_imports(spec: MetricSpec, root: Path = REPO) -> list[str]:
    """The vendored modules, which the metric script must import itself (evaluate copies only those)."""
    return sorted(Path(name).stem for name in vendored_files(spec, root) if "/" not in name and name.endswith(".py"))


def _script_imports(script: Path) -> set[str]:
    """The sibling modules `evaluate` copies with `script`: what its own parser reads as local imports."""
    from evaluate.loading import get_imports

    return {name for kind, name, _, _ in get_imports(str(script)) if kind == "internal"}


def _existing_files(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file() and "__pycache__" not in path.parts}


def differences(metrics_dir: Path, root: Path = REPO) -> list[str]:
    """What `vendor(metrics_dir)` would change, one line a file (empty when the copies are current), plus vendored
    modules that a metric script does not import."""
    problems = []
    for spec in METRICS:
        folder = metrics_dir / spec.name
        expected = vendored_files(spec, root)
        existing = _existing_files(folder)
        hand_written = {f"{spec.name}.py", *HAND_WRITTEN}
        for name, content in expected.items():
            if name not in existing:
                problems.append(f"{folder / name}: missing")
            elif existing[name] != content:
                problems.append(f"{folder / name}: differs from what its source gives")
        for name in existing:
            if name not in expected and name not in hand_written:
                problems.append(f"{folder / name}: stale (no longer produced)")
        script = folder / f"{spec.name}.py"
        if script.is_file():
            missing = sorted(set(required_imports(spec, root)) - _script_imports(script))
            if missing:
                problems.append(f"{script}: does not import {missing} itself (`from .module import name` at the top "
                                "level): evaluate copies only the sibling modules the script imports")
    return problems


def vendor(metrics_dir: Path, root: Path = REPO) -> list[Path]:
    """Write every vendored file that differs from what its source gives and remove stale ones; returns the paths
    changed. Each file is written to a temporary file and renamed into place."""
    changed = []
    for spec in METRICS:
        folder = metrics_dir / spec.name
        expected = vendored_files(spec, root)
        existing = _existing_files(folder) if folder.is_dir() else {}
        for name, content in expected.items():
            if existing.get(name) != content:
                # newline="" writes the text exactly as the source has it (no line-ending translation).
                with staged_file(folder / name, newline="") as handle:
                    handle.write(content.decode("utf-8"))
                changed.append(folder / name)
        for name in existing:
            if name not in expected and name not in {f"{spec.name}.py", *HAND_WRITTEN}:
                (folder / name).unlink()
                changed.append(folder / name)
                # A folder the stale file leaves empty (a resource list's) goes too.
                parent = (folder / name).parent
                while parent != folder and not any(parent.iterdir()):
                    parent.rmdir()
                    parent = parent.parent
    return changed


def main(argv: list[str] | None = None) -> int:
    """Command line: vendor, or with `--check` report differences and exit 1 when there are any."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a copy is out of date")
    parser.add_argument("--metrics-dir", type=Path, default=REPO / "metrics", help="default: the repository's")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.metrics_dir.is_dir():
        parser.error(f"--metrics-dir {args.metrics_dir} is not a folder")
    if args.check:
        problems = differences(args.metrics_dir)
        for problem in problems:
            logger.error(problem)
        if problems:
            logger.error("run `python scripts/vendor_metric_code.py` to update the copies")
        return 1 if problems else 0
    changed = vendor(args.metrics_dir)
    for path in changed:
        logger.info("updated %s", path)
    problems = [problem for problem in differences(args.metrics_dir) if "does not import" in problem]
    for problem in problems:
        logger.error(problem)
    if not changed:
        logger.info("the vendored copies are current")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
