"""Two processes (torchrun, or forked ranks with its environment; gloo on CPU): same weights as one process with
the same global batch; rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from safetensors.torch import load_file

from prunefit.cli import main

ARGS = ["finetune", "model=tiny", "train.lr=1e-3", "train.warmup_steps=1", "train.max_steps=3",
        "train.checkpoint_every=3", "train.log_every=1"]


def _weights(run):
    return load_file(str(run / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors"))


def _torchrun(port: int, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", "prunefit", *args]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return res


def _forked_ranks(port: int, *args: str) -> str:
    """Rank 0 and rank 1 as forked children of this test process, with torchrun's environment: the same code path
    as ``_torchrun`` after the launcher, without two fresh interpreters importing torch and diffusers (the first
    test keeps the real launcher). Returns rank 0's stdout."""
    import sentence_transformers  # noqa: F401

    import prunefit.recipes.bilevel  # noqa: F401  (imported once here, inherited by both children)
    import prunefit.recipes.prune  # noqa: F401

    outs, pids = [tempfile.TemporaryFile("w+") for _ in range(2)], []
    sys.stdout.flush(), sys.stderr.flush()
    for rank in range(2):
        pid = os.fork()
        if pid == 0:
            _rank_child(rank, port, outs[rank], list(args))
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    texts = [f.seek(0) or f.read() for f in outs]
    assert codes == [0, 0], texts[0][-2000:] + texts[1][-2000:]
    return texts[0]


def _rank_child(rank: int, port: int, out, args: list[str]) -> None:
    code = 1
    try:
        import torch
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)  # the parent's single-process state is not ours
        GradientState._reset_state()
        os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
                           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"})
        os.dup2(out.fileno(), 1), os.dup2(out.fileno(), 2)
        sys.stdout = sys.stderr = os.fdopen(1, "w", buffering=1)
        torch.set_num_threads(1)  # one thread never enters an OpenMP region (not fork-safe)
        code = main(args)
    except BaseException:  # noqa: BLE001  (the child must never return into pytest)
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        os._exit(code)


def _log_rows(run):
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


def test_two_processes_match_one_process(tmp_path):
    two = tmp_path / "two"
    res = _torchrun(29533, *ARGS, "train.micro_batch_size=4", f"output_dir={two}")
    assert "effective batch = 4 per device x 2 process(es) x 1 accumulation = 8" in res.stdout
    assert main([*ARGS, "train.micro_batch_size=8", f"output_dir={tmp_path / 'one'}"]) == 0
    a, b = _weights(two), _weights(tmp_path / "one")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4  # gloo all-reduce vs one batch: fp rounding
    rows = [r for r in _log_rows(two) if "lower/total" in r]
    assert len(rows) == 3  # one writer (rank 0): one line per step
    assert all(r["ranks_agree"] == 1.0 for r in rows)  # every rank held identical weights after every step
    assert [p.name for p in (two / "checkpoints").iterdir()] == ["step-00000003"]


def _sinkhorn_worker(rank: int, world: int, port: int, out) -> None:
    import torch
    import torch.distributed as dist

    from prunefit.losses.aptp import sinkhorn

    torch.set_num_threads(1)  # a forked child: one thread never enters an OpenMP region (not fork-safe)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    scores = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))  # the same global batch on every rank
    local = scores[rank * 16 : (rank + 1) * 16]
    q = sinkhorn(local, epsilon=0.5, iterations=50, distributed=True)
    out[rank] = q.sum(0).tolist()  # per-expert mass of this rank's half
    dist.destroy_process_group()


def test_sinkhorn_marginals_hold_across_processes():
    import torch
    import torch.multiprocessing as mp

    from prunefit.losses.aptp import sinkhorn

    with mp.Manager() as manager:
        out = manager.dict()
        mp.start_processes(_sinkhorn_worker, args=(2, 29541, out), nprocs=2, start_method="fork")  # no re-imports
        loads = torch.tensor(out[0]) + torch.tensor(out[1])
    assert torch.allclose(loads, torch.full((4,), 8.0), atol=1e-3)  # uniform over the 32 prompts of both ranks
    full = sinkhorn(torch.randn(32, 4, generator=torch.Generator().manual_seed(0)), 0.5, 50)
    assert torch.allclose(full.sum(0), loads, atol=1e-3)  # identical to one process holding the whole batch


