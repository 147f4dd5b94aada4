"""Two processes (torchrun, gloo on CPU): same weights as one process with the same global batch; rank 0 writes."""

from __future__ import annotations

import os
import subprocess
import sys

from safetensors.torch import load_file

from prunefit.cli import main

ARGS = ["finetune", "model=tiny", "train.lr=1e-3", "train.warmup_steps=1", "train.max_steps=3",
        "train.checkpoint_every=3", "train.log_every=1"]


def _weights(run):
    return load_file(str(run / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors"))


def test_two_processes_match_one_process(tmp_path):
    two = tmp_path / "two"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", "29533", "-m", "prunefit", *ARGS, "train.micro_batch_size=4", f"output_dir={two}"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "effective batch = 4 per device x 2 process(es) x 1 accumulation = 8" in res.stdout
    assert main([*ARGS, "train.micro_batch_size=8", f"output_dir={tmp_path / 'one'}"]) == 0
    a, b = _weights(two), _weights(tmp_path / "one")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4  # gloo all-reduce vs one batch: fp rounding
    logs = (two / "log.jsonl").read_text().splitlines()
    assert len([x for x in logs if '"lower/total"' in x]) == 3  # one writer (rank 0): one line per step
    assert [p.name for p in (two / "checkpoints").iterdir()] == ["step-00000003"]


def _sinkhorn_worker(rank: int, world: int, port: int, out) -> None:
    import torch
    import torch.distributed as dist

    from prunefit.losses.aptp import sinkhorn

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
        mp.spawn(_sinkhorn_worker, args=(2, 29541, out), nprocs=2, join=True)
        loads = torch.tensor(out[0]) + torch.tensor(out[1])
    assert torch.allclose(loads, torch.full((4,), 8.0), atol=1e-3)  # uniform over the 32 prompts of both ranks
    full = sinkhorn(torch.randn(32, 4, generator=torch.Generator().manual_seed(0)), 0.5, 50)
    assert torch.allclose(full.sum(0), loads, atol=1e-3)  # identical to one process holding the whole batch
