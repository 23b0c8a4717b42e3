#!/usr/bin/env python3
"""PyTorch reference for bench/engine: same model, same work, same machine, one JSON line per case.

usage: /usr/bin/python3 bench/engine/torch_bench.py --size 224 --batch 16 --mode train [--steps N] [--threads T] [--device cpu|cuda]
"""
import argparse
import json
import resource
import time

import torch
import torchvision

p = argparse.ArgumentParser()
p.add_argument("--model", default="resnet18")
p.add_argument("--size", type=int, default=224)
p.add_argument("--batch", type=int, default=16)
p.add_argument("--mode", default="train", choices=["train", "inference", "freeze", "probe"])
p.add_argument("--steps", type=int, default=3)
p.add_argument("--min-seconds", type=float, default=0)
p.add_argument("--threads", type=int, default=0)
p.add_argument("--classes", type=int, default=20)
p.add_argument("--device", default="cpu")
a = p.parse_args()
if a.threads > 0:
    torch.set_num_threads(a.threads)
dev = torch.device(a.device)
model = getattr(torchvision.models, a.model)(num_classes=a.classes).to(dev)
x = torch.randn(a.batch, 3, a.size, a.size, device=dev)
y = torch.arange(a.batch, device=dev) % a.classes
opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)

if a.mode in ("freeze", "probe"):
    for n, prm in model.named_parameters():
        prm.requires_grad = n.startswith("fc.")
    opt = torch.optim.SGD(model.fc.parameters(), lr=0.001, momentum=0.9)


def step():
    if a.mode == "inference":
        model.eval()
        with torch.no_grad():
            model(x)
        return
    if a.mode == "probe":
        model.eval()  # frozen BatchNorm statistics, as ferry's probe strategy
    else:
        model.train()  # the study's freeze keeps model.train(): BatchNorm on batch statistics
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


step()
sync()
steps = 0
t0 = time.perf_counter()
while steps < a.steps or time.perf_counter() - t0 < a.min_seconds:
    step()
    steps += 1
sync()
ms = (time.perf_counter() - t0) * 1000
print(json.dumps({
    "engine": "pytorch",
    "backend": f"torch-{a.device}-{torch.get_num_threads()}t",
    "torch": torch.__version__,
    "model": a.model,
    "size": a.size,
    "batch": a.batch,
    "mode": a.mode,
    "steps": steps,
    "ms_per_step": round(ms / steps, 1),
    "images_per_sec": round(a.batch * steps * 1000 / ms, 3),
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
}))
