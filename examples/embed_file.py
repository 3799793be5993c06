"""Embed one audio file and save its frames, timestamps and clip embedding.

    python examples/embed_file.py some.wav --model byola-v1-512 [--weights FILE] [--layers fusion]
"""

import argparse

import audio_repr

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("path")
p.add_argument("--model", default="byola-v1-512")
p.add_argument("--weights", default=None, help="weights file in the original format (default: cache/download)")
p.add_argument("--layers", default=None, help="e.g. fusion")
p.add_argument("--out", default="embedding.npz")
args = p.parse_args()

model = audio_repr.load(args.model, weights=args.weights)
emb = model.embed(args.path, layers=args.layers)
print(f"{args.path}: {emb.duration_s:.2f} s -> frames {tuple(emb.frames.shape)} "
      f"every {model.frame_hop_ms():g} ms, clip {tuple(emb.clip.shape)}, layers {emb.layers}")
print("first timestamps (ms):", emb.timestamps_ms[:4].tolist())
emb.save(args.out)
print("saved", args.out)
