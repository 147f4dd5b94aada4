"""Models carry their removal-method defaults (prunefit.json): the toy world's work on it, SD keeps the papers'
values, and anything the user sets wins."""

from __future__ import annotations

import json

import pytest

from prunefit.config.load import _dotted_keys, load_config
from prunefit.removal.bilevel.config import BilevelConfig
from prunefit.removal.config import EraseConfig
from prunefit.removal.defaults import resolve_defaults


def load_erase_config(files, overrides):
    return load_config(EraseConfig, files, overrides)


def load_bilevel_config(files, overrides):
    return load_config(BilevelConfig, files, overrides)


def test_the_shipped_sidecar_is_what_the_build_writes():
    from prunefit.toyworld.erase_defaults import toy_method_defaults
    from prunefit.toyworld.paths import teacher_dir

    doc = json.loads((teacher_dir() / "prunefit.json").read_text())
    assert doc["default_guidance_scale"] == 3.0
    assert doc["method_defaults"] == json.loads(json.dumps(toy_method_defaults()))


def test_toy_world_erase_gets_the_toy_settings():
    cfg = load_erase_config([], ["removal.method=esd", "removal.concepts=[Claude Dots]"])
    assert (cfg.esd.lr, cfg.esd.iterations, cfg.esd.ddim_steps, cfg.esd.train_method) == (1e-4, 200, 20, "xattn")
    assert cfg.removal.model_defaults == ["esd.ddim_steps", "esd.iterations", "esd.lr", "esd.retain_prompts",
                                          "esd.retain_weight"]
    assert len(cfg.esd.retain_prompts) == 20 and not any("Claude" in p or "skull" in p for p in cfg.esd.retain_prompts)
    assert cfg.esd.retain_weight == 0.0  # ESD as published; the prompts are there for esd.retain_weight=3
    skull = load_erase_config([], ["removal.method=esd", "removal.concepts=[skull]"])
    assert (skull.esd.train_method, skull.esd.iterations) == ("noxattn", 300)  # ESD-u, as the ESD paper for nudity
    uce = load_erase_config([], ["removal.method=uce", "removal.concepts=[Claude Dots]"])
    assert uce.uce.guides == ["painting"]
    assert "Claude Dots" not in uce.uce.preserve and {"Piet Grid", "Vincent Stripes", "circle"} <= set(uce.uce.preserve)
    assert load_erase_config([], ["removal.method=uce", "removal.concepts=[skull]"]).uce.guides == ["drawing"]


def test_bilevel_reads_the_models_defaults_for_its_upper_method():
    cfg = load_bilevel_config([], ["concepts=[skull]"])
    assert (cfg.esd.train_method, cfg.esd.ddim_steps, cfg.esd.lr) == ("noxattn", 20, 1e-4)  # ESD-u for the unsafe one
    artist = load_bilevel_config([], ["concepts=[Claude Dots]", "esd.ddim_steps=30"])
    assert (artist.esd.train_method, artist.esd.ddim_steps) == ("xattn", 30)  # the user still wins
    adv = load_bilevel_config([], ["upper_method=advunlearn", "concepts=[skull]"])
    assert (adv.advunlearn.train_method, adv.advunlearn.ddim_steps) == ("noxattn", 20)
    sd = load_bilevel_config([], ["model=tiny", "concepts=[skull]"])
    assert (sd.esd.lr, sd.esd.ddim_steps, sd.esd.train_method) == (1e-5, 50, "xattn")  # no sidecar: the paper's


def test_the_user_wins_on_the_command_line_and_in_yaml(tmp_path):
    cfg = load_erase_config([], ["removal.method=esd", "removal.concepts=[skull]", "esd.lr=3e-4",
                                 "esd.train_method=xattn"])
    assert (cfg.esd.lr, cfg.esd.train_method, cfg.esd.iterations) == (3e-4, "xattn", 300)
    f = tmp_path / "e.yaml"
    f.write_text("removal: {method: uce, concepts: [Piet Grid]}\nuce:\n  guides: [square]\n")
    cfg = load_erase_config([f], [])
    assert cfg.uce.guides == ["square"] and cfg.uce.preserve  # guides from the file, preserve from the model
    assert _dotted_keys({"uce": {"guides": ["square"]}, "esd": {"lr": 1}}) == {"uce", "uce.guides", "esd", "esd.lr"}


def test_load_config_itself_applies_the_models_defaults_so_cli_and_api_agree():
    """The defaults are a layer of ``load_config`` (no separate loader): a plain ``load_config(EraseConfig, ...)``
    (what the CLI, the API and a script all call) gets the toy settings, validated once."""
    cfg = load_config(EraseConfig, [], ["removal.method=esd", "removal.concepts=[Claude Dots]"])
    assert (cfg.esd.lr, cfg.esd.iterations, cfg.esd.ddim_steps) == (1e-4, 200, 20)
    assert load_config(BilevelConfig, [], ["concepts=[skull]"]).esd.train_method == "noxattn"


def test_sd_and_tiny_keep_the_papers_values():
    cfg = load_erase_config([], ["model=tiny", "removal.method=esd", "removal.concepts=[x]"])
    assert (cfg.esd.lr, cfg.esd.iterations, cfg.uce.guides) == (1e-5, 1000, ["art"])
    assert cfg.removal.model_defaults == []
    sd = load_erase_config(["configs/sd21/erase_esd_nudity.yaml"], [])
    assert (sd.esd.lr, sd.esd.iterations, sd.esd.train_method) == (1e-5, 1000, "noxattn")


def test_concept_entries_apply_only_when_every_concept_shares_them():
    carried = {"methods": {"esd": {"lr": 1.0}}, "concepts": {"a": {"esd": {"lr": 2.0, "eta": 3.0}},
                                                              "b": {"esd": {"lr": 2.0}}}}
    assert resolve_defaults(carried, "esd", ["a"]) == {"lr": 2.0, "eta": 3.0}
    assert resolve_defaults(carried, "esd", ["a", "b"]) == {"lr": 2.0}
    assert resolve_defaults(carried, "esd", ["a", "c"]) == {"lr": 1.0}
    assert resolve_defaults(carried, "uce", ["a"]) == {}


def test_an_erased_pipeline_carries_the_defaults_on(tmp_path):
    from prunefit.models.components import load_components, save_pipeline

    comps = load_components("tiny")
    comps.method_defaults = {"methods": {"esd": {"lr": 5e-4}}}
    comps.default_guidance = 3.0
    save_pipeline(comps, tmp_path / "p")
    again = load_components(str(tmp_path / "p"))
    assert again.method_defaults == {"methods": {"esd": {"lr": 5e-4}}} and again.default_guidance == 3.0
    cfg = load_erase_config([], [f"model={tmp_path / 'p'}", "removal.method=esd", "removal.concepts=[x]"])
    assert cfg.esd.lr == 5e-4


def test_a_bad_key_in_the_sidecar_is_one_line(tmp_path):
    from prunefit.errors import ConfigError
    from prunefit.models.components import load_components, save_pipeline

    comps = load_components("tiny")
    comps.method_defaults = {"methods": {"esd": {"learning_rate": 5e-4}}}
    save_pipeline(comps, tmp_path / "p")
    with pytest.raises(ConfigError, match=r"prunefit.json sets unknown esd keys \['learning_rate'\]"):
        load_erase_config([], [f"model={tmp_path / 'p'}", "removal.method=esd", "removal.concepts=[x]"])
