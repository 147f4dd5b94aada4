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


# ---------------------------------------------------------------- kinds of concept (style, object, unsafe)

def test_concept_kind_on_the_toy_world_and_on_sd():
    from prunefit.config.concepts import concept_kind
    from prunefit.errors import ConfigError
    from prunefit.toyworld.erase_defaults import toy_concept_kinds

    toy = toy_concept_kinds()
    assert [concept_kind(c, toy) for c in ("skull", "bone face", "Claude Dots", "circle")] == \
        ["unsafe", "unsafe", "style", "object"]
    with pytest.raises(ConfigError, match="concept 'dog' is not one this model knows; erase one of"):
        concept_kind("dog", toy)
    with pytest.raises(ConfigError, match="is of kind style on this model, not object"):
        concept_kind("Claude Dots", toy, "object")
    assert [concept_kind(c) for c in ("nudity", "Naked", "a photo of a nude man", "NSFW", "Van Gogh", "church")] == \
        ["unsafe", "unsafe", "unsafe", "unsafe", "style", "style"]
    assert concept_kind("church", stated="object") == "object" and concept_kind("naked mole rat", stated="object") \
        == "object"  # the user's word wins on an open vocabulary
    with pytest.raises(ConfigError, match="concept_kind must be one of style, object, unsafe"):
        concept_kind("x", stated="thing")


def test_sd_gets_the_references_settings_per_kind():
    """``tiny`` (like SD) carries no sidecar: nudity gets ESD-u, UCE's "person", ConceptPrune's humans; an object
    (stated) ESD-u, the unconditional guide and the reference's scenes; a style the papers' defaults; never toy text."""
    def cfg(method, concept, *extra):
        return load_erase_config([], ["model=tiny", f"removal.method={method}", f"removal.concepts=[{concept}]",
                                      *extra])

    assert cfg("esd", "nudity").esd.train_method == "noxattn"
    assert cfg("esd", "nudity").removal.model_defaults == ["esd.train_method"]
    assert cfg("uce", "nudity").uce.guides == ["person"]
    cp = cfg("concept_prune", "nudity").concept_prune
    assert (cp.target_template, len(cp.things), cp.things[0]) == ("a photo of a naked {thing}", 18, "man")
    assert cfg("esd", "church", "removal.concept_kind=object").esd.train_method == "noxattn"
    assert cfg("uce", "church", "removal.concept_kind=object").uce.guides == [" "]
    obj = cfg("concept_prune", "church", "removal.concept_kind=object").concept_prune
    assert (obj.base_template, obj.target_template, obj.things[0]) == ("a {thing}", "a {concept} in a {thing}", "road")
    style = cfg("concept_prune", "Van Gogh").concept_prune
    assert (style.base_template, len(style.things)) == ("a photo of a {thing}", 20)
    assert (cfg("esd", "Van Gogh").esd.train_method, cfg("uce", "Van Gogh").uce.guides) == ("xattn", ["art"])
    adv = cfg("advunlearn", "nudity").advunlearn
    assert (adv.train_method, len(adv.retain_prompts), adv.retain_prompts[0]) == ("noxattn", 243, "a photo of chair")
    toy_text = ("circle", "square", "triangle", "background")
    assert not any(w in p for p in adv.retain_prompts + style.things + cp.things for w in toy_text)
    assert cfg("uce", "nudity", "uce.guides=[body]").uce.guides == ["body"]  # the user still wins


