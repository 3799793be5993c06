"""The original M2D runtime (``nttcslab/m2d``, ``examples/portable_m2d.py``), re-stated plainly for the tests.

* :class:`TrainingM2D`: the pre-training model's module layout (online encoder, its ``norm_stats``, the target
  encoder, the decoder, and optionally M2D-AS's offline predictor or M2D-CLAP's projectors), so that
  ``state_dict()`` has the keys of the released checkpoints; only the online encoder computes anything.
* :class:`PortableRuntime`: what ``PortableM2D(weight_file)`` does — read the run folder's name for input and
  patch size, read the checkpoint (``model`` inside, runtime/EVAR prefixes removed, ``norm_stats`` defaulted
  to ``[-7.1, 4.2]``), keep the parameters the runtime ViT has, normalise the nnAudio log-mel with the
  checkpoint's statistics, cut it into units of the input width (the last one padded to whole patches only,
  its positional embedding shortened to its columns), encode each unit, drop ``[CLS]``, stack the frequency
  patches of each time step, concatenate the units; ``get_scene_embeddings`` is the time mean. ``layers=True``
  gives every block's output as the runtime's ``encode_lms(return_layers=True)`` does (the last one normalised),
  plus the raw last block. One clip at a time, one unit at a time, with explicit attention.
"""

import argparse
from pathlib import Path

import torch
from torch import nn

import reference_msm_mae
from reference_msm_mae import mae_sincos

EPS = float(torch.finfo(torch.float32).eps)


