"""Run the FID references from their wheels, in a process of its own (tests/test_fid_modes.py starts it).

clean-fid 0.1.35 (pipeline, resize, Fréchet numerics, its copy of pytorch-fid's InceptionV3 / FIDInception blocks)
and torch-fidelity 0.4.0 (FeatureExtractorInceptionV3) are imported straight from the wheels that `make venv`
downloads into .venv/refwheels (zipimport: nothing is installed). Neither can be imported whole without
torchvision, so two stubs stand in, here only (torchmetrics in the test process never sees them):
- ``torch_fidelity``: a namespace package (offline-stack.md section 6), so its __init__ (which imports CLIP and
  torchvision) does not run;
- ``torchvision``: ``models.inception`` with torchvision's *original* Inception blocks, taken from torch-fidelity
  (BasicConv2d, InceptionB / InceptionD, and the constructors of InceptionA / C / E, whose forwards clean-fid
  overrides), an ``inception_v3`` that assembles them under torchvision's attribute names, and
  ``transforms.ToTensor`` with torchvision's semantics (uint8 HWC -> CHW / 255; float HWC -> CHW as is).
clean-fid loads the weights itself from the torch hub cache ($TORCH_HOME, set by the test), as on a real machine.

Usage: python fid_reference_run.py WHEEL_DIR OUT.npz GEN_DIR REF_DIR SQUARE_DIR SYNTH.npz [--full-fid]
(SYNTH.npz: feature sets a<i>, b<i>; each pair's clean-fid ``fid_from_feats`` is written as fid_synth<i>, nan
where clean-fid raises.)
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _install_stubs(wheels: Path) -> None:
    for name in ("torch_fidelity-0.4.0-py3-none-any.whl", "clean_fid-0.1.35-py3-none-any.whl"):
        sys.path.insert(0, str(wheels / name))
    tf_pkg = types.ModuleType("torch_fidelity")
    tf_pkg.__path__ = [str(wheels / "torch_fidelity-0.4.0-py3-none-any.whl" / "torch_fidelity")]
    sys.modules["torch_fidelity"] = tf_pkg
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    def inception_v3(num_classes=1000, aux_logits=True, pretrained=False, init_weights=False, **_):
        net = torch.nn.Module()
        net.Conv2d_1a_3x3 = tfi.BasicConv2d(3, 32, kernel_size=3, stride=2)
        net.Conv2d_2a_3x3 = tfi.BasicConv2d(32, 32, kernel_size=3)
        net.Conv2d_2b_3x3 = tfi.BasicConv2d(32, 64, kernel_size=3, padding=1)
        net.Conv2d_3b_1x1 = tfi.BasicConv2d(64, 80, kernel_size=1)
        net.Conv2d_4a_3x3 = tfi.BasicConv2d(80, 192, kernel_size=3)
        net.Mixed_6a = tfi.InceptionB(288)
        net.Mixed_7a = tfi.InceptionD(768)
        net.fc = torch.nn.Linear(2048, num_classes)
        return net  # Mixed_5b..d, 6b..e, 7b, 7c: clean-fid sets its FID blocks

    class ToTensor:
        def __call__(self, pic: np.ndarray) -> torch.Tensor:
            img = torch.from_numpy(pic.transpose((2, 0, 1))).contiguous()
            return img.float().div(255) if img.dtype == torch.uint8 else img

    tv = types.ModuleType("torchvision")
    tv.__version__ = "0.15.0"
    tv.models = types.ModuleType("torchvision.models")
    tv.models.inception = types.ModuleType("torchvision.models.inception")
    tv.models.inception.InceptionA = tfi.InceptionA
    tv.models.inception.InceptionC = tfi.InceptionC
    tv.models.inception.InceptionE = tfi.InceptionE_1
    tv.models.inception_v3 = inception_v3
    tv.transforms = types.ModuleType("torchvision.transforms")
    tv.transforms.ToTensor = ToTensor
    for mod in (tv, tv.models, tv.models.inception, tv.transforms):
        sys.modules[mod.__name__] = mod


def main(argv: list[str]) -> None:
    wheels, out, gen, ref, square, synth = Path(argv[0]), argv[1], argv[2], argv[3], argv[4], np.load(argv[5])
    _install_stubs(wheels)
    import cleanfid
    from cleanfid import fid as cfid
    from cleanfid.features import build_feature_extractor
    from cleanfid.resize import build_resizer
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    cpu = torch.device("cpu")
    model = build_feature_extractor("legacy_pytorch", device=cpu, use_dataparallel=False)
    kw = dict(model=model, num_workers=0, batch_size=4, device=cpu, mode="legacy_pytorch", verbose=False)
    f_gen, f_ref = cfid.get_folder_features(gen, **kw), cfid.get_folder_features(ref, **kw)
    resize = build_resizer("legacy_pytorch")
    first = sorted(Path(ref).iterdir())[0]
    res = {"feats_gen": f_gen, "feats_ref": f_ref, "resized": resize(np.array(Image.open(first).convert("RGB"))),
           "cleanfid_from": np.array(cleanfid.__file__)}
    for i in range(len(synth.files) // 2):
        try:
            res[f"fid_synth{i}"] = cfid.fid_from_feats(synth[f"a{i}"], synth[f"b{i}"])
        except ValueError:  # clean-fid's "Imaginary component"
            res[f"fid_synth{i}"] = np.nan
    # torch-fidelity's own forward on 299 x 299 uint8 images (its TF1 resize is then the identity)
    weights = Path(torch.hub.get_dir()) / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth"
    tf_net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights))
    sq = np.stack([np.array(Image.open(p).convert("RGB")) for p in sorted(Path(square).iterdir())])
    with torch.no_grad():
        res["feats_tf"] = tf_net(torch.from_numpy(sq).permute(0, 3, 1, 2).contiguous())[0].numpy()
    if "--full-fid" in argv:
        res["fid"] = cfid.fid_from_feats(f_gen, f_ref)
    np.savez(out, **res)


if __name__ == "__main__":
    main(sys.argv[1:])
