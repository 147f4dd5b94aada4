"""Fault tolerance and security: SIGKILL at chosen points (mid-step, mid-checkpoint, mid-image-write), two runs
into one folder, pickle-bearing checkpoints, huge or truncated inputs. (The bad-input matrix: test_bad_inputs.py.)"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prunefit.cli import main

FT = ["finetune", "model=tiny", "train.micro_batch_size=4", "train.lr=1e-3", "train.warmup_steps=2",
      "train.log_every=1", "train.checkpoint_every=2"]


def _weights(run: Path) -> dict:
    return load_file(str(run / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors"))


class _Forked:
    """A CLI run in a forked child of this test process: a real process with its own pid that can be SIGKILLed
    anywhere, without the 5-8 s a fresh interpreter spends importing torch and diffusers. The subset of
    ``subprocess.Popen`` the tests use: ``pid``, ``poll``, ``wait``, ``send_signal``, ``returncode``, ``stderr``.
    The child runs one torch thread (bit-identical comparisons need one thread count; one thread also never
    enters an OpenMP region, which is not fork-safe)."""

    def __init__(self, args: list[str], env_extra: dict | None = None) -> None:
        _warm_imports()
        self.returncode: int | None = None
        self.stderr = tempfile.TemporaryFile("w+")
        sys.stdout.flush(), sys.stderr.flush()
        self.pid = os.fork()
        if self.pid == 0:
            self._child(args, env_extra or {})

    def _child(self, args: list[str], env_extra: dict) -> None:
        code = 1
        try:
            os.environ.update({"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **env_extra})
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            os.dup2(self.stderr.fileno(), 2)
            sys.stdout, sys.stderr = open(os.devnull, "w"), os.fdopen(2, "w", buffering=1)
            torch.set_num_threads(1)
            code = main(args)
        except BaseException:  # noqa: BLE001  (the child must never return into pytest)
            import traceback

            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        return self.returncode

    def wait(self, timeout: float = 600.0) -> int:
        _wait_for(lambda: self.poll() is not None, timeout)
        self.stderr.seek(0)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)


def _warm_imports() -> None:
    """Import what the runs use once, in this process, so no child repeats it (diffusers alone takes ~4 s)."""
    import sentence_transformers  # noqa: F401  (the router's prompt encoder)

    import prunefit.models.components  # noqa: F401
    import prunefit.models.tiny  # noqa: F401
    import prunefit.recipes.finetune  # noqa: F401
    import prunefit.recipes.generate  # noqa: F401
    import prunefit.recipes.prune  # noqa: F401
    from prunefit.cli import _quiet_libraries

    _quiet_libraries()


def _spawn(args: list[str], env_extra: dict | None = None) -> _Forked:
    return _Forked(args, env_extra)


def _wait_for(pred, timeout=240.0):
    t0 = time.time()
    while not pred():
        if time.time() - t0 > timeout:
            raise TimeoutError
        time.sleep(0.1)


def _kill_inside_pause(proc: _Forked, mark: Path) -> None:
    """Wait until the child reports it is inside the injected pause, then SIGKILL it there: the child must be
    alive at the kill and must die of it (a child that finished first fails the test)."""
    _wait_for(lambda: mark.is_file() or proc.poll() is not None)
    if proc.poll() is not None:
        pytest.fail(f"the child exited ({proc.wait()}) before the kill: {proc.stderr.read()}")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def _run(args: list[str], env_extra: dict | None = None) -> int:
    """A whole CLI run in a single-threaded child process (bit-identical comparisons need one thread count)."""
    proc = _spawn(args, env_extra)
    proc.wait(timeout=600)
    return proc.returncode


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    assert _run([*FT, f"output_dir={out}", "train.max_steps=6"]) == 0
    return _weights(out)


def test_sigkill_mid_step_then_resume_is_bit_identical(tmp_path, reference):
    from prunefit.training.checkpoint import latest_checkpoint

    out, mark = tmp_path / "run", tmp_path / "mark"
    # step index 3 (the 4th step): its gradients are computed, the optimizer has not stepped; checkpoint 2 exists
    proc = _spawn([*FT, f"output_dir={out}", "train.max_steps=6"],
                  {"PRUNEFIT_FAULT_STEP_SLEEP": "120@3", "PRUNEFIT_FAULT_MARK": str(mark)})
    _kill_inside_pause(proc, mark)
    assert latest_checkpoint(out).name == "step-00000002" and not (out / "pipeline").exists()
    assert _run([*FT, f"output_dir={out}", "train.max_steps=6", "resume=latest"]) == 0
    got = _weights(out)
    assert all(torch.equal(got[k], reference[k]) for k in reference)


PRUNE = ["prune", "model=tiny", "steps=6", "batch_size=4", "num_experts=2", "router.ffn_groups=8",
         "hypernet_pretrain_steps=2", "eval_prompts=0", "checkpoint_every=2"]


def test_pruning_resumes_after_sigkill_bit_identically(tmp_path):
    assert _run([*PRUNE, f"output_dir={tmp_path / 'ref'}"]) == 0
    out = tmp_path / "run"
    proc = _spawn([*PRUNE, f"output_dir={out}"])
    _wait_for(lambda: (out / "checkpoints" / "step-00000002" / "state.json").is_file() or proc.poll() is not None)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "prune_summary.json").exists()
    assert _run([*PRUNE, f"output_dir={out}", "resume=latest"]) == 0
    ref = load_file(str(tmp_path / "ref" / "router" / "router.safetensors"))
    got = load_file(str(out / "router" / "router.safetensors"))
    assert ref.keys() == got.keys()
    assert all(torch.equal(got[k], ref[k]) for k in ref if k != "route_log_v")  # trained weights: bit-identical
    # the routing calibration runs after training on cached prompt embeddings; the sentence encoder's output
    # depends on the padding of the batch a prompt was first embedded in, in the last bits
    assert torch.allclose(got["route_log_v"], ref["route_log_v"], atol=1e-6)


def test_sigkill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, reference):
    out = tmp_path / "run"
    proc = _spawn([*FT, f"output_dir={out}", "train.max_steps=6"], {"PRUNEFIT_FAULT_CHECKPOINT_SLEEP": "120"})
    # the first checkpoint (step 2) pauses after its weights are written, before optimizer state and state.json
    _wait_for(lambda: (out / "checkpoints" / ".step-00000002.tmp" / "model.safetensors").is_file()
              or proc.poll() is not None)
    assert proc.poll() is None, "the child exited before the kill"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (out / "checkpoints" / "step-00000002").exists()  # the half-written folder never looks complete
    from prunefit.training.checkpoint import latest_checkpoint

    assert latest_checkpoint(out) is None
    # with no complete checkpoint, resume=latest says so; a fresh start (nothing complete was there) finishes
    assert _run([*FT, f"output_dir={out}", "train.max_steps=6", "resume=latest"]) == 2
    assert _run([*FT, f"output_dir={out}", "train.max_steps=6"]) == 0
    got = _weights(out)
    assert all(torch.equal(got[k], reference[k]) for k in reference)


GEN = ["generate", "model=tiny", "sampler.steps=2", "sampler.batch_size=1", "-p", "a red circle", "-p", "a blue star",
       "-p", "a green square", "-p", "a yellow cross"]


def test_sigkill_mid_image_write_then_rerun_completes_identically(tmp_path):
    ref, out, mark = tmp_path / "ref", tmp_path / "run", tmp_path / "mark"
    assert _run([*GEN, "-o", str(ref)]) == 0
    proc = _spawn([*GEN, "-o", str(out)], {"PRUNEFIT_FAULT_IMAGE_SLEEP": "120@2", "PRUNEFIT_FAULT_MARK": str(mark)})
    _kill_inside_pause(proc, mark)  # image 00002 is written to its temporary name, not yet renamed
    assert sorted(p.name for p in (out / "images").glob("*.png")) == ["00000.png", "00001.png"]
    assert len(list((out / "images").glob(".00002.png.*.tmp"))) == 1  # .<name>.<pid>.tmp
    assert [json.loads(x)["id"] for x in (out / "manifest.jsonl").read_text().splitlines()] == ["00000", "00001"]
    rerun = _spawn([*GEN, "-o", str(out)])
    assert rerun.wait(timeout=600) == 0
    assert "taking over the stale lock" in rerun.stderr.read()
    for name in ("00000.png", "00001.png", "00002.png", "00003.png"):
        assert (out / "images" / name).read_bytes() == (ref / "images" / name).read_bytes()
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 4


def test_a_second_run_into_a_busy_folder_is_refused(tmp_path, capsys):
    """Two real processes: the second is refused with one line naming the first; after the first is gone its
    stale lock is taken over with a warning."""
    out, mark = tmp_path / "run", tmp_path / "mark"
    first = _spawn([*FT, f"output_dir={out}", "train.max_steps=4"],
                   {"PRUNEFIT_FAULT_STEP_SLEEP": "120@1", "PRUNEFIT_FAULT_MARK": str(mark)})
    _wait_for(lambda: mark.is_file() or first.poll() is not None)
    assert first.poll() is None
    lock = json.loads((out / ".prunefit.lock").read_text())
    assert lock["pid"] == first.pid and lock["host"] == os.uname().nodename
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    second = _spawn([*FT, f"output_dir={out}", "train.max_steps=4"])
    assert second.wait(timeout=600) == 2
    err = second.stderr.read().strip().splitlines()
    assert len(err) == 1 and f"is in use by pid {first.pid} on {lock['host']}" in err[0], err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # the second wrote nothing
    first.send_signal(signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL
    # the dead run's lock stays behind; the next run takes it over (in-process: no third interpreter start-up)
    capsys.readouterr()
    assert main([*FT, f"output_dir={out}", "train.max_steps=4"]) == 0
    assert f"taking over the stale lock of pid {first.pid}" in capsys.readouterr().err
    assert (out / "pipeline").is_dir() and not (out / ".prunefit.lock").exists()


def test_a_pickle_bearing_checkpoint_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*FT, f"output_dir={out}", "train.max_steps=2"]) == 0

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    ckpt = out / "checkpoints" / "step-00000002"
    torch.save({"state": Evil()}, ckpt / "optimizer-lower.pt")
    code = main([*FT, f"output_dir={out}", "train.max_steps=4", "resume=latest"])
    assert code == 2 and "refusing to load" in capsys.readouterr().err
    assert not (tmp_path / "pwned").exists()


def test_huge_prompt_file_is_refused(tmp_path, monkeypatch):
    from prunefit.data import prompts
    from prunefit.errors import DataError

    monkeypatch.setattr(prompts, "MAX_PROMPT_FILE_BYTES", 1024)
    f = tmp_path / "huge.txt"
    f.write_text("a prompt\n" * 500)
    with pytest.raises(DataError, match="larger than"):
        prompts.read_prompt_file(f)


def test_truncated_training_image_is_skipped_and_counted(tmp_path):
    from PIL import Image

    from prunefit.data.datasets import image_caption_folder

    for i in range(4):
        Image.new("RGB", (40, 40), (60 * i, 0, 0)).save(tmp_path / f"{i}.png")
    data = (tmp_path / "1.png").read_bytes()
    (tmp_path / "1.png").write_bytes(data[:20])
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps({"file_name": f"{i}.png", "text": f"img {i}"}) + "\n"
                                                     for i in range(4)))
    ds = image_caption_folder(tmp_path, 32)
    images, caps = ds.samples(0, 8)
    assert images.shape == (8, 3, 32, 32) and "img 1" not in caps and ds.skipped >= 1


def test_a_lock_whose_pid_was_reused_is_stale(tmp_path, capsys):
    from prunefit.utils.lock import LOCK_NAME, output_lock

    # our own pid, but another process start time: the pid was reused after the locking run died
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename,
                                                  "ticks": "1", "started": 0}))
    with output_lock(tmp_path) as path:
        assert json.loads(path.read_text())["ticks"] != "1"
    assert "taking over the stale lock" in capsys.readouterr().err and not (tmp_path / LOCK_NAME).exists()
