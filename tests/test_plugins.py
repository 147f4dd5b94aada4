"""Plug-ins: an installed package that declares entry points in ``prunefit.methods``, ``prunefit.metrics`` and
``prunefit.attacks`` is found by prunefit with no edit to it; a plug-in that fails to load is skipped with a one-line
warning naming it. The package is "installed" by writing its module and a ``*.dist-info`` folder (METADATA +
entry_points.txt) into a temporary site folder: ``importlib.metadata`` discovers any dist-info on ``sys.path``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pytest

from prunefit.config.schema import SamplerConfig
from prunefit.data.prompts import inline_prompts
from prunefit.generation.sample import generate_run
from prunefit.utils.registry import Registry

PLUGIN = '''
"""A tiny prunefit plug-in: an edit method (an entry object), a metric (a callable) and an attack (an entry)."""
from dataclasses import dataclass, field

import torch

from prunefit.attacks.base import AttackEntry, AttackOutput
from prunefit.evaluation.registry import MetricResult, register_metric
from prunefit.removal.registry import EditResult, MethodEntry


@dataclass
class HalveConfig:
    concepts: list = field(default_factory=list)
    factor: float = 0.5


def halve(ctx, cfg):
    with torch.no_grad():
        ctx.unet.conv_out.weight.mul_(cfg.factor)
    return EditResult({"factor": cfg.factor})


METHOD = MethodEntry("demo_halve", "edit", HalveConfig, "halves conv_out", "prunefit_demo_plugin", apply=halve)


@dataclass
class CountConfig:
    weight: float = 1.0


def count_rows(ctx, cfg):
    return MetricResult({"weighted_rows": cfg.weight * len(ctx.rows)}, {"weight": cfg.weight})


def register_metrics():
    register_metric("demo_metric", count_rows, "images", "images x weight", CountConfig)


@dataclass
class EchoConfig:
    def budget(self):
        return {}


def echo(ctx, cfg, prompts):
    return [AttackOutput(p.id, p.prompt + " !") for p in prompts]


ATTACK = AttackEntry("demo_echo", "fixed", EchoConfig, "appends a bang", "prunefit_demo_plugin", echo)
'''

ENTRY_POINTS = """
[prunefit.methods]
demo_halve = prunefit_demo_plugin:METHOD

[prunefit.metrics]
demo_metric = prunefit_demo_plugin:register_metrics
demo_broken = prunefit_demo_plugin_missing:nothing

[prunefit.attacks]
demo_echo = prunefit_demo_plugin:ATTACK
"""


def install(site, name, module_src, entry_points):
    """Write package ``name`` (its ``__init__.py``) and its dist-info into ``site``, as pip would."""
    (site / name).mkdir(parents=True)
    (site / name / "__init__.py").write_text(textwrap.dedent(module_src))
    info = site / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    install(site, "prunefit_demo_plugin", PLUGIN, ENTRY_POINTS)
    return site


CLI = """
import sys
from prunefit.cli import main
codes = [main(["list", what]) for what in ("methods", "metrics", "attacks")]
codes.append(main(["evaluate", sys.argv[1], "-m", "demo_metric", "demo_metric.weight=2.5"]))
codes.append(main(["attack", "toyworld", "--attack", "demo_echo", "--concept", "skull", "-o", sys.argv[2],
                   "n_prompts=2", "sampler.steps=2", "device=cpu"]))
print("codes", codes)
"""


def test_an_installed_plugin_reaches_the_cli(site, tiny, tmp_path):
    run = tmp_path / "run"
    generate_run(tiny, inline_prompts(["a prompt", "another prompt", "a third"]), SamplerConfig(steps=2), 0, run)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    # one interpreter runs the four commands (each `python -m prunefit` would pay the ~3 s of imports again)
    res = subprocess.run([sys.executable, "-c", CLI, str(run), str(tmp_path / "attack")], capture_output=True,
                         text=True, env=env, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "codes [0, 0, 0, 0, 0]" in res.stdout
    attacked = json.loads((tmp_path / "attack" / "results.json").read_text())  # a plug-in attack runs from the CLI
    assert "demo_echo" in json.dumps(attacked)
    lines = res.stdout.splitlines()
    assert any(ln.startswith("demo_halve") and "[edit] halves conv_out  (prunefit_demo_plugin)" in ln for ln in lines)
    assert any(ln.startswith("esd ") for ln in lines)  # the built-ins are still there
    assert any(ln.startswith("demo_metric") and "[images] images x weight" in ln for ln in lines)
    assert any(ln.startswith("demo_echo") and "[fixed] appends a bang" in ln for ln in lines)
    doc = json.loads((run / "results.json").read_text())
    assert doc["metrics"]["demo_metric"]["values"] == {"weighted_rows": 7.5}  # 3 images x 2.5
    warnings = [ln for ln in res.stderr.splitlines() if "plug-in" in ln]
    assert len(warnings) == 1 and "metric plug-in 'demo_broken'" in warnings[0]
    assert "ModuleNotFoundError" in warnings[0] and "prunefit_demo_plugin_missing" in warnings[0]


@dataclass(frozen=True)
class Thing:
    name: str


GROUP_PLUGIN = '''
from tests_things import Thing
THING = Thing("entry_thing")
NOT_AN_ENTRY = 42
def register():
    import tests_things
    tests_things.REGISTRY.register("called_thing", Thing("called_thing"))
def fails():
    raise RuntimeError("boom\\nsecond line")
'''

GROUP_ENTRY_POINTS = """
[prunefit_test.things]
entry = things_plugin:THING
called = things_plugin:register
number = things_plugin:NOT_AN_ENTRY
raises = things_plugin:fails
shadow = things_plugin:THING_AGAIN
"""


def test_entry_points_load_after_the_builtins_and_broken_ones_only_warn(tmp_path, monkeypatch, capsys):
    site = tmp_path / "site"
    install(site, "things_plugin", GROUP_PLUGIN + 'THING_AGAIN = Thing("builtin_thing")\n', GROUP_ENTRY_POINTS)
    builtin = Thing("builtin_thing")
    registry = Registry("thing", lambda: registry.register("builtin_thing", builtin), group="prunefit_test.things",
                        entry_type=Thing)
    module = type(sys)("tests_things")
    module.Thing, module.REGISTRY = Thing, registry
    monkeypatch.setitem(sys.modules, "tests_things", module)
    monkeypatch.syspath_prepend(str(site))

    names = [t.name for t in registry.all()]
    assert names == ["builtin_thing", "called_thing", "entry_thing"]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3, err  # one line per skipped plug-in
    assert any("thing plug-in 'number'" in ln and "neither an entry object nor a callable" in ln for ln in err)
    assert any("thing plug-in 'raises'" in ln and "RuntimeError: boom" in ln for ln in err)
    assert any("thing plug-in 'shadow'" in ln and "'builtin_thing' is registered twice" in ln for ln in err)
    assert registry.get("builtin_thing") is builtin  # a plug-in cannot shadow a built-in
    registry.all()  # loaded once: no second round of warnings
    assert capsys.readouterr().err == ""
