"""HEAR 2021-style timestamp and scene embeddings through ``audio_repr.hear.<model>``.

    python examples/hear_timestamps.py some.wav --model byola-v1-512 [--weights FILE]
"""

import argparse
import importlib

import audio_repr
from audio_repr.hear import module_name

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("path")
p.add_argument("--model", default="byola-v1-512")
p.add_argument("--weights", default="")
args = p.parse_args()

hear = importlib.import_module(module_name(args.model))        # e.g. audio_repr.hear.byola_v1_512
model = hear.load_model(args.weights)
wav, _ = audio_repr.load_audio(args.path, sr=hear.sample_rate)   # HEAR passes audio at the model's rate
audio = wav[None]                                                # [n_sounds, n_samples]
emb, ts = hear.get_timestamp_embeddings(audio, model)
scene = hear.get_scene_embeddings(audio, model)
print(f"timestamp embeddings {tuple(emb.shape)}, timestamps {tuple(ts.shape)} (ms): {ts[0, :4].tolist()} ...")
print(f"scene embedding {tuple(scene.shape)}")
