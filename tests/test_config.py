"""Config loading: defaults, YAML + overrides, round trip, and rejection of bad keys, types and values."""

from __future__ import annotations

import dataclasses

import pytest

from prunefit.config.load import load_config, save_resolved_config
from prunefit.config.schema import GenerateConfig, ToyworldBuildConfig
from prunefit.errors import ConfigError


def test_defaults_follow_the_paper():
    from prunefit.generation.sample import resolve_sampler
    from prunefit.models.components import load_components

    cfg = load_config(GenerateConfig)
    assert (cfg.sampler.scheduler, cfg.sampler.steps, cfg.sampler.guidance_scale) == ("pndm", 25, None)
    assert resolve_sampler(cfg.sampler, load_components("tiny")).guidance_scale == 7.5  # SD-like: the paper's


def test_yaml_then_overrides_in_order(tmp_path):
    f = tmp_path / "a.yaml"
    f.write_text("model: tiny\nsampler:\n  steps: 10\n  guidance_scale: 3.0\n")
    cfg = load_config(GenerateConfig, [f], ["sampler.steps=4", "prompts=[a, b]"])
    assert cfg.model == "tiny" and cfg.sampler.steps == 4 and cfg.sampler.guidance_scale == 3.0
    assert cfg.prompts == ["a", "b"]
    assert isinstance(cfg, GenerateConfig) and dataclasses.is_dataclass(cfg.sampler)


def test_round_trip_through_resolved_config(tmp_path):
    cfg = load_config(GenerateConfig, [], ["sampler.steps=7", "seed=3", "prompts=[x]"])
    path = save_resolved_config(cfg, tmp_path)
    assert path.name == "resolved_config.yaml"
    assert load_config(GenerateConfig, [path]) == cfg


def test_unknown_key_names_key_and_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("sampler:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'sampler.stepz' in .*bad.yaml.*steps"):
        load_config(GenerateConfig, [f])


def test_unknown_override_key():
    with pytest.raises(ConfigError, match="unknown config key 'modle' in command-line overrides"):
        load_config(GenerateConfig, [], ["modle=x"])


def test_wrong_type_names_key(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text("sampler:\n  steps: many\n")
    with pytest.raises(ConfigError, match=r"wrong type for key 'sampler.steps' in .*t.yaml"):
        load_config(GenerateConfig, [f])


@pytest.mark.parametrize("override, message", [
    ("sampler.steps=0", "sampler.steps must be >= 1"),
    ("sampler.steps=-3", "sampler.steps must be >= 1"),
    ("sampler.scheduler=foo", "unknown scheduler 'foo'"),
    ("sampler.height=30", "multiple of 8"),
    ("dtype=float64", "dtype must be one of"),
])
def test_out_of_range_values(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(GenerateConfig, [], [override])


def test_build_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="teacher_lr must be > 0"):
        load_config(ToyworldBuildConfig, [], ["teacher_lr=-1"])


def test_malformed_yaml_has_line_number(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"malformed YAML in .*m.yaml \(line"):
        load_config(GenerateConfig, [f])


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(GenerateConfig, [tmp_path / "none.yaml"])
    f = tmp_path / "list.yaml"
    f.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(GenerateConfig, [f])


def test_override_without_equals():
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(GenerateConfig, [], ["steps"])


def test_a_renamed_key_keeps_its_old_spelling_with_a_one_line_warning(tmp_path, capsys):
    from prunefit.config.load import load_config
    from prunefit.config.schema import PruneConfig

    cfg = load_config(PruneConfig, [], ["loss.distill=0.3", "loss.feature_kd=0.4"])
    assert (cfg.loss.output_kd, cfg.loss.feature_kd) == (0.3, 0.4)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'loss.distill'" in err[0] and "'loss.output_kd'" in err[0]
    f = tmp_path / "old.yaml"
    f.write_text("loss:\n  block: 0.05\n  ddpm: 2.0\n")
    cfg = load_config(PruneConfig, [f], [])
    assert (cfg.loss.feature_kd, cfg.loss.ddpm, cfg.loss.output_kd) == (0.05, 2.0, 0.2)
    assert "'loss.block'" in capsys.readouterr().err
    cfg = load_config(PruneConfig, [], ["loss.output_kd=0.1"])
    assert cfg.loss.output_kd == 0.1 and capsys.readouterr().err == ""  # the new spelling warns nothing
