"""pretrain.methods: the registry, what each method states, its targets and its loss; no name checks elsewhere."""

import ast
import os

import pytest
import torch

from pretrain.config import CHOICES, ConfigError, load_config
from pretrain.methods import METHODS, VIEW_LAYOUTS, Method, method_of, msr_loss, view_layout
from pretrain.modeling.networks import build_networks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_every_method_states_its_views_target_distance_and_beta():
    table = {
        name: (m.ema_target, m.distance, m.uses_beta, m.multi_stage) for name, m in METHODS.items()
    }
    assert table == {
        "msr": (True, "mse", True, True),
        "byol": (True, "mse", False, False),
        "simsiam": (False, "negcos", False, False),
        "simsiam_msr": (False, "negcos", True, True),
    }
    for name, method in METHODS.items():
        assert isinstance(method, Method) and method.name == name and method.description
        layouts = {method.view_layout(views) for views in CHOICES["METHOD.VIEWS"]}
        assert layouts == (
            {"multi_stage"} if method.multi_stage else {"aa", "aw"}
        ) and layouts <= set(VIEW_LAYOUTS)


def test_config_choices_and_network_building_read_the_registry():
    assert CHOICES["METHOD.NAME"] == tuple(METHODS)
    with pytest.raises(ConfigError, match="METHOD.NAME"):
        load_config("digits_demo.yaml", ["METHOD.NAME", "moco"])
    for name, method in METHODS.items():
        cfg = load_config("digits_demo.yaml", ["METHOD.NAME", name, "MODEL.WIDTH", "4"])
        assert method_of(cfg) is method
        _, target = build_networks(cfg)
        assert (target is not None) == method.ema_target


def test_byol_and_simsiam_ignore_beta_msr_weighs_it():
    torch.manual_seed(0)
    q1, q2, z1, z2 = (torch.randn(4, 8) for _ in range(4))
    for name in ("byol", "simsiam"):
        loss, weak, _ = METHODS[name].loss(q1, q2, z1, z2, beta=0.7, stop_grad_aa=True)
        assert torch.equal(loss, weak)
    loss, weak, aggressive = METHODS["msr"].loss(q1, q2, z1, z2, beta=0.7, stop_grad_aa=True)
    assert torch.allclose(loss, 0.3 * weak + 0.7 * aggressive)
    assert torch.equal(
        METHODS["simsiam_msr"].loss(q1, q2, z1, z2, 0.7, True).loss,
        msr_loss(q1, q2, z1, z2, 0.7, True, "negcos").loss,
    )


class _Net(torch.nn.Module):
    """A stand-in online network: projection = 2x, prediction = 3x (so each output is recognisable)."""

    def forward(self, x):
        return 2 * x, 3 * x


def test_targets_of_each_method_come_from_the_right_views_and_network():
    w1, w2, a1, a2 = (torch.full((1, 2), float(v)) for v in (1, 2, 3, 4))
    online, target = _Net(), (lambda x: 5 * x)
    q1, q2, z1, z2 = METHODS["msr"].outputs(online, target, [w1, w2, a1, a2])
    assert [t.item() for t in (q1[0, 0], q2[0, 0], z1[0, 0], z2[0, 0])] == [
        9,
        12,
        5,
        10,
    ]  # q of a, EMA z of w
    _, _, z1, z2 = METHODS["simsiam_msr"].outputs(online, None, [w1, w2, a1, a2])
    assert (z1[0, 0].item(), z2[0, 0].item()) == (2, 4)  # online projections of the weak views
    q1, q2, z1, z2 = METHODS["byol"].outputs(online, target, [a1, a2])
    assert [t.item() for t in (q1[0, 0], q2[0, 0], z1[0, 0], z2[0, 0])] == [9, 12, 15, 20]
    a1.requires_grad_(True)
    q1, _, z1, _ = METHODS["simsiam"].outputs(online, None, [a1, a2])
    assert (
        z1[0, 0].item() == 6 and not z1.requires_grad and q1.requires_grad
    )  # sg(online projection)


def test_view_layout_of_a_config():
    cfg = load_config("digits_demo.yaml", ["METHOD.NAME", "byol", "METHOD.VIEWS", "AW"])
    assert view_layout(cfg) == "aw"


def _compared_method_names(path):
    """(line, name) of each comparison of a value with a method-name literal in ``path``."""
    names = set(METHODS)
    found = []
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                literals = (
                    operand.elts
                    if isinstance(operand, (ast.Tuple, ast.List, ast.Set))
                    else [operand]
                )
                found += [
                    (node.lineno, lit.value)
                    for lit in literals
                    if isinstance(lit, ast.Constant) and lit.value in names
                ]
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "startswith":
            found += [
                (node.lineno, a.value)
                for a in node.args
                if isinstance(a, ast.Constant)
                and isinstance(a.value, str)
                and any(n.startswith(a.value) for n in names)
            ]
    return found


def test_nothing_outside_pretrain_methods_compares_method_names():
    offenders = []
    for package in ("pretrain", "transfer", "tools"):
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            if os.path.join("pretrain", "methods") in folder:
                continue
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    offenders += [
                        (os.path.relpath(path, ROOT), *hit) for hit in _compared_method_names(path)
                    ]
    assert offenders == [], "compare the method's attributes (pretrain.methods) instead of its name"
