"""The package layout's rules (docs/ARCHITECTURE.md): layers inside pretrain/, the public API at its edge."""

import ast
import os

import pytest

import pretrain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What each part of pretrain/ may import from the others (bottom to top).
ALLOWED = {
    "utils": set(),
    "methods": set(),
    "config": {
        "utils",
        "methods",
        "data.specs",
    },  # data.specs: the data-set registry, a leaf module
    "modeling": {"utils", "methods", "config"},
    "data": {"utils", "methods", "config"},
    "engine": {"utils", "methods", "config", "modeling", "data"},
    "viz": {"utils", "methods", "config", "modeling", "data", "engine"},
    "cli": {"utils", "config", "data"},
}
REQUIRED_API = {
    "load_config",
    "build_networks",
    "build_optimizer",
    "train_step",
    "msr_loss",
    "load_checkpoint",
    "build_pretrain_dataset",
    "build_eval_datasets",
    "METHODS",
}


def _python_files(folder):
    for base, _, files in os.walk(os.path.join(ROOT, folder)):
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(base, name)


def _imports(path):
    """(line, module, names) of every absolute import in ``path``."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []


def _part(path):
    """'engine' for pretrain/engine/trainer.py, 'config' for pretrain/config.py."""
    rel = os.path.relpath(path, os.path.join(ROOT, "pretrain")).split(os.sep)
    return rel[0] if len(rel) > 1 else rel[0][:-3]


def test_every_public_name_resolves_and_the_documented_entry_points_are_public():
    assert REQUIRED_API <= set(pretrain.__all__)
    assert pretrain.__all__ == sorted(set(pretrain.__all__))
    for name in pretrain.__all__:
        assert getattr(pretrain, name) is not None, name
        assert not name.startswith("_")
    with pytest.raises(AttributeError, match="public names"):
        getattr(pretrain, "_merge")


def test_layers_inside_pretrain_import_only_downwards():
    offenders = []
    for path in _python_files("pretrain"):
        part = _part(path)
        if part == "__init__":
            continue
        for line, module, _ in _imports(path):
            if module == "transfer" or module.startswith("transfer."):
                offenders.append(
                    (os.path.relpath(path, ROOT), line, module, "pretrain never imports transfer")
                )
            if module.startswith("pretrain."):
                target = module.split(".")[1]
                leaf = ".".join(module.split(".")[1:3])
                if target != part and target not in ALLOWED[part] and leaf not in ALLOWED[part]:
                    offenders.append(
                        (
                            os.path.relpath(path, ROOT),
                            line,
                            module,
                            f"{part} may not import {target}",
                        )
                    )
    assert offenders == []


def test_transfer_and_tools_use_only_the_public_api():
    public = set(pretrain.__all__)
    offenders = []
    for folder in ("transfer", "tools"):
        for path in _python_files(folder):
            for line, module, names in _imports(path):
                rel = os.path.relpath(path, ROOT)
                if module.startswith("pretrain."):
                    offenders.append(
                        (rel, line, f"imports {module}: use 'from pretrain import NAME'")
                    )
                elif module == "pretrain":
                    offenders += [
                        (rel, line, f"'{n}' is not in pretrain.__all__")
                        for n in names
                        if n not in public
                    ]
    assert offenders == []
