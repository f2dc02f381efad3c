"""The house has one direction (README "Layout"): magma <- data_pipeline <- serve <- eval, with
train beside them on magma alone. A stage reaches another only through its public surface:
`data_pipeline.perception` for perception, `serve.client` / `serve.policy` for a model.

Every import statement is checked, including the lazy ones inside functions, so an arrow
against the direction fails here before a reviewer has to find it.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("magma", "data_pipeline", "train", "serve", "eval")

# stage -> the stages it may import at all
ALLOWED: dict[str, set[str]] = {
    "magma": set(),
    "data_pipeline": {"magma"},
    "train": {"magma"},
    "serve": {"magma", "data_pipeline"},
    "eval": {"magma", "data_pipeline", "serve"},
}
# imported stage -> the modules of it that other stages may import (its public surface)
PUBLIC: dict[str, tuple[str, ...]] = {
    "magma": ("magma",),  # magma is the shared vocabulary: all of it is public
    "data_pipeline": ("data_pipeline.perception",),
    "serve": ("serve.client", "serve.policy"),
}


def _imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, lazy ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the file's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from data_pipeline import perception` names the module perception
            found += [(node.lineno, f"{module}.{a.name}") for a in node.names]
    return found


def _covered(module: str, public: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in public)


def layering_violations(root: Path = ROOT) -> list[str]:
    problems = []
    for stage in STAGES:
        for path in sorted((root / stage).rglob("*.py")):
            for line, module in _imports(path, root):
                target = module.split(".")[0]
                if target not in STAGES or target == stage:
                    continue
                where = f"{path.relative_to(root)}:{line} imports {module}"
                if target not in ALLOWED[stage]:
                    problems.append(f"{where}: {stage} may not import {target} "
                                    f"(allowed: {sorted(ALLOWED[stage]) or 'nothing'})")
                elif not _covered(module, PUBLIC[target]) and not _covered(module.rsplit(".", 1)[0], PUBLIC[target]):
                    problems.append(f"{where}: reaches into {target}'s internals "
                                    f"(public: {', '.join(PUBLIC[target])})")
    return problems


def test_no_import_against_the_direction_or_into_internals() -> None:
    problems = layering_violations()
    assert not problems, "layering violations:\n" + "\n".join(problems)


def test_the_checker_catches_a_bad_arrow(tmp_path: Path) -> None:
    # A throwaway tree with one upward import and one reach into internals must be reported.
    for stage in STAGES:
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "__init__.py").write_text("")
    (tmp_path / "magma" / "bad.py").write_text("def f():\n    import serve.policy\n")
    (tmp_path / "serve" / "worse.py").write_text("from data_pipeline.build.writer import build_mix\n")
    (tmp_path / "serve" / "fine.py").write_text("from data_pipeline import perception\nimport magma.codecs\n")
    (tmp_path / "eval" / "fine.py").write_text("from serve.client import PolicyClient\n")
    problems = layering_violations(tmp_path)
    assert len(problems) == 2, problems
    assert "magma may not import serve" in problems[0]
    assert "reaches into data_pipeline's internals" in problems[1]


@pytest.mark.parametrize("module", ["magma", "magma.codecs", "magma.prompts", "magma.schema"])
def test_import_magma_loads_no_stage(module: str) -> None:
    code = (f"import sys, {module}; "
            f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {STAGES[1:]!r}); "
            "print(bad); sys.exit(bool(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, f"import {module} loaded stages: {out.stdout} {out.stderr[-500:]}"


# the contracts a data worker or a client needs: none of them may pull the model's stack
LIGHT_MODULES = ("magma", "magma.codecs", "magma.prompts", "magma.schema", "magma.shards", "magma.marks",
                 "magma.episode", "magma.inference_settings", "magma.config_io", "magma.action_tokenizer")


def test_import_magma_contracts_loads_neither_torch_nor_transformers() -> None:
    code = (f"import sys; import {', '.join(LIGHT_MODULES)}; "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')); "
            "print(heavy[:10]); sys.exit(bool(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, f"importing the contracts loaded: {out.stdout} {out.stderr[-500:]}"


@pytest.mark.parametrize("transformers_first", [False, True], ids=["magma-first", "transformers-first"])
def test_import_magma_still_registers_the_auto_classes(tmp_path: Path, transformers_first: bool) -> None:
    # README "Using the model from Python": `import magma`, then the Auto classes read our
    # folders, whichever of the two a process imported first, with no explicit register() call.
    ckpt = tmp_path / "ckpt"
    init = subprocess.run([sys.executable, "-m", "magma.cli", "model", "init", "--config",
                           "configs/model/tiny.yaml", "--out", str(ckpt)],
                          capture_output=True, text=True, cwd=ROOT)
    assert init.returncode == 0, init.stderr[-2000:]
    order = ["from transformers import AutoConfig, AutoModelForCausalLM, AutoProcessor", "import magma"]
    code = "\n".join((order[::-1] if not transformers_first else order) + [
        f"model = AutoModelForCausalLM.from_pretrained({str(ckpt)!r})",
        f"processor = AutoProcessor.from_pretrained({str(ckpt)!r})",
        f"config = AutoConfig.from_pretrained({str(ckpt)!r})",
        "print(type(model).__name__, type(processor).__name__, type(processor.image_processor).__name__,"
        " type(config).__name__, magma.MagmaForCausalLM is type(model))",
    ])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-5:] == ["MagmaForCausalLM", "MagmaProcessor", "MagmaImageProcessor",
                                       "MagmaConfig", "True"], out.stdout
