"""`prunefit import aptp`: checkpoints in the APTP authors' layouts (built here from the tiny UNet the way their code
writes them) become expert folders that load back with the same tensors and the MAC ratio the flop counter measures;
a plain diffusers UNet folder is a student too."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from prunefit.errors import ConfigError, ModelLoadError
from prunefit.evaluation.cost import count_macs
from prunefit.pruning.expert import load_expert, read_expert_info
from prunefit.pruning.import_aptp import import_aptp, read_checkpoint
from prunefit.pruning.resolve import check_inputs, load_student, resolve_model
from prunefit.pruning.spec import gate_spec

GATED = {"CrossAttnDownBlock2D": "CrossAttnDownBlock2DHalfGated", "DownBlock2D": "DownBlock2DHalfGated",
         "UpBlock2D": "UpBlock2DHalfGated", "CrossAttnUpBlock2D": "CrossAttnUpBlock2DHalfGated",
         "UNetMidBlock2DCrossAttn": "UNetMidBlock2DCrossAttnWidthGated"}


def _their_config(unet) -> dict:
    """unet/config.json as their ``save_pretrained`` of ``UNet2DConditionModelPruned`` writes it."""
    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in dict(unet.config).items() if not k.startswith("_")}
    cfg["down_block_types"] = [GATED[b] for b in cfg["down_block_types"]]
    cfg["up_block_types"] = [GATED[b] for b in cfg["up_block_types"]]
    cfg["mid_block_type"] = GATED[cfg["mid_block_type"]]
    return {"_class_name": "UNet2DConditionModelPruned", "_diffusers_version": "0.23.1", "_name_or_path": "tiny",
            **cfg, "gated_ff": True, "ff_gate_width": 32}


def _soft_codes(spec, k: int) -> torch.Tensor:
    """[k, D] soft codes as their codebook holds them (kept where >= 0.5). Expert 0 drops two blocks, one of them a
    resnet whose own width group is all zero (their pruning replaces the whole block by identities)."""
    g = torch.Generator().manual_seed(1)
    hard = (torch.rand(k, spec.dim, generator=g) < 0.6).float()
    off = 0
    for grp in spec.width:
        hard[:, off] = 1.0  # every group keeps an entry
        off += grp.size
    d_res = next(j for j, d in enumerate(spec.depth) if d.kind == "resnet" and d.module.startswith("up_blocks"))
    d_tr = next(j for j, d in enumerate(spec.depth) if d.kind == "transformer")
    hard[0, spec.width_dim + d_res] = hard[0, spec.width_dim + d_tr] = 0.0
    hard[1, spec.width_dim:] = 1.0
    off = 0
    for grp in spec.width:
        if grp.unit == spec.depth[d_res].module:
            hard[0, off:off + grp.size] = 0.0
        off += grp.size
    u = torch.rand(k, spec.dim, generator=g) * 0.49
    return torch.where(hard > 0, 0.5 + u, u)


def _their_pruned_state(state: dict, spec, code: torch.Tensor) -> dict:
    """Slice a dense state dict the way their ``prune()`` methods do (contiguous groups; per-head rows of q/k/v and
    columns of to_out; both GEGLU halves; every tensor of a dropped block gone)."""
    hard = code >= 0.5
    widths, depth = torch.split(hard[: spec.width_dim], [g.size for g in spec.width]), hard[spec.width_dim:]
    out = dict(state)
    for grp, keep in zip(spec.width, widths):
        rows = keep.repeat_interleave(grp.per_gate)
        m = grp.module
        if grp.kind == "resnet":
            for name in ("conv1.weight", "conv1.bias", "time_emb_proj.weight", "time_emb_proj.bias", "norm2.weight",
                         "norm2.bias"):
                out[f"{m}.{name}"] = out[f"{m}.{name}"][rows]
            out[f"{m}.conv2.weight"] = out[f"{m}.conv2.weight"][:, rows]
        elif grp.kind == "heads":
            for name in ("to_q", "to_k", "to_v"):
                w = out[f"{m}.{name}.weight"]
                out[f"{m}.{name}.weight"] = w.view(grp.size, grp.per_gate, -1)[keep].reshape(-1, w.shape[1])
            w = out[f"{m}.to_out.0.weight"]
            out[f"{m}.to_out.0.weight"] = w.view(w.shape[0], grp.size, grp.per_gate)[:, keep].reshape(w.shape[0], -1)
        else:
            both = torch.cat([rows, rows])
            out[f"{m}.net.0.proj.weight"] = out[f"{m}.net.0.proj.weight"][both]
            out[f"{m}.net.0.proj.bias"] = out[f"{m}.net.0.proj.bias"][both]
            out[f"{m}.net.2.weight"] = out[f"{m}.net.2.weight"][:, rows]
    for d, kept in zip(spec.depth, depth):
        if not kept:
            out = {k: v for k, v in out.items() if not k.startswith(d.module + ".")}
    return {k: v.contiguous() for k, v in out.items()}


@pytest.fixture(scope="module")
def fixture(tiny, tmp_path_factory):
    """A fine-tuned expert folder (arch_vector.pt + unet/) and a pruning checkpoint (quantizer_embeddings.pt +
    resource_ratios.pt, no unet/) in the authors' layout, from the tiny model."""
    root = tmp_path_factory.mktemp("aptp")
    spec = gate_spec(tiny.unet)
    codebook = torch.nn.Parameter(_soft_codes(spec, 2), requires_grad=False)  # their quantizer's embedding_gs
    g = torch.Generator().manual_seed(2)
    dense = {k: v.detach().clone() for k, v in tiny.unet.state_dict().items()}
    tuned = {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in  # stands for their fine-tuning
             _their_pruned_state(dense, spec, codebook[0]).items()}
    expert = root / "checkpoint-100"
    (expert / "unet").mkdir(parents=True)
    torch.save(codebook[0].unsqueeze(0), expert / "arch_vector.pt")  # as FineTuner.init_models saves it
    (expert / "unet" / "config.json").write_text(json.dumps(_their_config(tiny.unet), indent=2))
    save_file(tuned, str(expert / "unet" / "diffusion_pytorch_model.safetensors"))
    pruning = root / "pruning-ckpt"
    pruning.mkdir()
    torch.save(codebook, pruning / "quantizer_embeddings.pt")
    return {"root": root, "spec": spec, "codes": codebook.detach(), "dense": dense, "tuned": tuned,
            "expert": expert, "pruning": pruning}


