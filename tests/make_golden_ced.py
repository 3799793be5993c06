"""Golden outputs of the original CED (``RicherMans/CED``, GPL-3.0: run here as a reference program, nothing of it is
copied into this repository) on the seeded random checkpoints of ``reference_dasheng.py``: writes
``tests/data/ced_golden.npz``.

The original needs torchaudio (no release for this project's torch) and loguru, so this runs once in a separate
environment, with a checkout of the original's ``models/`` folder::

    /tmp/dvenv/bin/pip install loguru einops   # the environment of make_golden_dasheng.py
    /tmp/dvenv/bin/python tests/make_golden_ced.py /path/to/CED-checkout

For the small configuration (3 blocks, 64-d) and for ced-tiny's shapes, each clip alone (``model(wav[None])`` in
``eval()``: the sigmoid of the clip logits, as the original returns them; with ``pooling='logit'`` the logits
themselves; ``forward_features`` for the tokens: for ced-tiny's shapes the frames projected on
:func:`reference_dasheng.projection` and the tokens' mean, for the small one every block's output by forward
hooks). The classifier's frame-wise
scores are the original's ``pooling='dm'`` path before its sigmoid.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import reference_dasheng as R  # noqa: E402


def main(checkout: str):
    sys.path.insert(0, checkout)
    from models.audiotransformer import AudioTransformer

    out = {}
    with tempfile.TemporaryDirectory() as d, torch.inference_mode():
        for kind, (dim, heads, depth) in {"small": (R.CED_SMALL["embed_dim"], R.CED_SMALL_HEADS, 3),
                                          "tiny": (*R.CED_SIZES["tiny"], 12)}.items():
            ck = R.ced_checkpoint(kind)
            models = {}
            for pooling in ("mean", "logit", "dm"):
                m = AudioTransformer(outputdim=527, patch_size=16, embed_dim=dim, depth=depth, num_heads=heads,
                                     mlp_ratio=4, pooling=pooling).eval()
                for k, v in m.state_dict().items():      # the front end's own buffers (torchaudio's)
                    if k.startswith("front_end."):
                        ck["model"][k] = v.clone()
                path = Path(d) / f"{kind}.pt"
                torch.save(ck, path)
                m.load_state_dict(torch.load(path, map_location="cpu")["model"], strict=True)
                models[pooling] = m
            m = models["mean"]
            feats = {}
            hooks = [blk.register_forward_hook(lambda mod, i, o, j=j: feats.__setitem__(j, o.clone()))
                     for j, blk in enumerate(m.blocks)]
            for name, wav in R.clips("ced").items():
                x = torch.from_numpy(wav)[None]
                key = f"{kind}_{name}"
                out[f"{key}_prob"] = m(x)[0].numpy()
                out[f"{key}_logits"] = models["logit"](x)[0].numpy()
                spec = m.init_bn(m.front_end(x)[:, None])[:, 0]     # the network's input after its batch norm
                tok = m.forward_features(spec[:, None])[0].numpy()   # [F' * T', D], frequency-major
                fp = 4
                frames = tok.reshape(fp, -1, tok.shape[-1]).mean(axis=0)
                if kind == "small":
                    out[f"{key}_output"] = frames
                    out[f"{key}_dm"] = models["dm"](x)[0].numpy()   # mean over time of the frame-wise sigmoid
                    for j in sorted(feats):
                        t = feats[j][0].numpy()
                        out[f"{key}_block{j + 1}"] = t.reshape(fp, -1, t.shape[-1]).mean(axis=0)
                else:                                                # ced-tiny's shapes: projected frames
                    out[f"{key}_proj"] = frames @ R.projection(frames.shape[1])
                    out[f"{key}_clip"] = tok.mean(axis=0)
            for h in hooks:
                h.remove()
    dest = HERE / "data" / "ced_golden.npz"
    np.savez_compressed(dest, **{k: np.asarray(v, dtype=np.float32) for k, v in out.items()})
    print(dest, dest.stat().st_size, "bytes;", len(out), "arrays")


if __name__ == "__main__":
    main(sys.argv[1])
