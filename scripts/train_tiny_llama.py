"""Train the demo's language model: a Llama of stories260K's sizes on the project's story corpus.

    pip install torch==2.13.0      # training only (CPU is enough); not a dependency of tvm-deeploy
    python scripts/train_tiny_llama.py [--minutes 10.5] [--seed 0]

Learns a 512-token BPE tokenizer (tvm_deeploy.lm.tokenizer.train_bpe) on scripts/data/stories.txt, trains
tvm_deeploy.lm.checkpoint.STORIES_260K (dim 64, 5 layers, 8 query and 4 KV heads, FFN 172, shared classifier)
with AdamW on random 256-token windows for a fixed wall time on 2 threads, and writes
tvm_deeploy/data/stories260k.bin and tvm_deeploy/data/tok512.bin. The PyTorch model computes what
llama2.c's run.c computes; at the end the saved checkpoint is run again by the package's NumPy model
(tvm_deeploy.lm.llama_reference), compared with PyTorch, and used for greedy samples. Prints the loss curve and the samples.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tvm_deeploy.lm.checkpoint import (
    STORIES_260K,
    Checkpoint,
    LlamaConfig,
    LlamaWeights,
    load_checkpoint,
    rope_tables,
    save_checkpoint,
)
from tvm_deeploy.lm.llama_reference import LlamaReference
from tvm_deeploy.lm.tokenizer import BOS, Tokenizer, train_bpe

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "scripts" / "data" / "stories.txt"
OUT_DIR = ROOT / "tvm_deeploy" / "data"
RMS_EPS = 1e-5
WARMUP_STEPS = 30
PROMPTS = ["Once upon a time", "Lily and Ben", "One night, a little dog"]


class TinyLlama(torch.nn.Module):
    """run.c's forward over whole sequences, parameters stacked per layer in the checkpoint's layouts."""

    def __init__(self, c: LlamaConfig, seed: int):
        super().__init__()
        self.c = c
        generator = torch.Generator().manual_seed(seed)
        residual_std = 0.02 / math.sqrt(2 * c.n_layers)  # keeps the residual stream's growth in check

        def weight(*shape, std=0.02):
            return torch.nn.Parameter(torch.randn(*shape, generator=generator) * std)

        layers = c.n_layers
        self.token_embedding = weight(c.vocab_size, c.dim)
        self.rms_att = torch.nn.Parameter(torch.ones(layers, c.dim))
        self.wq, self.wk, self.wv = weight(layers, c.dim, c.dim), weight(layers, c.kv_dim, c.dim), \
            weight(layers, c.kv_dim, c.dim)
        self.wo = weight(layers, c.dim, c.dim, std=residual_std)
        self.rms_ffn = torch.nn.Parameter(torch.ones(layers, c.dim))
        self.w1, self.w3 = weight(layers, c.hidden_dim, c.dim), weight(layers, c.hidden_dim, c.dim)
        self.w2 = weight(layers, c.dim, c.hidden_dim, std=residual_std)
        self.rms_final = torch.nn.Parameter(torch.ones(c.dim))
        cos, sin = rope_tables(c.head_dim, c.seq_len)
        self.register_buffer("cos", torch.from_numpy(cos), persistent=False)
        self.register_buffer("sin", torch.from_numpy(sin), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        c, (batch, length) = self.c, tokens.shape
        x = self.token_embedding[tokens]
        for layer in range(c.n_layers):
            h = rms_norm(x, self.rms_att[layer])
            q = self.rotate((h @ self.wq[layer].T).view(batch, length, c.n_heads, c.head_dim))
            k = self.rotate((h @ self.wk[layer].T).view(batch, length, c.n_kv_heads, c.head_dim))
            v = (h @ self.wv[layer].T).view(batch, length, c.n_kv_heads, c.head_dim)
            # Query head h reads KV head h // (n_heads / n_kv_heads).
            group = c.n_heads // c.n_kv_heads
            k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
            attended = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                      is_causal=True)  # scale 1/sqrt(head_dim)
            x = x + attended.transpose(1, 2).reshape(batch, length, c.dim) @ self.wo[layer].T
            h = rms_norm(x, self.rms_ffn[layer])
            x = x + (F.silu(h @ self.w1[layer].T) * (h @ self.w3[layer].T)) @ self.w2[layer].T
        return rms_norm(x, self.rms_final) @ self.token_embedding.T

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        """Rotary embedding of each head's interleaved pairs (2j, 2j + 1); x is [batch, seq, heads, head_dim]."""
        cos, sin = self.cos[:x.shape[1], None, :], self.sin[:x.shape[1], None, :]
        even, odd = x[..., 0::2], x[..., 1::2]
        return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)

    def checkpoint(self) -> Checkpoint:
        arrays = {name: p.detach().numpy().copy() for name, p in self.named_parameters()}
        return Checkpoint(self.c, LlamaWeights(**arrays, wcls=arrays["token_embedding"]))


def rms_norm(x, weight):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + RMS_EPS) * weight


