"""train_reference_bench: the reference side of bench/bench_train.sh (not a test).

Two subcommands (run with the refenv, /root/.cache/kvzap/refenv/bin/python;
needs numpy, torch (CPU), scikit-learn, optionally threadpoolctl):

  gen PATH N D HKV [SEED]
      Writes the synthetic training data both sides read: raw little-endian
      float32, x [N, D] then y [N, HKV]. x ~ N(0, 1); with z = x A (A ~ N(0, 1/D),
      so z ~ N(0, 1) per column) and u = x B (B ~ N(0, 4/D)):
      y = -7 + z + 0.5 tanh(u) + 0.1 noise, i.e. shaped like one layer of
      oracle data (log-scores near -7, mostly linear in the hidden state).

  bench PATH N D HKV THREADS EPOCHS REPEAT
      Times, best of REPEAT, (1) the kvzap MLP recipe in torch float32 on CPU:
      nn.Sequential(Linear(D, D/8), GELU(), Linear(D/8, HKV)), AdamW(lr 5e-3,
      weight_decay 0.01), CosineAnnealingLR(T_max=EPOCHS) stepped per epoch,
      clip_grad_norm_(1.0), MSE, shuffled batches of 512 by torch.randperm and
      direct tensor indexing (no DataLoader), ceil(5%) validation rows
      evaluated after every epoch; (2) sklearn Ridge(alpha=1.0).fit on all N
      rows in float32 and float64, BLAS limited to THREADS by threadpoolctl.
      Before timing, one untimed warm-up of each (1 epoch / one fit on the
      first 2048 rows). Prints one JSON line.
"""
import json
import math
import sys
import time

import numpy as np


def gen(path, n, d, hkv, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, hkv)) / math.sqrt(d)
    b = rng.standard_normal((d, hkv)) * (2.0 / math.sqrt(d))
    x = rng.standard_normal((n, d), dtype=np.float32)
    x64 = x.astype(np.float64)
    y = -7.0 + x64 @ a + 0.5 * np.tanh(x64 @ b) + 0.1 * rng.standard_normal((n, hkv))
    with open(path, "wb") as f:
        f.write(np.ascontiguousarray(x, dtype="<f4").tobytes())
        f.write(np.ascontiguousarray(y, dtype="<f4").tobytes())


def load(path, n, d, hkv):
    raw = np.fromfile(path, dtype="<f4")
    if raw.size != n * (d + hkv):
        sys.exit(f"{path}: {raw.size} floats, expected {n * (d + hkv)}")
    return raw[: n * d].reshape(n, d), raw[n * d :].reshape(n, hkv)


def mlp_once(torch, x, y, epochs, seed):
    n, d = x.shape
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    n_val = math.ceil(0.05 * n)
    perm = torch.randperm(n, generator=g)
    xv, yv = x[perm[:n_val]], y[perm[:n_val]]
    xt, yt = x[perm[n_val:]].contiguous(), y[perm[n_val:]].contiguous()
    nn = torch.nn
    model = nn.Sequential(nn.Linear(d, d // 8), nn.GELU(), nn.Linear(d // 8, y.shape[1]))
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = nn.MSELoss()
    nt, val = xt.shape[0], float("nan")
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(nt, generator=g)
        total = 0.0
        for i in range(0, nt, 512):
            idx = order[i : i + 512]
            xb, yb = xt[idx], yt[idx]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total += loss.item() * xb.shape[0]
        sched.step()
        model.eval()
        with torch.no_grad():
            val = loss_fn(model(xv), yv).item()
    sec = time.perf_counter() - t0
    return {"seconds": sec, "samples_per_s": nt * epochs / sec, "val_mse": val,
            "train_mse_last_epoch": total / nt, "n_train": nt}


def ridge_once(x, y, dtype):
    from sklearn.linear_model import Ridge
    xd, yd = x.astype(dtype), y.astype(dtype)
    t0 = time.perf_counter()
    r = Ridge(alpha=1.0).fit(xd, yd)
    sec = time.perf_counter() - t0
    mse = float(np.mean((r.predict(xd).astype(np.float64) - y.astype(np.float64)) ** 2))
    return {"seconds": sec, "train_mse": mse}


def best(runs):
    return min(runs, key=lambda r: r["seconds"])


def bench(path, n, d, hkv, threads, epochs, repeat):
    import torch
    torch.set_num_threads(threads)
    x, y = load(path, n, d, hkv)
    xt, yt = torch.from_numpy(x.copy()), torch.from_numpy(y.copy())
    w = min(n, 2048)  # untimed warm-up: torch's and BLAS's first-call costs
    mlp_once(torch, xt[:w], yt[:w], 1, seed=0)
    mlp = best([mlp_once(torch, xt, yt, epochs, seed=r) for r in range(repeat)])
    try:
        from threadpoolctl import threadpool_limits
        limiter, limited = threadpool_limits(limits=threads), True
    except ImportError:
        limiter, limited = None, False
    ridge_once(x[:w], y[:w], np.float32)
    ridge_once(x[:w], y[:w], np.float64)
    ridge32 = best([ridge_once(x, y, np.float32) for _ in range(repeat)])
    ridge64 = best([ridge_once(x, y, np.float64) for _ in range(repeat)])
    if limiter is not None:
        limiter.restore_original_limits()
    import sklearn
    print(json.dumps({"torch": torch.__version__, "sklearn": sklearn.__version__,
                      "threads": threads, "torch_threads": torch.get_num_threads(),
                      "blas_limited": limited, "mlp": mlp, "ridge_f32": ridge32,
                      "ridge_f64": ridge64}))


def main(argv):
    if len(argv) >= 5 and argv[0] == "gen":
        gen(argv[1], int(argv[2]), int(argv[3]), int(argv[4]),
            int(argv[5]) if len(argv) > 5 else 0)
    elif len(argv) == 8 and argv[0] == "bench":
        bench(argv[1], *(int(a) for a in argv[2:8]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
