"""Golden outputs of the original Dasheng (the ``dasheng`` package, Apache-2.0, with torchaudio's front end) on the
seeded random checkpoints of ``reference_dasheng.py``: writes ``tests/data/dasheng_golden.npz``.

The ``dasheng`` package needs torchaudio, which has no release for this project's torch, so this runs once in a
separate environment, e.g.::

    python -m venv /tmp/dvenv && /tmp/dvenv/bin/pip install torch numpy einops
    /tmp/dvenv/bin/pip install --no-deps torchaudio dasheng==0.0.9
    # (torchaudio's compiled extension, unused by MelSpectrogram/AmplitudeToDB, may need moving aside when its torch
    #  differs: torchaudio/lib/_torchaudio*.so)
    /tmp/dvenv/bin/python tests/make_golden_dasheng.py

Each clip runs alone (``model(wav[None])``, the original's numbers for the clip): for ``base`` (dasheng-base's
shapes, the trainer's config) the output frames projected on :func:`reference_dasheng.projection` plus the first and
last frames and the time mean in full; for ``small`` every block's output (forward hooks, chunk by chunk) and the
output in full; the front end's dB mel (``forward_to_spec`` before the batch norm) of some clips.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import reference_dasheng as R  # noqa: E402


def original(kind: str, tmp: Path):
    from dasheng.pretrained.pretrained import Dasheng

    ck = R.dasheng_checkpoint(kind)
    if kind == "base":
        over = dict(embed_dim=768, depth=12, num_heads=R.BASE_HEADS)
    else:
        over = dict(embed_dim=R.SMALL["embed_dim"], depth=R.SMALL["depth"], num_heads=R.SMALL_HEADS)
    fresh = Dasheng(**{**ck["config"], **over})       # the front end's own buffers (torchaudio's), as trained
    for k, v in fresh.state_dict().items():
        if k.startswith("front_end."):
            ck["model"][k] = v.clone()
    # the trainer's run folder (a PosixPath) as text: the original's torch.load (weights_only by default since torch
    # 2.6) refuses classes; the config's other keys, and so the outputs, are unchanged
    ck["config"] = {k: str(v) if isinstance(v, Path) else v for k, v in ck["config"].items()}
    path = tmp / f"{kind}.pt"
    torch.save(ck, path)
    return Dasheng.from_pretrained(str(path), **over).eval()


def main():
    out = {}
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as d, torch.inference_mode():
        for kind in ("base", "small"):
            model = original(kind, Path(d))
            feats = {}
            hooks = [blk.register_forward_hook(lambda m, i, o, j=j: feats.setdefault(j, []).append(o.clone()))
                     for j, blk in enumerate(model.blocks)]
            for name, wav in R.clips(kind).items():
                feats.clear()
                x = torch.from_numpy(wav)[None]
                y = model(x)[0].numpy()                              # [patches, D]
                spec = model.front_end(x)[0].numpy()                 # [64, frames], dB with the clip's floor
                key = f"{kind}_{name}"
                out[f"{key}_clip"] = y.mean(axis=0)
                if kind == "base":
                    out[f"{key}_proj"] = y @ R.projection(y.shape[1])
                    out[f"{key}_first"], out[f"{key}_last"] = y[0], y[-1]
                    out[f"{key}_spec8"] = spec[:, ::8]
                else:
                    out[f"{key}_output"] = y
                    out[f"{key}_spec"] = spec
                    for j in sorted(feats):
                        out[f"{key}_block{j + 1}"] = torch.cat(feats[j], dim=1)[0].numpy()
            for h in hooks:
                h.remove()
    dest = HERE / "data" / "dasheng_golden.npz"
    dest.parent.mkdir(exist_ok=True)
    np.savez_compressed(dest, **{k: np.asarray(v, dtype=np.float32) for k, v in out.items()})
    print(dest, dest.stat().st_size, "bytes;", len(out), "arrays")


if __name__ == "__main__":
    main()