class Attn(nn.Module):
    """timm's attention with a bias on the joint qkv projection, computed by hand."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, length, dim = x.shape
        hd = dim // self.heads
        q, k, v = self.qkv(x).reshape(n, length, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        weights = torch.softmax((q * hd ** -0.5) @ k.transpose(-2, -1), dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(n, length, dim))


class Blk(reference_msm_mae.Blk):
    """MSM-MAE's pre-norm block (LayerNorm eps 1e-6, GELU MLP) with timm's attention."""

    def __init__(self, dim, heads):
        super().__init__(dim, heads)
        self.attn = Attn(dim, heads)


class PatchEmbed(nn.Module):
    def __init__(self, dim, patch):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, patch, stride=patch)


class RuntimeViT(nn.Module):
    """The runtime's ViT: patch embedding, [CLS], fixed sin-cos table, blocks, final norm, ``norm_stats``."""

    def __init__(self, input_size=(80, 608), patch=(16, 16), dim=768, depth=12, heads=12):
        super().__init__()
        self.grid = (input_size[0] // patch[0], input_size[1] // patch[1])
        self.dim, self.patch = dim, tuple(patch)
        self.patch_embed = PatchEmbed(dim, tuple(patch))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(mae_sincos(dim, *self.grid, True), requires_grad=False)
        self.blocks = nn.ModuleList([Blk(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.norm_stats = nn.Parameter(torch.tensor([-7.1, 4.2]), requires_grad=False)

    def encode_unit(self, x):
        """x [1, 1, F, W] (W a whole number of patches, at most the input width) -> every block's tokens
        (the last one normalised) and the raw last block."""
        t = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        cols = t.shape[1] // self.grid[0]
        table = self.pos_embed[:, 1:].reshape(1, self.grid[0], self.grid[1], self.dim)[:, :, :cols]
        t = t + table.reshape(1, -1, self.dim)
        t = torch.cat([self.cls_token + self.pos_embed[:, :1], t], dim=1)
        layers = []
        for blk in self.blocks:
            t = blk(t)
            layers.append(t)
        raw = layers[-1]
        layers[-1] = self.norm(t)
        return layers, raw


class TrainingM2D(RuntimeViT):
    """The pre-training model's parameters: the runtime ViT plus what the runtime drops."""

    def __init__(self, input_size=(80, 608), patch=(16, 16), dim=768, depth=12, heads=12, target_depth=None,
                 dec_dim=32, dec_depth=1, dec_heads=4, extra=None):
        super().__init__(input_size, patch, dim, depth, heads)
        n = self.grid[0] * self.grid[1] + 1
        self.target_blocks = nn.ModuleList([Blk(dim, heads) for _ in range(depth if target_depth is None
                                                                             else target_depth)])
        self.target_norm = nn.LayerNorm(dim, eps=1e-6)
        self.decoder_embed = nn.Linear(dim, dec_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, n, dec_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList([Blk(dec_dim, dec_heads) for _ in range(dec_depth)])
        self.decoder_norm = nn.LayerNorm(dec_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(dec_dim, patch[0] * patch[1])
        if extra == "as":                                    # M2D-AS: the offline (label) predictor
            self.offline_predictor = nn.Linear(self.grid[0] * dim, 527)
        elif extra in ("clap", "clap-text-proj"):             # M2D-CLAP: the temperature and the projectors
            self.logit_scale = nn.Parameter(torch.tensor(2.6592600464820862))
            self.audio_proj = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
            if extra == "clap-text-proj":    # the trainer's text_proj is the identity (no tensors) when the offline
                self.text_proj = nn.Linear(dim, dim)   # text embedding has the encoder's width, as GTE-base's 768


def random_training_model(seed=0, norm_stats=None, **kwargs):
    """A TrainingM2D with seeded random weights; LayerNorm scales and shifts, biases and tokens random too."""
    torch.manual_seed(seed)
    net = TrainingM2D(**kwargs)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("pos_embed") or name == "norm_stats" or (p.ndim >= 2 and "token" not in name):
                continue
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        if norm_stats is not None:
            net.norm_stats.copy_(torch.tensor(norm_stats))
    return net.eval()


def training_checkpoint(net, epoch=300, drop_norm_stats=False):
    """What the training script saves: model, optimizer, epoch, scaler, args (a pickled Namespace)."""
    state = net.state_dict()
    if drop_norm_stats:                                     # the 2022 checkpoints predate norm_stats
        state = {k: v for k, v in state.items() if k != "norm_stats"}
    from conftest import adamw_state, grad_scaler_state

    args = argparse.Namespace(model="m2d_vit_base", input_size=[80, 608], patch_size=[16, 16], epochs=epoch,
                              batch_size=2048, accum_iter=1, lr=None, blr=3e-4, min_lr=0.0, warmup_epochs=20,
                              weight_decay=0.05, mask_ratio=0.7, ema_decay_init=0.99995, norm_pix_loss=False,
                              data_path="data", output_dir="m2d_vit_base-80x608p16x16", log_dir=None, seed=0,
                              resume="", start_epoch=0, num_workers=10, pin_mem=True, world_size=8, local_rank=-1,
                              dist_on_itp=False, dist_url="env://", distributed=True, gpu=0, rank=0,
                              dist_backend="nccl", norm_stats=[-7.1, 4.2], device="cuda")
    return {"model": state, "optimizer": adamw_state(len(state), lr=3e-4), "epoch": epoch,
            "scaler": grad_scaler_state(), "args": args}


def run_name_sizes(name):
    """The runtime's reading of a run name: ``<model>-<F>x<T>p<pf>x<pt>[p<sr>]-...``."""
    fields = name.split("-")[1].split("p")
    size = [int(v) for v in fields[0].split("x")]
    patch = [int(v) for v in fields[1].split("x")]
    return size, patch, (fields[2] if len(fields) > 2 else "16k")


class PortableRuntime:
    """``PortableM2D(weight_file)`` for one clip at a time (see the module's docstring)."""

    def __init__(self, weight_file, dim=768, depth=12, heads=12):
        weight_file = Path(weight_file)
        size, patch, sr = run_name_sizes(weight_file.parent.name)
        assert sr == "16k"
        ckpt = torch.load(weight_file, map_location="cpu", weights_only=False)
        ckpt = ckpt["model"] if "model" in ckpt else ckpt
        if any(k.startswith("backbone.") for k in ckpt):
            ckpt = {k[len("backbone."):]: v for k, v in ckpt.items() if k.startswith("backbone.")}
        ckpt = {k.replace("module.ar.runtime.backbone.", ""): v for k, v in ckpt.items()}
        ckpt.setdefault("norm_stats", torch.tensor([-7.1, 4.2]))
        self.vit = RuntimeViT(size, patch, dim, depth, heads)
        names = {n for n, _ in self.vit.named_parameters()}
        self.vit.load_state_dict({k: v for k, v in ckpt.items() if k in names})
        self.vit.eval()
        self.unit = size[1]
        self.mean, self.std = self.vit.norm_stats.detach().numpy()
        from nnAudio.features import MelSpectrogram

        self.to_spec = MelSpectrogram(sr=16000, n_fft=400, win_length=400, hop_length=160, n_mels=80, fmin=50,
                                      fmax=8000, center=True, power=2, verbose=False)

    def normalised_lms(self, wav):
        lms = (self.to_spec(wav[None]) + EPS).log()
        return (lms - self.mean) / self.std                  # [1, 80, T]

    @torch.no_grad()
    def encode_lms(self, lms, layers=False):
        """lms [1, 80, T] -> [T', 3840] (``layers``: block1..block11 + output, then the raw block12)."""
        pt, gf = self.vit.patch[1], self.vit.grid[0]
        T = lms.shape[-1]
        short = T % self.unit % pt
        if short:
            lms = torch.nn.functional.pad(lms, (0, pt - short))
        units = -(-T // self.unit)
        per_unit = []
        for i in range(units):
            outs, raw = self.vit.encode_unit(lms[None, :, :, i * self.unit:(i + 1) * self.unit])
            stacked = []
            for t in outs + [raw]:
                t = t[0, 1:]
                steps = t.shape[0] // gf
                stacked.append(t.reshape(gf, steps, -1).transpose(0, 1).reshape(steps, -1))   # (f t) d -> t (f d)
            per_unit.append(stacked)
        joined = [torch.cat([u[j] for u in per_unit]) for j in range(len(per_unit[0]))]
        return (joined[:-1], joined[-1]) if layers else joined[-2]

    def encode(self, wav, layers=False):
        return self.encode_lms(self.normalised_lms(wav), layers)

    def get_scene_embeddings(self, wav):
        return self.encode(wav).mean(0)


def encoder_only_state(runtime):
    """What the original ``util/to_encoder_only_weight.py`` writes: the runtime ViT's bare state dict."""
    return {k: v.clone() for k, v in runtime.vit.state_dict().items()}


class PortableClap(PortableRuntime):
    """``PortableM2D(weight_file, flat_features=True)`` of an M2D-CLAP checkpoint: ``make_it_CLAP`` (``audio_proj``
    Linear-ReLU-Linear from ``audio_proj.0.weight``'s shape, ``text_proj`` a Linear when the checkpoint has
    ``text_proj.weight``), ``encode_clap_audio`` (every patch token of every unit, flattened, averaged, then
    ``audio_proj``) and ``encode_clap_text`` with ``GTETextEncoder``'s computation on a ``transformers`` BERT and
    tokenizer (``padding=True``, no truncation as the runtime's default; the mean over the attention mask), and
    the checkpoint's ``logit_scale``."""

    def __init__(self, weight_file, bert, tokenizer, dim=768, depth=12, heads=12):
        super().__init__(weight_file, dim, depth, heads)
        ckpt = torch.load(weight_file, map_location="cpu", weights_only=False)["model"]
        hidden, d_in = ckpt["audio_proj.0.weight"].shape
        self.audio_proj = nn.Sequential(nn.Linear(d_in, d_in), nn.ReLU(), nn.Linear(d_in, d_in))
        self.audio_proj.load_state_dict({k[len("audio_proj."):]: v for k, v in ckpt.items()
                                         if k.startswith("audio_proj.")})
        self.text_proj = None
        if "text_proj.weight" in ckpt:
            out, d = ckpt["text_proj.weight"].shape
            self.text_proj = nn.Linear(d, out)
            self.text_proj.load_state_dict({"weight": ckpt["text_proj.weight"], "bias": ckpt["text_proj.bias"]})
        self.logit_scale = ckpt["logit_scale"]
        self.bert, self.tokenizer = bert.eval(), tokenizer

    @torch.no_grad()
    def encode_clap_audio(self, wav):
        lms = self.normalised_lms(wav)
        pt = self.vit.patch[1]
        T = lms.shape[-1]
        short = T % self.unit % pt
        if short:
            lms = torch.nn.functional.pad(lms, (0, pt - short))
        tokens = []
        for i in range(-(-T // self.unit)):
            outs, _ = self.vit.encode_unit(lms[None, :, :, i * self.unit:(i + 1) * self.unit])
            tokens.append(outs[-1][0, 1:])                    # flat features: every patch of the unit
        return self.audio_proj(torch.cat(tokens).mean(0))

    @torch.no_grad()
    def encode_clap_text(self, texts):
        batch = self.tokenizer(texts, max_length=512, padding=True, truncation=False, return_tensors="pt")
        hidden = self.bert(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                           attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"]
        pooled = hidden.masked_fill(~mask[..., None].bool(), 0.0).sum(dim=1) / mask.sum(dim=1)[..., None]
        return pooled if self.text_proj is None else self.text_proj(pooled)
