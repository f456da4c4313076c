"""The architecture, read from the imports (AST): DESIGN.md's "may import" table, no
TensorFlow where live processes run, and one definition of each shared mechanism."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# DESIGN.md, "Top level": what each package may import (besides itself).
MAY_IMPORT: dict[str, frozenset[str]] = {
    "bus_schemas": frozenset(),
    "bus": frozenset({"bus_schemas"}),
    "audio": frozenset({"bus_schemas"}),
    "inference": frozenset({"bus_schemas", "audio"}),
    "producers": frozenset({"bus_schemas", "bus", "audio"}),
    "consumers": frozenset({"bus_schemas", "bus", "audio", "inference"}),
    "projections": frozenset({"bus_schemas", "bus", "audio"}),
    "learning": frozenset({"bus_schemas", "audio", "inference"}),
    "tidzam_ctl": frozenset({"bus_schemas", "bus", "audio", "inference", "producers",
                             "consumers", "projections", "learning"}),
}
OURS = frozenset(MAY_IMPORT) | {"tests", "benchmarks"}
LIVE = ("bus_schemas", "bus", "audio", "inference", "producers", "consumers", "projections")
TENSORFLOW = frozenset({"tensorflow", "tf_keras", "keras", "tensorboard"})


def _modules() -> Iterator[tuple[str, Path]]:
    for package in MAY_IMPORT:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            yield ".".join(parts), path


MODULES = dict(_modules())


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the file, functions' included."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # ``from pkg import module`` names a module too
            found.extend((node.lineno, f"{module}.{a.name}") for a in node.names
                         if f"{module}.{a.name}" in MODULES)
    return found


def test_every_import_follows_the_may_import_table() -> None:
    wrong = []
    for module, path in MODULES.items():
        package = module.split(".")[0]
        allowed = MAY_IMPORT[package] | {package}
        for line, imported in _imports(path):
            top = imported.split(".")[0]
            if top in OURS and top not in allowed:
                wrong.append(f"{path.relative_to(REPO)}:{line} {package} imports {imported}")
    assert not wrong, "imports that break DESIGN.md's table:\n" + "\n".join(sorted(set(wrong)))


def test_no_tensorflow_is_reachable_from_the_live_packages() -> None:
    graph = {m: {i for _, i in _imports(p)} for m, p in MODULES.items()}

    def project_modules(imported: str) -> list[str]:
        """The modules of ours an import loads: the module and its parent packages."""
        parts = imported.split(".")
        return [".".join(parts[:k]) for k in range(1, len(parts) + 1)
                if ".".join(parts[:k]) in MODULES]

    offenders = []
    for start in (m for m in MODULES if m.split(".")[0] in LIVE):
        seen, todo, via = {start}, [start], {start: start}
        while todo:
            current = todo.pop()
            for imported in graph[current]:
                if imported.split(".")[0] in TENSORFLOW:
                    chain, node = [current], current
                    while via[node] != node:
                        node = via[node]
                        chain.append(node)
                    offenders.append(" <- ".join([imported, *chain]))
                for nxt in project_modules(imported):
                    if nxt not in seen:
                        seen.add(nxt)
                        via[nxt] = current
                        todo.append(nxt)
    assert not offenders, "TensorFlow reachable from a live package:\n" + "\n".join(offenders)


# ------------------------------------------------- one definition of each

AUDIO_SUFFIX_LITERALS = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a",
                                   ".aac", ".aif", ".aiff", ".wma", ".webm", ".mka"})
# Not a set of formats Tidzam opens: the members of Debian packages the corpus unpacks,
# OpenTTD's ``.cat`` sound archives among them.
SUFFIX_ALLOWED = {("learning/corpus/fetch.py", "PACKAGE_SOUND_SUFFIXES")}


def _nodes() -> Iterator[tuple[str, ast.AST, ast.Module]]:
    for _module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        rel = str(path.relative_to(REPO))
        for node in ast.walk(tree):
            yield rel, node, tree


def _assigned_name(tree: ast.Module, target: ast.AST) -> str | None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign):
            value = node.value
            if value is not None and any(n is target for n in ast.walk(value)):
                first = node.targets[0] if isinstance(node, ast.Assign) else node.target
                return first.id if isinstance(first, ast.Name) else None
    return None


def test_the_pcm_scale_is_written_once() -> None:
    found = [f"{rel}:{node.lineno}" for rel, node, _ in _nodes()
             if isinstance(node, ast.Constant) and not isinstance(node.value, bool)
             and isinstance(node.value, int | float) and abs(node.value) in (32767, 32768)
             and rel != "bus_schemas/pcm.py"]
    assert not found, "PCM scale outside bus_schemas/pcm.py: " + ", ".join(found)


def _mentions_overlap(node: ast.AST) -> bool:
    return any((isinstance(n, ast.Name) and "overlap" in n.id)
               or (isinstance(n, ast.Attribute) and "overlap" in n.attr) for n in ast.walk(node))


def test_the_window_hop_is_computed_once() -> None:
    found = [f"{rel}:{node.lineno}" for rel, node, _ in _nodes()
             if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub)
             and isinstance(node.left, ast.Constant) and node.left.value in (1, 1.0)
             and _mentions_overlap(node.right) and rel != "inference/windows.py"]
    assert not found, "hop formula outside inference/windows.py: " + ", ".join(found)


def test_the_audio_suffixes_are_listed_once() -> None:
    found = []
    for rel, node, tree in _nodes():
        if rel == "audio/suffixes.py" or not isinstance(node, ast.Set | ast.Tuple | ast.List):
            continue
        literals = {e.value for e in node.elts if isinstance(e, ast.Constant)}
        if literals & AUDIO_SUFFIX_LITERALS and (rel, _assigned_name(tree, node)) not in \
                SUFFIX_ALLOWED:
            found.append(f"{rel}:{node.lineno}")
    assert not found, "audio suffixes outside audio/suffixes.py: " + ", ".join(found)


def test_the_semver_pattern_is_written_once() -> None:
    found = [f"{rel}:{node.lineno}" for rel, node, _ in _nodes()
             if (isinstance(node, ast.Constant) and isinstance(node.value, str)
             and r"\.(" in node.value and r"\d" in node.value and "0|[1-9]" in node.value)
             or (isinstance(node, ast.Constant) and isinstance(node.value, str)
             and node.value.startswith(r"^(\d+)\.(\d+)"))
             if rel != "inference/semver.py"]
    assert not found, "a semver pattern outside inference/semver.py: " + ", ".join(found)


@pytest.mark.parametrize("limit", [500])
def test_no_module_is_over_the_limit(limit: int) -> None:
    big = [f"{path.relative_to(REPO)} ({n} lines)" for path in
           sorted([*MODULES.values(), *(REPO / "tests").glob("*.py"),
                   *(REPO / "benchmarks").glob("*.py")])
           if (n := len(path.read_text().splitlines())) > limit]
    assert not big, f"modules over {limit} lines: " + ", ".join(big)


def test_every_package_has_a_readme() -> None:
    missing = [p for p in MAY_IMPORT if not (REPO / p / "README.md").is_file()]
    assert not missing, f"packages without a README.md: {missing}"