def _flop_ratio(unet, base, text_length: int = 77) -> float:
    return count_macs(unet, 16, text_length) / count_macs(base, 16, text_length)


def test_fine_tuned_expert_imports_with_their_weights_and_mac_ratio(fixture, tiny, tmp_path):
    out = tmp_path / "expert"
    res = import_aptp(str(fixture["expert"]), str(out), reported_ratio=0.9, tolerance=0.01)
    info = read_expert_info(out)
    assert info.source_model == "tiny" and info.ffn_groups == 32
    assert resolve_model(out).kind == "expert"
    check_inputs(model="tiny", student=str(out))
    student, loaded_info = load_student(str(out), tiny)  # as finetune / bilevel / erase load student=
    assert loaded_info.arch == info.arch
    state = student.state_dict()
    assert state.keys() == fixture["tuned"].keys()
    assert all(torch.equal(state[k], v) for k, v in fixture["tuned"].items())
    assert info.mac_ratio == pytest.approx(_flop_ratio(student, tiny.unet), rel=1e-12) == res.mac_ratio
    assert res.authors_inputs_ratio == pytest.approx(_flop_ratio(student, tiny.unet, 1), rel=1e-12)
    assert 0.2 < info.mac_ratio < 0.95
    assert info.extra["mac_ratio_reported"] == 0.9 and info.extra["mac_ratio_agrees"] is False
    assert "DIFFERS" in res.lines()[-1]


