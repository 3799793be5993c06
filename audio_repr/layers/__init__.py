"""Network building blocks shared by several model families (:mod:`audio_repr.layers.vit`: the ViT
pieces of MSM-MAE and AST)."""

from .vit import Attention, Block, Mlp, PatchEmbed

__all__ = ["Attention", "Block", "Mlp", "PatchEmbed"]
