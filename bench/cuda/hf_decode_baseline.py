#!/usr/bin/env python3
"""The user's alternative for `adamas bench decode --device cuda`: decode tokens/s at a Llama shape with random
f16 weights on the same GPU. Hugging Face transformers LlamaForCausalLM.generate() (attn_implementation="sdpa",
greedy) when transformers is installed; otherwise a minimal PyTorch Llama decode loop on
torch.nn.functional.scaled_dot_product_attention (labelled "torch-sdpa-loop"). The cache is filled with random K/V
of CTX tokens per sequence (no prefill is timed), as in the engine's benchmark. One JSON object per output line:
{"batch", "ctx", "impl", "tokens_per_s"} per point, {"info": ...} for notes."""
import argparse
import json
import statistics
import sys
import time


def emit(**kw):
    print(json.dumps(kw), flush=True)


def main():
    ap = argparse.ArgumentParser()
    for k in ("layers", "dim", "ffn", "heads", "kv-heads", "vocab", "tokens", "reps"):
        ap.add_argument("--" + k, type=int, required=True)
    ap.add_argument("--rope-base", type=float, default=10000.0)
    ap.add_argument("--ctx", required=True)
    ap.add_argument("--batch", required=True)
    a = ap.parse_args()
    try:
        import torch
    except ImportError:
        emit(info="torch is not installed: no baseline")
        return
    if not torch.cuda.is_available():
        emit(info="torch sees no CUDA device: no baseline")
        return
    torch.set_default_dtype(torch.float16)
    try:
        import transformers  # noqa: F401
        from transformers import LlamaConfig, LlamaForCausalLM
        from transformers.cache_utils import DynamicCache
        have_hf = True
    except Exception as e:  # noqa: BLE001
        emit(info=f"transformers not importable ({type(e).__name__}: {e}); using the torch SDPA loop")
        have_hf = False
    ctxs = [int(x) for x in a.ctx.split(",")]
    batches = [int(x) for x in a.batch.split(",")]
    hd = a.dim // a.heads
    dev = torch.device("cuda")
    if have_hf:
        cfg = LlamaConfig(hidden_size=a.dim, intermediate_size=a.ffn, num_hidden_layers=a.layers,
                          num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, vocab_size=a.vocab,
                          max_position_embeddings=max(ctxs) + 4096, rope_theta=a.rope_base,
                          torch_dtype=torch.float16)
        cfg._attn_implementation = "sdpa"
        with torch.device(dev):
            model = LlamaForCausalLM(cfg).half().eval()
        impl = f"transformers-{transformers.__version__}-generate-sdpa"
        emit(info=f"{impl}, torch {torch.__version__}, random weights")
    else:
        model = TorchLlama(a, dev)
        impl = "torch-sdpa-loop"
        emit(info=f"torch {torch.__version__} minimal Llama decode loop on SDPA (transformers absent), random weights")
    for b in batches:
        for ctx in ctxs:
            try:
                tps = []
                for rep in range(a.reps + 1):  # the first run warms up
                    torch.cuda.synchronize()
                    if have_hf:
                        t = run_hf(model, cfg, b, ctx, a.tokens, dev)
                    else:
                        t = model.run(b, ctx, a.tokens)
                    if rep > 0:
                        tps.append(b * a.tokens / t)
                emit(batch=b, ctx=ctx, impl=impl, tokens_per_s=statistics.median(tps))
            except torch.cuda.OutOfMemoryError:
                emit(batch=b, ctx=ctx, impl=impl, tokens_per_s=0.0, note="out of GPU memory")
            torch.cuda.empty_cache()


def run_hf(model, cfg, b, ctx, n, dev):
    import torch
    from transformers.cache_utils import DynamicCache
    kvh, hd = cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads
    cache = DynamicCache()
    for layer in range(cfg.num_hidden_layers):
        k = torch.randn(b, kvh, ctx, hd, device=dev) * 2
        cache.update(k, torch.randn_like(k), layer)
    ids = torch.randint(0, cfg.vocab_size, (b, ctx + 1), device=dev)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.no_grad():
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), past_key_values=cache,
                       max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
    torch.cuda.synchronize()
    return time.perf_counter() - t0


class TorchLlama:
    """Llama decode in plain PyTorch: a preallocated f16 KV cache, SDPA attention (GQA by repeat), greedy."""

    def __init__(self, a, dev):
        import torch
        self.a, self.dev = a, dev
        d, f, hd = a.dim, a.ffn, a.dim // a.heads
        r = lambda *s: (torch.rand(*s, device=dev) - 0.5) * (12.0 / s[-1]) ** 0.5  # noqa: E731
        self.layers = [dict(wqkv=r((a.heads + 2 * a.kv_heads) * hd, d), wo=r(d, a.heads * hd), wgu=r(2 * f, d),
                            wd=r(d, f)) for _ in range(a.layers)]
        self.emb, self.out = r(a.vocab, d), r(a.vocab, d)
        self.inv = 1.0 / (a.rope_base ** (torch.arange(0, hd, 2, device=dev, dtype=torch.float32) / hd))

    def run(self, b, ctx, n):
        import torch
        import torch.nn.functional as F
        a, dev = self.a, self.dev
        hd, kvh, h = a.dim // a.heads, a.kv_heads, a.heads
        cap = ctx + n
        K = [torch.randn(b, kvh, cap, hd, device=dev) for _ in range(a.layers)]
        V = [torch.randn(b, kvh, cap, hd, device=dev) for _ in range(a.layers)]
        tok = torch.randint(0, a.vocab, (b,), device=dev)
        norm = lambda x: x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5).half()  # noqa: E731

        def rope(x, pos):
            ang = pos * self.inv
            c, s = ang.cos().half(), ang.sin().half()
            x1, x2 = x[..., 0::2], x[..., 1::2]
            return torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), -1).flatten(-2)

        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            for step in range(n):
                pos = ctx + step
                x = self.emb[tok]
                for li, L in enumerate(self.layers):
                    qkv = norm(x) @ L["wqkv"].T
                    q = rope(qkv[:, :h * hd].view(b, h, 1, hd), pos)
                    k = rope(qkv[:, h * hd:(h + kvh) * hd].view(b, kvh, 1, hd), pos)
                    v = qkv[:, (h + kvh) * hd:].view(b, kvh, 1, hd)
                    K[li][:, :, pos:pos + 1] = k
                    V[li][:, :, pos:pos + 1] = v
                    kk, vv = K[li][:, :, :pos + 1], V[li][:, :, :pos + 1]
                    o = F.scaled_dot_product_attention(q, kk, vv, enable_gqa=kvh != h)
                    x = x + o.reshape(b, h * hd) @ L["wo"].T
                    gu = norm(x) @ L["wgu"].T
                    g, u = gu.chunk(2, -1)
                    x = x + (F.silu(g) * u) @ L["wd"].T
                tok = (norm(x) @ self.out.T).argmax(-1)
        torch.cuda.synchronize()
        return time.perf_counter() - t0


if __name__ == "__main__":
    sys.exit(main())
