#!/usr/bin/env python3
"""PyTorch scaled_dot_product_attention decode baseline for bench_attention_cuda: prints one JSON object.

Usage: sdpa_baseline.py --configs heads:kv_heads:dim:batch:context[,...] [--iters N] [--allocs R]
Each config: q [batch, heads, 1, dim], K/V [batch, kv_heads, context, dim] f16 (GQA through enable_gqa=True);
median of N CUDA-event timings, L2 flushed before each timed call: by reading
256 MB (default; L2 left clean) or, with --flush write, by a 256 MB memset (dirty lines cost write-backs).
--settle S (default 0): seconds idle before each config (bench_attention_cuda passes its own, NOTES v8-dense).
--allocs R (default 1): R rounds, each on tensors allocated afresh behind a spacer of (round x 98 MB), the caching
allocator emptied between rounds (as bench_attention_cuda's rounds); median_us is the median of the rounds' medians.
"""
import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", required=True)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--flush", choices=["read", "write"], default="read")
    ap.add_argument("--allocs", type=int, default=1)
    ap.add_argument("--settle", type=float, default=0.0)
    a = ap.parse_args()
    dev = torch.device("cuda")
    flush = torch.ones(64 << 20, dtype=torch.int32, device=dev)  # 256 MB
    out = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "results": []}
    def median(v):
        v = sorted(v)
        return v[len(v) // 2] if len(v) % 2 else 0.5 * (v[len(v) // 2 - 1] + v[len(v) // 2])

    for cfg in a.configs.split(","):
        h, kvh, d, b, n = (int(x) for x in cfg.split(":"))
        rounds, mins = [], []
        time.sleep(a.settle)
        for r in range(a.allocs):
            spacer = torch.empty(r * (98 << 20), dtype=torch.uint8, device=dev) if r else None
            q = torch.randn(b, h, 1, d, device=dev, dtype=torch.float16)
            k = torch.randn(b, kvh, n, d, device=dev, dtype=torch.float16)
            v = torch.randn(b, kvh, n, d, device=dev, dtype=torch.float16)
            gqa = h != kvh
            fn = lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
            for _ in range(5):
                fn()
            torch.cuda.synchronize()
            times = []
            for _ in range(a.iters):
                if a.flush == "write":
                    flush.fill_(0)
                else:
                    flush.max()  # reads 256 MB: L2 left clean
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                fn()
                e.record()
                e.synchronize()
                times.append(s.elapsed_time(e) * 1000.0)
            rounds.append(sorted(times)[len(times) // 2])  # as bench_attention_cuda's Timer
            mins.append(min(times))
            del q, k, v, spacer, fn
            torch.cuda.empty_cache()
        out["results"].append({"heads": h, "kv_heads": kvh, "dim": d, "batch": b, "context": n,
                               "median_us": median(rounds), "min_us": min(mins), "round_us": rounds,
                               "round_min_us": min(rounds), "round_max_us": max(rounds)})
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