def test_bilevel_runs_data_parallel(tmp_path):
    """Three phases (lower, upper ESD, vartheta twin) on one student, without DDP: gradients are averaged
    explicitly and every rank holds the same weights after every step."""
    run = tmp_path / "bilevel"
    stdout = _forked_ranks(29547, "bilevel", "model=tiny", "concepts=[skull]", "preset=official", "upper_every=2",
                    "train.max_steps=4", "train.micro_batch_size=2", "upper_batch_size=1", "esd.ddim_steps=4",
                    "track_vartheta=true", "train.lr=1e-4", "upper_lr=1e-4", "train.log_every=1",
                    "train.checkpoint_every=2", f"output_dir={run}")
    assert "effective batch = 2 per device x 2 process(es) x 1 accumulation = 4" in stdout
    rows = [r for r in _log_rows(run) if "lower/total" in r]
    assert len(rows) == 4 and all(r["ranks_agree"] == 1.0 for r in rows)
    assert sum("upper/total" in r for r in rows) == 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]
    assert json.loads((run / "bilevel_summary.json").read_text())["upper_steps"] == 2


def test_prune_router_trains_data_parallel(tmp_path):
    run = tmp_path / "prune"
    stdout = _forked_ranks(29551, "prune", "model=tiny", "steps=4", "batch_size=4", "num_experts=2",
                           "router.ffn_groups=8", "hypernet_pretrain_steps=2", "eval_prompts=0", "log_every=1",
                           "checkpoint_every=2", f"output_dir={run}")
    assert "effective batch = 4 per device x 2 process(es) x 1 accumulation = 8" in stdout
    rows = [r for r in _log_rows(run) if "router/total" in r]
    assert len(rows) == 4 and all(r["ranks_agree"] == 1.0 for r in rows)
    assert all(r["router/load_0"] + r["router/load_1"] == 4 for r in rows)  # rank 0's share of the batch
    summary = json.loads((run / "prune_summary.json").read_text())
    assert len(summary["experts"]) == 2 and all(Path(e["path"]).is_dir() for e in summary["experts"])


def _divergence_worker(rank: int, world: int, port: int, out) -> None:
    import torch
    import torch.distributed as dist

    from prunefit.training.runtime import RankDivergenceError, check_ranks_agree

    torch.set_num_threads(1)  # a forked child: one thread never enters an OpenMP region (not fork-safe)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 2))
    out[f"same{rank}"] = check_ranks_agree(model, 1)
    with torch.no_grad():
        model[1].bias[0] += rank * 1e-6  # one rank drifts by one tiny update
    try:
        check_ranks_agree(model, 2)
        out[f"drift{rank}"] = "no error"
    except RankDivergenceError as exc:
        out[f"drift{rank}"] = str(exc)
    dist.destroy_process_group()


def test_rank_divergence_is_caught():
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        out = manager.dict()
        mp.start_processes(_divergence_worker, args=(2, 29557, out), nprocs=2, start_method="fork")
        out = dict(out)
    assert out["same0"] is True and out["same1"] is True
    for rank in (0, 1):
        assert "step 2: processes hold different weights (first: 1.bias)" in out[f"drift{rank}"]


@pytest.mark.parametrize("env,said", [({"FSDP_VERSION": "2"}, "runs it as one unsharded process"),
                                       ({"FSDP_VERSION": "1", "FSDP_SYNC_MODULE_STATES": "true"}, "refuses it (There")])
def test_fsdp_launch_that_accelerate_would_not_shard_is_refused(env, said, tmp_path, monkeypatch, capsys):
    """On CPUs accelerate 1.15 keeps FSDP2 as plain replicas (MULTI_CPU / NO) and raises for an FSDP1 config (as
    `accelerate launch` exports it: sync_module_states on): both refused up front, in one line, and no output folder
    is made. (Two processes under `accelerate launch --config_file fsdp.yaml` give the same line on each rank.)"""
    from accelerate.state import AcceleratorState

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    run = tmp_path / "fsdp"
    try:
        assert main(["finetune", "model=tiny", "train.max_steps=1", f"output_dir={run}"]) == 2
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)  # no FSDP-flavoured state for later tests
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "an FSDP launch was requested" in err[0] and said in err[0] and "torchrun" in err[0]
    assert not run.exists()