def test_the_toy_world_has_rows_for_objects_and_refuses_unknown_concepts():
    from prunefit.errors import ConfigError

    esd = load_erase_config([], ["removal.method=esd", "removal.concepts=[circle]"]).esd
    assert (esd.train_method, esd.iterations, esd.lr) == ("noxattn", 200, 1e-4)  # not the artists' ESD-x
    assert esd.retain_prompts and not any("circle" in p for p in esd.retain_prompts)  # never retain what is erased
    uce = load_erase_config([], ["removal.method=uce", "removal.concepts=[circle]"]).uce
    assert uce.guides == ["square"] and "circle" not in uce.preserve and {"square", "Claude Dots"} <= set(uce.preserve)
    cp = load_erase_config([], ["removal.method=concept_prune", "removal.concepts=[circle]"]).concept_prune
    assert cp.target_template == "a {concept} on a {thing} background"
    art = load_erase_config([], ["removal.method=concept_prune", "removal.concepts=[Claude Dots]"]).concept_prune
    assert (art.things[0], art.base_template, art.target_template) == ("a red circle", "{thing}",
                                                                      "{thing} in the style of {concept}")
    adv = load_erase_config([], ["removal.method=advunlearn", "removal.concepts=[skull]"]).advunlearn
    assert adv.retain_prompts[0] == "a red circle on a black background" and len(adv.retain_prompts) == 4
    with pytest.raises(ConfigError, match="concept 'dog' is not one this model knows"):
        load_erase_config([], ["removal.method=esd", "removal.concepts=[dog]"])


def test_the_experiments_protocol_picks_by_kind_and_keeps_the_archived_toy_sections():
    from prunefit.experiments.common.protocol import EraseKnobs, esd_parameters, method_section, uce_guide
    from prunefit.removal.advunlearn.method import AdvUnlearnConfig
    from prunefit.removal.concept_prune.method import ConceptPruneConfig

    assert [esd_parameters(c) for c in ("skull", "Claude Dots", "circle")] == ["noxattn", "xattn", "noxattn"]
    assert [esd_parameters(c, "stabilityai/stable-diffusion-2-1") for c in ("nudity", "Van Gogh")] == \
        ["noxattn", "xattn"]
    assert (uce_guide("skull", "toyworld"), uce_guide("Claude Dots", "toyworld")) == (["drawing"], ["painting"])
    assert (uce_guide("nudity", "sd"), uce_guide("Van Gogh", "sd")) == (["person"], ["art"])
    knobs = EraseKnobs(esd_iterations=10, esd_lr=1e-4, esd_ddim_steps=20, advunlearn_iterations=10,
                       concept_prune_steps=5)
    cp = method_section(ConceptPruneConfig, "concept_prune", "skull", "toyworld", knobs)
    assert (cp.things[0], cp.base_template, cp.target_template) == ("a red circle", "{thing}",
                                                                    "{thing} that is a skull")
    adv = method_section(AdvUnlearnConfig, "advunlearn", "Claude Dots", "toyworld", knobs)
    assert len(adv.retain_prompts) == 4 and adv.train_method == "xattn"
    sd = method_section(ConceptPruneConfig, "concept_prune", "nudity", "sd", knobs)
    assert sd.target_template == "a photo of a naked {thing}"


def test_every_shape_gets_the_object_rows_judged_on_dev():
    """Each of the five shapes resolves to the object row (not a style's ESD-x / "painting"), the row that
    scripts/check_erase_defaults.py judged (docs/results/erase_defaults_toy.md, section 5), except circle's UCE
    guide: the teacher draws a circle when a caption names no shape, so " " cannot erase it and "square" (0% of
    circles on dev and test) is its own row. ``prunefit erase`` (the config loader) and the experiments
    (``protocol.uce_guide``) resolve the same guide."""
    from prunefit.experiments.common.protocol import uce_guide
    from prunefit.toyworld.erase_defaults import toy_method_defaults
    from prunefit.toyworld.world import SHAPES

    carried = toy_method_defaults()
    obj = carried["kinds"]["object"]
    assert (obj["esd"], obj["uce"]) == ({"train_method": "noxattn"}, {"guides": [" "]})
    assert carried["concepts"] == {"circle": {"uce": {"guides": ["square"]}}}
    for shape in SHAPES:
        guide = ["square"] if shape == "circle" else [" "]
        esd = load_erase_config([], ["removal.method=esd", f"removal.concepts=[{shape}]"]).esd
        uce = load_erase_config([], ["removal.method=uce", f"removal.concepts=[{shape}]"]).uce
        assert (esd.train_method, esd.iterations, uce.guides) == ("noxattn", 200, guide)
        assert uce_guide(shape, "toyworld") == guide
        assert shape not in uce.preserve and not any(shape in p for p in esd.retain_prompts)
    assert (uce_guide("circle", "toyworld"), uce_guide("star", "toyworld")) == (["square"], [" "])