def greedy(checkpoint: Checkpoint, tokenizer: Tokenizer, prompt: str, steps: int = 400) -> str:
    """The prompt, then the most likely token each step until BOS (the next story), `steps` tokens or the
    end of the context, with the package's NumPy reference of the model."""
    model, tokens = LlamaReference(checkpoint), tokenizer.encode(prompt)
    logits = model.prompt(tokens)
    while steps > 0 and len(tokens) < checkpoint.config.seq_len:
        next_token = int(logits.argmax())
        if next_token == BOS:
            break
        tokens.append(next_token)
        steps -= 1
        if len(tokens) < checkpoint.config.seq_len:
            logits = model.decode(next_token)
    return tokenizer.decode(tokens)


def load_stories() -> tuple[Tokenizer, np.ndarray]:
    stories = [s.strip() for s in CORPUS.read_text(encoding="utf-8").split("\n\n") if s.strip()]
    # Trained on the text as encode sees it: each story after the space encode puts in front.
    tokenizer = train_bpe("\n\n".join(" " + s for s in stories), STORIES_260K.vocab_size)
    tokens = np.concatenate([tokenizer.encode(s) for s in stories]).astype(np.int64)  # BOS starts each story
    return tokenizer, tokens


def batches(tokens: np.ndarray, batch_size: int, length: int, rng: np.random.Generator):
    while True:
        starts = rng.integers(0, len(tokens) - length - 1, batch_size)
        window = torch.from_numpy(np.stack([tokens[s:s + length + 1] for s in starts]))
        yield window[:, :-1], window[:, 1:]


def mean_loss(model, batch_list) -> float:
    with torch.no_grad():
        return float(np.mean([F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item() for x, y in batch_list]))


def train(model, train_batches, val_batches, args) -> None:
    decayed = [p for name, p in model.named_parameters() if not name.startswith("rms")]
    norms = [p for name, p in model.named_parameters() if name.startswith("rms")]
    optimizer = torch.optim.AdamW([{"params": decayed, "weight_decay": 0.1}, {"params": norms, "weight_decay": 0}],
                                  lr=args.lr, betas=(0.9, 0.95))
    budget, start, step, recent, next_report = args.minutes * 60, time.monotonic(), 0, [], 0.0
    print(f"{'step':>6} {'min':>5} {'train':>7} {'val':>7} {'lr':>8}")
    while (elapsed := time.monotonic() - start) < budget:
        # Linear warm-up, then a cosine decay to a tenth over the wall-time budget.
        lr = args.lr * min(1.0, (step + 1) / WARMUP_STEPS) * (0.1 + 0.45 * (1 + math.cos(math.pi * elapsed / budget)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        inputs, targets = next(train_batches)
        loss = F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        recent.append(loss.item())
        step += 1
        if elapsed >= next_report:
            val = mean_loss(model, val_batches)
            print(f"{step:6d} {elapsed / 60:5.1f} {np.mean(recent):7.3f} {val:7.3f} {lr:8.2e}", flush=True)
            recent, next_report = [], elapsed + budget / 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.5, help="training wall time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=8, help="small batches: more steps in the time")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--lr", type=float, default=8e-3)
    args = parser.parse_args()
    torch.set_num_threads(2)

    tokenizer, tokens = load_stories()
    split = int(len(tokens) * 0.97)  # the last stories are held out for the validation loss
    print(f"{len(tokens)} tokens ({CORPUS.stat().st_size / len(tokens):.2f} bytes each), "
          f"{len(tokens) - split} held out")
    rng = np.random.default_rng(args.seed)
    train_batches = batches(tokens[:split], args.batch, args.seq_len, rng)
    val_batches = [next(batches(tokens[split:], args.batch, args.seq_len, rng)) for _ in range(8)]
    model = TinyLlama(STORIES_260K, args.seed)
    print(f"{sum(p.numel() for p in model.parameters())} parameters; training for {args.minutes} minutes")
    train(model, train_batches, val_batches, args)
    final_train = mean_loss(model, [next(train_batches) for _ in range(8)])
    print(f"final loss: train {final_train:.3f}, validation {mean_loss(model, val_batches):.3f}")

    OUT_DIR.mkdir(exist_ok=True)
    save_checkpoint(OUT_DIR / "stories260k.bin", model.checkpoint())
    tokenizer.save(OUT_DIR / "tok512.bin")
    checkpoint, tokenizer = load_checkpoint(OUT_DIR / "stories260k.bin"), Tokenizer.load(OUT_DIR / "tok512.bin")

    probe, numpy_model = tokenizer.encode(PROMPTS[0]), LlamaReference(checkpoint)
    with torch.no_grad():
        reference = model(torch.tensor([probe])).numpy()[0]
    difference = np.abs(np.array([numpy_model.forward([token], pos) for pos, token in enumerate(probe)])
                        - reference).max()
    print(f"saved checkpoint, the package's NumPy model against PyTorch: max |logit difference| {difference:.2e}")
    for prompt in PROMPTS:
        print(f"\n--- greedy from {prompt!r}:\n{greedy(checkpoint, tokenizer, prompt)}")


if __name__ == "__main__":
    main()
