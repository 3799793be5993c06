"""Text encoders of the audio-text models, with the names of ``transformers``' modules so checkpoints load as
saved: the BERT/RoBERTa post-LayerNorm transformer (:class:`Roberta` with RoBERTa's position ids and pooler,
:class:`Bert` with absolute positions ``0 .. T-1``, returning the last hidden states) and GPT-2's pre-LayerNorm
causal transformer (:class:`Gpt2`); and the tokenizers read from the files that come with the weights with the
``tokenizers`` package: the byte-level BPEs of RoBERTa and GPT-2 (``vocab.json`` + ``merges.txt``) and BERT's
WordPiece (``vocab.txt``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..weights import WeightsError

__all__ = ["Roberta", "Bert", "Gpt2", "BpeTokenizer", "Gpt2Tokenizer", "WordPieceTokenizer", "tokenizer_paths"]


# ---- RoBERTa -------------------------------------------------------------------------------------------------
class _Layer(nn.Module):
    """One post-LayerNorm BERT layer with the names of ``transformers``' ``RobertaLayer``."""

    def __init__(self, d: int, heads: int, inner: int, eps: float):
        super().__init__()
        self.heads = heads
        self.attention = nn.Module()
        self.attention.self = nn.Module()
        for n in ("query", "key", "value"):
            setattr(self.attention.self, n, nn.Linear(d, d))
        self.attention.output = nn.Module()
        self.attention.output.dense = nn.Linear(d, d)
        self.attention.output.LayerNorm = nn.LayerNorm(d, eps=eps)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(d, inner)
        self.output = nn.Module()
        self.output.dense = nn.Linear(inner, d)
        self.output.LayerNorm = nn.LayerNorm(d, eps=eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        a = self.attention.self
        q, k, v = (m(x).view(B, T, self.heads, D // self.heads).transpose(1, 2) for m in (a.query, a.key, a.value))
        w = (q @ k.transpose(-1, -2)) / (D // self.heads) ** 0.5 + bias
        ctx = (w.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, T, D)
        x = self.attention.output.LayerNorm(self.attention.output.dense(ctx) + x)
        return self.output.LayerNorm(self.output.dense(F.gelu(self.intermediate.dense(x))) + x)


class Roberta(nn.Module):
    """RoBERTa's encoder and pooler (the names of ``transformers.RobertaModel``), ``pooler_output`` only."""

    def __init__(self, vocab_size: int = 50265, hidden: int = 768, layers: int = 12, heads: int = 12,
                 intermediate: int = 3072, max_positions: int = 514, type_vocab: int = 1, pad_id: int = 1,
                 eps: float = 1e-5):
        super().__init__()
        self.pad_id = pad_id
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Embedding(vocab_size, hidden, padding_idx=pad_id)
        self.embeddings.position_embeddings = nn.Embedding(max_positions, hidden, padding_idx=pad_id)
        self.embeddings.token_type_embeddings = nn.Embedding(type_vocab, hidden)
        self.embeddings.LayerNorm = nn.LayerNorm(hidden, eps=eps)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList([_Layer(hidden, heads, intermediate, eps) for _ in range(layers)])
        self.pooler = nn.Module()
        self.pooler.dense = nn.Linear(hidden, hidden)

    def positions(self, ids: torch.Tensor) -> torch.Tensor:
        keep = ids.ne(self.pad_id).long()
        return torch.cumsum(keep, dim=1) * keep + self.pad_id            # RoBERTa's position ids

    def hidden_states(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The last layer's states ``[B, T, D]`` (``last_hidden_state``); padding (``mask`` 0) is not attended to."""
        e = self.embeddings
        x = (e.word_embeddings(ids) + e.position_embeddings(self.positions(ids))
             + e.token_type_embeddings(torch.zeros_like(ids)))
        x = e.LayerNorm(x)
        bias = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.encoder.layer:
            x = layer(x, bias)
        return x

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.pooler.dense(self.hidden_states(ids, mask)[:, 0]))


class Bert(Roberta):
    """BERT's embeddings and encoder (the names of ``transformers.BertModel``; its pooler is not used): absolute
    position ids ``0 .. T-1``, token type 0 for every token. ``forward`` gives ``last_hidden_state`` ``[B, T, D]``.
    The defaults are BERT-base's (``bert-base-uncased``, ``thenlper/gte-base``)."""

    def __init__(self, vocab_size: int = 30522, hidden: int = 768, layers: int = 12, heads: int = 12,
                 intermediate: int = 3072, max_positions: int = 512, type_vocab: int = 2, pad_id: int = 0,
                 eps: float = 1e-12):
        super().__init__(vocab_size, hidden, layers, heads, intermediate, max_positions, type_vocab, pad_id, eps)
        del self.pooler
        self.max_positions = max_positions

    def positions(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.arange(ids.shape[1], device=ids.device)[None].expand_as(ids)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.hidden_states(ids, mask)

    def load_weights(self, path: Path) -> None:
        """``model.safetensors`` or ``pytorch_model.bin`` of a ``BertModel`` (``bert.``-prefixed names of the
        pre-training heads' checkpoints too): every tensor of the encoder must be there with its shape; the pooler,
        ``position_ids`` and heads are ignored."""
        from ..weights import load_checkpoint

        state = load_checkpoint(path)
        if not isinstance(state, dict):
            raise WeightsError(f"{path}: not a BERT state dict")
        state = {k[len("bert."):] if k.startswith("bert.") else k: v for k, v in state.items() if torch.is_tensor(v)}
        own = self.state_dict()
        bad = [k for k in own if k not in state or tuple(state[k].shape) != tuple(own[k].shape)]
        if bad:
            k = bad[0]
            got = tuple(state[k].shape) if k in state else "absent"
            raise WeightsError(f"{path}: not the BERT text encoder this model needs ({len(bad)} tensor(s) missing or "
                               f"of another shape, e.g. {k}: {got} in the file, {tuple(own[k].shape)} here)")
        self.load_state_dict({k: state[k] for k in own})


# ---- the tokenizers -----------------------------------------------------------------------------------------
class WordPieceTokenizer:
    """BERT's uncased WordPiece tokenizer (``BertTokenizer(vocab.txt)`` with its defaults: clean-up, lower case,
    accents stripped, CJK characters split, ``[CLS] tokens [SEP]``) with the ``tokenizers`` package; truncated to
    ``length`` tokens and padded with ``[PAD]`` to the batch's longest text (``padding=True``)."""

    def __init__(self, vocab: Path, length: int = 512):
        try:
            from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
        except ImportError as e:  # pragma: no cover - a dependency of the package
            raise ImportError("text embeddings need the 'tokenizers' package (pip install tokenizers)") from e
        with open(vocab, encoding="utf-8") as f:
            table = {line.rstrip("\n"): i for i, line in enumerate(f)}
        for special in ("[CLS]", "[SEP]", "[PAD]", "[UNK]"):
            if special not in table:
                raise WeightsError(f"{vocab}: not a BERT WordPiece vocabulary (no {special} token)")
        tok = Tokenizer(models.WordPiece(table, unk_token="[UNK]", max_input_chars_per_word=100))
        tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                    lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.post_processor = processors.BertProcessing(("[SEP]", table["[SEP]"]), ("[CLS]", table["[CLS]"]))
        tok.enable_truncation(max_length=length)
        tok.enable_padding(pad_id=table["[PAD]"], pad_token="[PAD]")
        self.tokenizer, self.length, self.pad_id = tok, length, table["[PAD]"]

    def __call__(self, texts: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
        return ids, mask


class BpeTokenizer:
    """RoBERTa's byte-level BPE tokenizer (``RobertaTokenizer``) from its ``vocab.json`` and ``merges.txt``, with the
    ``tokenizers`` package: ``<s> tokens </s>``, truncated to ``length`` and padded to it with ``<pad>``."""

    def __init__(self, vocab: Path, merges: Path, length: int = 77):
        try:
            from tokenizers import Tokenizer, models, pre_tokenizers, processors
        except ImportError as e:  # pragma: no cover - a dependency of the package
            raise ImportError("text embeddings need the 'tokenizers' package (pip install tokenizers)") from e
        with open(vocab, encoding="utf-8") as f:
            table = json.load(f)
        for special in ("<s>", "</s>", "<pad>"):
            if special not in table:
                raise WeightsError(f"{vocab}: not a RoBERTa vocabulary (no {special} token)")
        tok = Tokenizer(models.BPE.from_file(str(vocab), str(merges), unk_token="<unk>" if "<unk>" in table else None))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.post_processor = processors.RobertaProcessing(("</s>", table["</s>"]), ("<s>", table["<s>"]),
                                                          trim_offsets=True, add_prefix_space=False)
        tok.enable_truncation(max_length=length)
        tok.enable_padding(length=length, pad_id=table["<pad>"], pad_token="<pad>")
        self.tokenizer, self.length, self.pad_id = tok, length, table["<pad>"]

    def __call__(self, texts: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
        return ids, mask


# ---- GPT-2 ---------------------------------------------------------------------------------------------------
class Conv1D(nn.Module):
    """GPT-2's "Conv1D": a linear map whose ``weight`` is stored ``[in, out]`` (the transpose of ``nn.Linear``'s)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_in, d_out))
        self.bias = nn.Parameter(torch.zeros(d_out))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(*x.shape[:-1], -1)


class _Gpt2Block(nn.Module):
    """One pre-LayerNorm GPT-2 block with the names of ``transformers``' ``GPT2Block`` (causal attention, the
    tanh-approximated GELU ``gelu_new``)."""

    def __init__(self, d: int, heads: int, inner: int, eps: float):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(d, eps=eps)
        self.attn = nn.Module()
        self.attn.c_attn = Conv1D(d, 3 * d)
        self.attn.c_proj = Conv1D(d, d)
        self.ln_2 = nn.LayerNorm(d, eps=eps)
        self.mlp = nn.Module()
        self.mlp.c_fc = Conv1D(d, inner)
        self.mlp.c_proj = Conv1D(inner, d)

    def forward(self, x: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.attn.c_attn(self.ln_1(x)).split(D, dim=-1)
        q, k, v = (t.view(B, T, self.heads, D // self.heads).transpose(1, 2) for t in (q, k, v))
        w = (q @ k.transpose(-1, -2)) / (D // self.heads) ** 0.5
        w = w.masked_fill(~causal, torch.finfo(w.dtype).min)
        x = x + self.attn.c_proj((w.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, T, D))
        return x + self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x)), approximate="tanh"))


class Gpt2(nn.Module):
    """GPT-2's transformer (the names of ``transformers.GPT2Model``: ``wte``, ``wpe``, ``h.N``, ``ln_f``); returns
    the last hidden state ``[B, T, D]`` after ``ln_f``. Attention is causal, so a position's output depends on the
    tokens up to it only: padding after a text never changes its tokens' outputs (no padding mask is needed)."""

    def __init__(self, vocab_size: int = 50257, hidden: int = 768, layers: int = 12, heads: int = 12,
                 max_positions: int = 1024, eps: float = 1e-5, inner: Optional[int] = None):
        super().__init__()
        self.max_positions = max_positions
        self.wte = nn.Embedding(vocab_size, hidden)
        self.wpe = nn.Embedding(max_positions, hidden)
        self.h = nn.ModuleList([_Gpt2Block(hidden, heads, inner or 4 * hidden, eps) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(hidden, eps=eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        T = ids.shape[1]
        if T > self.max_positions:
            raise ValueError(f"GPT-2 reads at most {self.max_positions} tokens, got a text of {T}")
        pos = torch.arange(T, device=ids.device)
        x = self.wte(ids) + self.wpe(pos)[None]
        causal = torch.ones(T, T, dtype=torch.bool, device=ids.device).tril()
        for block in self.h:
            x = block(x, causal)
        return self.ln_f(x)


class Gpt2Tokenizer:
    """GPT-2's byte-level BPE tokenizer (``GPT2TokenizerFast``) from its ``vocab.json`` and ``merges.txt``, with the
    ``tokenizers`` package: no prefix space, no added BOS/EOS, ``<|endoftext|>`` a special token; ``pad`` (a token
    of the vocabulary, Microsoft CLAP's ``'!'``) made a special token too (so it is never merged with its
    neighbours, as ``tokenizer.add_special_tokens({'pad_token': '!'})`` does), and each text followed by ``suffix``.
    Rows are padded with ``pad`` to ``length`` tokens or to the batch's longest (never truncated)."""

    def __init__(self, vocab: Path, merges: Path, length: int = 77, pad: str = "!", suffix: str = " <|endoftext|>"):
        try:
            from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
        except ImportError as e:  # pragma: no cover - a dependency of the package
            raise ImportError("text embeddings need the 'tokenizers' package (pip install tokenizers)") from e
        with open(vocab, encoding="utf-8") as f:
            table = json.load(f)
        for special in ("<|endoftext|>", pad):
            if special not in table:
                raise WeightsError(f"{vocab}: not a GPT-2 vocabulary (no {special} token)")
        tok = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False),
                                AddedToken(pad, special=True, normalized=False)])
        self.tokenizer, self.length, self.pad_id, self.suffix = tok, length, table[pad], suffix

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """``[N, max(length, longest)]`` token ids, padded with the pad id."""
        enc = [e.ids for e in self.tokenizer.encode_batch([t + self.suffix for t in texts])]
        width = max([self.length] + [len(e) for e in enc])
        return torch.tensor([e + [self.pad_id] * (width - len(e)) for e in enc], dtype=torch.long)


def tokenizer_paths(files: Sequence[str]) -> Tuple[Path, ...]:
    """The tokenizer files a text tower names (manifest entries such as ``roberta-base-vocab.json``) found like
    weights (cache, ``AUDIO_REPR_MIRROR``, download), or one ``WeightsNotFoundError`` saying how to provide them."""
    from ..weights import WeightsNotFoundError, resolve

    try:
        return tuple(resolve(k) for k in files)
    except WeightsNotFoundError as e:
        raise WeightsNotFoundError(
            f"text embeddings need the tokenizer files {' and '.join(files)} "
            f"(audio-repr download {' '.join(files)}, or "
            f"enc.network.set_tokenizer_files(vocab, merges)): {e}") from None
