#!/usr/bin/env python3
"""The study's training script in PyTorch, for bench/e2e: the same cell ferry's `ferry train` runs.

ImageFolder train/ and val/, train transform Resize(size*256/224) + RandomResizedCrop(size) +
RandomHorizontalFlip + ToTensor + Normalize (ImageNet mean/std), val Resize + CenterCrop; a new fc
head; SGD (lr, momentum 0.9), StepLR(7, 0.1); finetune trains every parameter, freeze only fc with
BatchNorm in training mode. Prints one JSON line: wall time (decoding included) and best val accuracy.

usage: /usr/bin/python3 bench/e2e/torch_train.py --data DIR --weights resnet18.pth --strategy finetune|freeze
                        [--size 112] [--epochs 15] [--batch 32] [--workers 2] [--threads N]
"""
import argparse
import json
import resource
import time

t0 = time.perf_counter()
import torch  # noqa: E402
import torchvision  # noqa: E402
from torchvision import datasets, transforms  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--data", required=True)
p.add_argument("--weights", required=True)
p.add_argument("--strategy", choices=["finetune", "freeze"], default="finetune")
p.add_argument("--size", type=int, default=112)
p.add_argument("--epochs", type=int, default=15)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--lr", type=float, default=0.001)
p.add_argument("--workers", type=int, default=2)
p.add_argument("--threads", type=int, default=0)
p.add_argument("--seed", type=int, default=0)
a = p.parse_args()
if a.threads > 0:
    torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)

norm = transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
resize = round(a.size * 256 / 224)
train_tf = transforms.Compose(
    [transforms.Resize(resize), transforms.RandomResizedCrop(a.size), transforms.RandomHorizontalFlip(), transforms.ToTensor(), norm]
)
val_tf = transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(a.size), transforms.ToTensor(), norm])
train_set = datasets.ImageFolder(f"{a.data}/train", train_tf)
val_set = datasets.ImageFolder(f"{a.data}/val", val_tf)
train = torch.utils.data.DataLoader(train_set, batch_size=a.batch, shuffle=True, num_workers=a.workers)
val = torch.utils.data.DataLoader(val_set, batch_size=a.batch, shuffle=False, num_workers=a.workers)

model = torchvision.models.resnet18()
model.load_state_dict(torch.load(a.weights))
model.fc = torch.nn.Linear(model.fc.in_features, len(train_set.classes))
if a.strategy == "freeze":
    for prm in model.parameters():
        prm.requires_grad = False
    for prm in model.fc.parameters():
        prm.requires_grad = True
params = model.parameters() if a.strategy == "finetune" else model.fc.parameters()
opt = torch.optim.SGD(params, lr=a.lr, momentum=0.9)
sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.1)

best = 0.0
for epoch in range(a.epochs):
    model.train()  # the study's freeze keeps BatchNorm in training mode too
    for x, y in train:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    sched.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in val:
            correct += (model(x).argmax(1) == y).sum().item()
    best = max(best, correct / len(val_set))

print(json.dumps({
    "engine": "pytorch",
    "torch": torch.__version__,
    "strategy": a.strategy,
    "size": a.size,
    "epochs": a.epochs,
    "train_images": len(train_set),
    "val_images": len(val_set),
    "threads": torch.get_num_threads(),
    "workers": a.workers,
    "wall_s": round(time.perf_counter() - t0, 2),
    "best_val_accuracy": round(best, 4),
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
}))
