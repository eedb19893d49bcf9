"""train_reference_gpu: the PyTorch side of bench/bench_gpu_train.sh (not a test).

Needs torch only (the GPU machine's python; here the refenv,
/root/.cache/kvzap/refenv/bin/python, for the --tiny CPU smoke run).

Times, after one untimed warm-up epoch on 4096 rows:
  (1) the kvzap MLP recipe (trainer/mlp.h) with the data already in GPU memory:
      nn.Sequential(Linear(D, hidden), GELU(), Linear(hidden, HKV)), AdamW(lr
      5e-3, weight_decay 0.01), CosineAnnealingLR(T_max=epochs) stepped per
      epoch, clip_grad_norm_(1.0), MSE, shuffled batches by torch.randperm and
      direct indexing, ceil(5%) validation rows evaluated after each epoch;
      fp32 with torch's default matmul precision (TF32 off);
      samples/s = n_train * epochs / seconds;
  (2) a ridge fit (alpha 1, intercept) of RIDGE_N x D random rows generated on
      the device in fp32: X^T X, X^T y and column sums by matmul, centering,
      torch.linalg.solve; the generation is not timed.
x ~ N(0, 1); y = -7 + x a + 0.5 tanh(x b) + 0.1 noise (the shape of one layer
of oracle data; bench_gpu_train.c writes the same distribution).
Prints one JSON line.

  python train_reference_gpu.py [--tiny] [--n N] [--d D] [--hkv H] [--hidden DH]
                                [--batch B] [--epochs E] [--ridge-n N] [--device DEV]
"""
import argparse
import json
import math
import time

import torch


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def make_data(n, d, hkv, dev, gen):
    a = torch.randn(d, hkv, device=dev, generator=gen) / math.sqrt(d)
    b = torch.randn(d, hkv, device=dev, generator=gen) * (2.0 / math.sqrt(d))
    x = torch.randn(n, d, device=dev, generator=gen)
    y = -7.0 + x @ a + 0.5 * torch.tanh(x @ b) + 0.1 * torch.randn(n, hkv, device=dev, generator=gen)
    return x, y


def train_mlp(x, y, hidden, batch, epochs, dev, seed=0):
    torch.manual_seed(seed)
    n, d = x.shape
    n_val = math.ceil(0.05 * n)
    perm = torch.randperm(n, device=dev)
    val, tr = perm[:n_val], perm[n_val:]
    xt, yt, xv, yv = x[tr], y[tr], x[val], y[val]
    model = torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.GELU(),
                                torch.nn.Linear(hidden, y.shape[1])).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = torch.nn.MSELoss()
    val_mse = float("nan")
    for _ in range(epochs):
        order = torch.randperm(xt.shape[0], device=dev)
        for i in range(0, xt.shape[0], batch):
            idx = order[i:i + batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        sched.step()
        with torch.no_grad():
            val_mse = sum(float(loss_fn(model(xv[i:i + batch]), yv[i:i + batch])) * min(batch, n_val - i)
                          for i in range(0, n_val, batch)) / n_val
    return xt.shape[0], val_mse


def bench_mlp(args, dev, gen):
    x, y = make_data(args.n, args.d, args.hkv, dev, gen)
    train_mlp(x[:4096], y[:4096], args.hidden, args.batch, 1, dev)  # warm-up
    sync(dev)
    t0 = time.perf_counter()
    n_train, val = train_mlp(x, y, args.hidden, args.batch, args.epochs, dev)
    sync(dev)
    secs = time.perf_counter() - t0
    return {"seconds": secs, "samples_per_s": n_train * args.epochs / secs, "val_mse": val}


def ridge_fit(x, y, alpha):
    n = x.shape[0]
    xtx, xty = x.T @ x, x.T @ y
    xm, ym = x.sum(0) / n, y.sum(0) / n
    c = xtx - n * torch.outer(xm, xm) + alpha * torch.eye(x.shape[1], device=x.device)
    w = torch.linalg.solve(c, xty - n * torch.outer(xm, ym))
    return w, ym - xm @ w


def bench_ridge(args, dev, gen):
    x, y = make_data(args.ridge_n, args.d, args.hkv, dev, gen)
    ridge_fit(x[:256], y[:256], 1.0)  # warm-up (cuSOLVER/cuBLAS handles)
    sync(dev)
    t0 = time.perf_counter()
    w, b = ridge_fit(x, y, 1.0)
    sync(dev)
    secs = time.perf_counter() - t0
    mse = float(((x[:4096] @ w + b - y[:4096]) ** 2).mean())
    del x, y
    return {"seconds": secs, "rows": args.ridge_n, "train_mse_first_4096": mse}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run with small shapes")
    ap.add_argument("--n", type=int, default=131072)
    ap.add_argument("--d", type=int, default=4096)
    ap.add_argument("--hkv", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--ridge-n", type=int, default=1200000)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    if args.tiny:
        args.n, args.d, args.hidden, args.ridge_n = min(args.n, 4096), min(args.d, 64), min(args.hidden, 32), min(args.ridge_n, 8192)
    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.backends.cuda.matmul.allow_tf32 = False  # the default, stated
    gen = torch.Generator(device=dev)
    gen.manual_seed(1)
    out = {"torch": torch.__version__, "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
           "d": args.d, "hkv": args.hkv, "hidden": args.hidden, "batch": args.batch, "epochs": args.epochs}
    out["mlp"] = bench_mlp(args, dev, gen)
    out["ridge"] = bench_ridge(args, dev, gen)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
