#!/usr/bin/env python3
"""PyTorch scaled_dot_product_attention decode baseline for bench_attention_cuda: prints one JSON object.

Usage: sdpa_baseline.py --configs heads:kv_heads:dim:batch:context[,...] [--iters N]
Each config: q [batch, heads, 1, dim], K/V [batch, kv_heads, context, dim] f16 (GQA through enable_gqa=True);
median of N CUDA-event timings, L2 flushed before each timed call: by reading
256 MB (default; L2 left clean) or, with --flush write, by a 256 MB memset (dirty lines cost write-backs).
"""
import argparse
import json
import sys

import torch
import torch.nn.functional as F


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", required=True)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--flush", choices=["read", "write"], default="read")
    a = ap.parse_args()
    dev = torch.device("cuda")
    flush = torch.ones(64 << 20, dtype=torch.int32, device=dev)  # 256 MB
    out = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "results": []}
    for cfg in a.configs.split(","):
        h, kvh, d, b, n = (int(x) for x in cfg.split(":"))
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
        times.sort()
        out["results"].append({"heads": h, "kv_heads": kvh, "dim": d, "batch": b, "context": n,
                               "median_us": times[len(times) // 2], "min_us": times[0]})
        del q, k, v
        torch.cuda.empty_cache()
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