def test_pruning_checkpoint_slices_the_base_and_reads_their_ratios(fixture, tiny, tmp_path):
    from prunefit.pruning.materialize import materialize

    ckpt = fixture["pruning"]
    arch = (fixture["codes"][1] >= 0.5).float()
    ref = __import__("copy").deepcopy(tiny.unet)
    materialize(ref, fixture["spec"], arch)
    torch.save(torch.tensor([[0.5], [_flop_ratio(ref, tiny.unet, 1)]]), ckpt / "resource_ratios.pt")
    out = tmp_path / "e1"
    res = import_aptp(str(ckpt), str(out), base="tiny", expert_id=1)
    unet, info = load_expert(out, tiny.unet.config)
    assert info.expert_id == 1 and info.extra["aptp_layout"] == "pruning"
    expected = _their_pruned_state(fixture["dense"], fixture["spec"], fixture["codes"][1])
    assert all(torch.equal(unet.state_dict()[k], v) for k, v in expected.items())
    assert res.agrees is True and info.extra["mac_ratio_reported"] == pytest.approx(res.authors_inputs_ratio)


def test_cli_imports_and_refuses_a_folder_in_another_format(fixture, tmp_path, capsys):
    from prunefit.cli import main

    assert main(["import", "aptp", str(fixture["expert"]), "-o", str(tmp_path / "e")]) == 0
    assert "MAC ratio" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["import", "aptp", str(tmp_path / "empty"), "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "arch_vector.pt" in err and "quantizer_embeddings.pt" in err
    assert not (tmp_path / "x").exists()


def test_bad_checkpoints_fail_with_one_line_saying_what_is_missing(fixture, tmp_path):
    import shutil

    bad = tmp_path / "no-unet"
    bad.mkdir()
    shutil.copy(fixture["expert"] / "arch_vector.pt", bad)
    with pytest.raises(ConfigError, match="no unet/config.json"):
        read_checkpoint(bad)
    with pytest.raises(ConfigError, match="--expert-id 0..1"):
        read_checkpoint(fixture["pruning"])
    short = tmp_path / "short"
    shutil.copytree(fixture["expert"], short)
    torch.save(fixture["codes"][0][:-3].unsqueeze(0), short / "arch_vector.pt")
    with pytest.raises(ConfigError, match="has 315 entries"):
        import_aptp(str(short), str(tmp_path / "o1"))
    other = tmp_path / "other-expert"
    shutil.copytree(fixture["expert"], other)
    torch.save(fixture["codes"][1].unsqueeze(0), other / "arch_vector.pt")  # weights are expert 0's
    with pytest.raises(ConfigError, match="does not match the architecture vector"):
        import_aptp(str(other), str(tmp_path / "o2"))
    with pytest.raises(ModelLoadError, match="prunefit import aptp"):
        check_inputs(student=str(fixture["expert"]))


def test_a_plain_diffusers_unet_folder_is_a_student(tiny, tmp_path):
    from prunefit.models.tiny import TinySDConfig, build_unet

    torch.manual_seed(0)
    small = build_unet(TinySDConfig(layers_per_block=1))  # a BK-SDM-like student: fewer blocks, same I/O
    small.save_pretrained(tmp_path / "bk-unet")
    check_inputs(model="tiny", student=str(tmp_path / "bk-unet"))
    student, info = load_student(str(tmp_path / "bk-unet"), tiny)
    assert info is None and sum(p.numel() for p in student.parameters()) == sum(p.numel() for p in small.parameters())
    assert all(torch.equal(a, b) for a, b in zip(student.state_dict().values(), small.state_dict().values()))
    other = build_unet(TinySDConfig(cross_attention_dim=16, text_hidden=16))
    other.save_pretrained(tmp_path / "other-unet")
    with pytest.raises(ModelLoadError, match="cross_attention_dim=16"):
        load_student(str(tmp_path / "other-unet"), tiny)
