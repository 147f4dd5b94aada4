"""A bilevel config's preset is resolved once into a frozen object, and a setting the preset does not read is
refused in one line instead of being silently ignored."""

from __future__ import annotations

import dataclasses

import pytest

from prunefit.config.load import load_config
from prunefit.errors import ConfigError
from prunefit.removal.bilevel.config import BilevelConfig


def _load(*overrides: str, files=()) -> BilevelConfig:
    return load_config(BilevelConfig, list(files), ["model=tiny", "concepts=[skull]", *overrides])


def test_the_preset_resolves_once_into_a_frozen_object():
    cfg = _load("preset=official")
    assert cfg.resolved is cfg.resolved and cfg.upper_config() is cfg.resolved.upper
    assert (cfg.every, cfg.resolved.upper.xt_source, cfg.resolved.upper.train_method) == (10, "images", "full")
    assert cfg.resolved.r == pytest.approx(5e-6 / (10 * cfg.train.lr))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.resolved.every = 3
    with pytest.raises(TypeError):
        cfg.resolved.balance["r"] = 1.0  # read-only mapping; cfg.balance() hands out a copy
    paper = _load("preset=paper", "double_loop=nested")
    assert (paper.every, paper.nested, paper.tracks_vartheta, paper.resolved_upper_lr()) == (20, True, True, 5e-6)


@pytest.mark.parametrize("override, names", [
    ("esd.xt_source=model", "set upper_xt_source instead"),
    ("esd.condition=concept", "set upper_condition instead"),
    ("esd.train_method=xattn", "set upper_train_method instead"),
    ("esd.batch_size=4", "set upper_batch_size instead"),
    ("esd.lr=1e-3", "its own lr is never read"),
])
def test_a_setting_the_official_preset_does_not_read_is_refused(override, names):
    with pytest.raises(ConfigError) as err:
        _load("preset=official", override)
    assert names in str(err.value) and "\n" not in str(err.value) and "preset=official" in str(err.value)


def test_settings_the_preset_does_read_are_accepted():
    assert _load("preset=paper", "esd.train_method=noxattn").resolved.upper.train_method == "noxattn"
    assert _load("preset=official", "upper_xt_source=model").resolved.upper.xt_source == "model"
    # the same value the preset uses is not an ignored setting (configs/sd21/bilevel_monet_official.yaml sets it)
    assert _load("preset=official", "esd.xt_source=images").resolved.upper.xt_source == "images"
    cfg = load_config(BilevelConfig, ["configs/sd21/bilevel_monet_official.yaml"], [])
    assert cfg.resolved.upper.xt_source == "images" and cfg.resolved.upper_batch == 16
    assert load_config(BilevelConfig, ["configs/sd21/bilevel_nudity.yaml"], []).resolved.upper.train_method == "full"


def test_the_cli_refuses_an_ignored_setting_in_one_line(capsys):
    from prunefit.cli import main

    assert main(["bilevel", "model=tiny", "concepts=[skull]", "preset=official", "esd.xt_source=model",
                 "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "esd.xt_source='model' is not read by bilevel preset=official" in err
