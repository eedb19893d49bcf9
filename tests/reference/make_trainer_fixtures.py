"""Writes tests/fixtures/trainer/{ridge,mlp,metrics}.{json,bin}: reference
results for the trainer's numerical core (trainer/ridge.c, trainer/mlp*.c,
trainer/metrics.c), read by tests/test_ridge.c, test_mlp.c, test_metrics.c.

ridge: a correlated random dataset (n=300, D=24, Hkv=3, non-zero means) as
  float32 rows; its float64 sufficient statistics; the ridge solution for
  alpha=1.0 from the numpy float64 closed form (centered normal equations)
  and from sklearn Ridge(alpha=1.0) on the float64 values; plus alpha=1e-3.
mlp: fixed data (n=1100, D=16, Dh=8, Hkv=2), fixed initial weights, a fixed
  validation split (55 rows) and fixed per-epoch permutations of the 1045
  training rows; 3 epochs of the KVzap recipe in torch float32 (AdamW
  lr 5e-3 with torch defaults, CosineAnnealingLR(T_max=3) stepped per epoch,
  clip_grad_norm_(1.0), batch 512 -> batches of 512, 512, 21): per-step
  losses and pre-clip gradient norms, per-epoch lr / train / validation
  loss, and the final weights. The same run in float64 is compared with the
  float32 one to show the trajectory is well conditioned (printed).
metrics: predictions vs oracle (n=1001, Hkv=3; column 2 with ties): per
  column and flat MSE, R^2 (sklearn r2_score), Pearson r (numpy), and the
  top-k keep overlap at 2x/3x/4x (numpy stable argsort).

Binary files: little-endian arrays at the byte offsets the JSON "arrays"
table gives (dtype f32 / f64 / i32, row-major shape).

Run: /root/.cache/kvzap/refenv/bin/python tests/reference/make_trainer_fixtures.py
Needs (PyPI): numpy, torch, scikit-learn (see tests/reference/requirements.txt).
"""
import json
import os

import numpy as np
import torch
from sklearn.linear_model import Ridge

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "trainer")


class Blob:
    """Arrays packed into one .bin with an offset table."""

    def __init__(self):
        self.parts, self.table, self.offset = [], {}, 0

    def add(self, name, arr, dtype):
        a = np.ascontiguousarray(np.asarray(arr), dtype={"f32": "<f4", "f64": "<f8", "i32": "<i4"}[dtype])
        self.table[name] = {"offset": self.offset, "dtype": dtype, "shape": list(a.shape)}
        self.parts.append(a.tobytes())
        self.offset += a.nbytes

    def write(self, stem, meta):
        meta = dict(meta, arrays=self.table)
        with open(os.path.join(OUT, stem + ".bin"), "wb") as f:
            f.write(b"".join(self.parts))
        with open(os.path.join(OUT, stem + ".json"), "w") as f:
            json.dump(meta, f, indent=1)
            f.write("\n")


def ridge_closed_form(X, Y, alpha):
    mx, my = X.mean(0), Y.mean(0)
    Xc, Yc = X - mx, Y - my
    W = np.linalg.solve(Xc.T @ Xc + alpha * np.eye(X.shape[1]), Xc.T @ Yc).T
    return W, my - W @ mx


def make_ridge():
    rng = np.random.default_rng(20261127)
    n, D, H = 300, 24, 3
    mix = rng.normal(size=(D, D)) / np.sqrt(D)
    mix[:, 1] = mix[:, 0] + 0.05 * rng.normal(size=D)  # two nearly collinear features
    X = (rng.normal(size=(n, D)) @ mix + rng.normal(3.0, 2.0, size=D)).astype(np.float32)
    Wt = rng.normal(size=(H, D))
    Y = (X.astype(np.float64) @ Wt.T - 6.0 + 0.3 * rng.normal(size=(n, H))).astype(np.float32)
    Xd, Yd = X.astype(np.float64), Y.astype(np.float64)
    blob = Blob()
    blob.add("x", X, "f32")
    blob.add("y", Y, "f32")
    blob.add("xtx", Xd.T @ Xd, "f64")
    blob.add("xty", Xd.T @ Yd, "f64")
    blob.add("x_sum", Xd.sum(0), "f64")
    blob.add("y_sum", Yd.sum(0), "f64")
    blob.add("y_sq_sum", (Yd * Yd).sum(0), "f64")
    worst = 0.0
    for alpha, tag in [(1.0, "a1"), (1e-3, "a1e-3")]:
        W, b = ridge_closed_form(Xd, Yd, alpha)
        sk = Ridge(alpha=alpha, fit_intercept=True, solver="cholesky").fit(Xd, Yd)
        rel = max(np.abs(sk.coef_ - W).max() / np.abs(W).max(), np.abs(sk.intercept_ - b).max() / np.abs(b).max())
        worst = max(worst, rel)
        blob.add("w_" + tag, W, "f64")
        blob.add("b_" + tag, b, "f64")
        blob.add("w_sklearn_" + tag, sk.coef_, "f64")
        blob.add("b_sklearn_" + tag, sk.intercept_, "f64")
    print(f"ridge: sklearn vs numpy closed form max relative difference {worst:.2e}")
    import sklearn
    blob.write("ridge", {"n": n, "d_in": D, "d_out": H, "alphas": {"a1": 1.0, "a1e-3": 1e-3},
                         "numpy": np.__version__, "sklearn": sklearn.__version__})


def train_torch(X, Y, init, val_rows, perms, dtype, epochs=3, batch=512, lr=5e-3):
    D, Dh, H = X.shape[1], init["w1"].shape[0], Y.shape[1]
    model = torch.nn.Sequential(torch.nn.Linear(D, Dh), torch.nn.GELU(), torch.nn.Linear(Dh, H)).to(dtype)
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(init["w1"]))
        model[0].bias.copy_(torch.tensor(init["b1"]))
        model[2].weight.copy_(torch.tensor(init["w2"]))
        model[2].bias.copy_(torch.tensor(init["b2"]))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, foreach=False)  # betas, eps, wd 0.01: defaults
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=0)
    is_val = np.zeros(len(X), bool)
    is_val[val_rows] = True
    train_rows = np.nonzero(~is_val)[0]
    Xt, Yt = torch.tensor(X, dtype=dtype), torch.tensor(Y, dtype=dtype)
    log = {"step_loss": [], "grad_norm": [], "lr": [], "train_loss": [], "val_loss": []}
    for e in range(epochs):
        log["lr"].append(opt.param_groups[0]["lr"])
        order, total = train_rows[perms[e]], 0.0
        for i in range(0, len(order), batch):
            idx = torch.tensor(order[i:i + batch])
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(Xt[idx]), Yt[idx])
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            log["step_loss"].append(loss.item())
            log["grad_norm"].append(norm.item())
            total += loss.item() * len(idx)
        log["train_loss"].append(total / len(order))
        with torch.no_grad():
            log["val_loss"].append(torch.nn.functional.mse_loss(model(Xt[val_rows]), Yt[val_rows]).item())
        sched.step()
    final = {"w1": model[0].weight, "b1": model[0].bias, "w2": model[2].weight, "b2": model[2].bias}
    return {k: v.detach().double().numpy() for k, v in final.items()}, log


def make_mlp():
    rng = np.random.default_rng(7)
    n, D, Dh, H, epochs = 1100, 16, 8, 2, 3
    X = rng.normal(0.2, 1.0, size=(n, D)).astype(np.float32)
    A = rng.normal(size=(6, D)) / np.sqrt(D)
    Bm = rng.normal(size=(H, 6))
    Y = (np.tanh(X.astype(np.float64) @ A.T) @ Bm.T - 5.0 + 0.1 * rng.normal(size=(n, H))).astype(np.float32)
    b1, b2 = 1 / np.sqrt(D), 1 / np.sqrt(Dh)
    init = {"w1": rng.uniform(-b1, b1, (Dh, D)), "b1": rng.uniform(-b1, b1, Dh),
            "w2": rng.uniform(-b2, b2, (H, Dh)), "b2": rng.uniform(-b2, b2, H)}
    init = {k: v.astype(np.float32) for k, v in init.items()}
    n_val = 55
    val_rows = np.sort(rng.permutation(n)[:n_val])
    n_train = n - n_val
    perms = np.stack([rng.permutation(n_train) for _ in range(epochs)])
    final32, log32 = train_torch(X, Y, init, val_rows, perms, torch.float32)
    final64, log64 = train_torch(X, Y, init, val_rows, perms, torch.float64)
    wdiff = max(np.abs(final32[k] - final64[k]).max() / np.abs(final64[k]).max() for k in final32)
    ldiff = max(abs(a - b) for a, b in zip(log32["step_loss"], log64["step_loss"]))
    print(f"mlp: float32 vs float64 torch: final weights max rel diff {wdiff:.2e}, step loss max abs diff {ldiff:.2e}")
    print("mlp: step losses", ["%.4f" % v for v in log32["step_loss"]])
    print("mlp: grad norms", ["%.3f" % v for v in log32["grad_norm"]])
    blob = Blob()
    blob.add("x", X, "f32")
    blob.add("y", Y, "f32")
    flat = lambda p: np.concatenate([p["w1"].ravel(), p["b1"], p["w2"].ravel(), p["b2"]])
    blob.add("init", flat(init), "f32")
    blob.add("val_rows", val_rows, "i32")
    blob.add("perms", perms, "i32")
    blob.add("final", flat(final32), "f32")
    for k in ["step_loss", "grad_norm", "lr", "train_loss", "val_loss"]:
        blob.add(k, np.array(log32[k]), "f64")
    blob.write("mlp", {"n": n, "d_in": D, "d_hidden": Dh, "d_out": H, "epochs": epochs, "batch_size": 512,
                       "lr": 5e-3, "weight_decay": 0.01, "max_grad_norm": 1.0, "torch": torch.__version__,
                       "param_layout": "w1 [Dh,D], b1 [Dh], w2 [Hkv,Dh], b2 [Hkv], concatenated",
                       "fp32_vs_fp64_weight_rel_diff": wdiff, "fp32_vs_fp64_step_loss_abs_diff": ldiff})


def keep_overlap(p, o, ratio):
    n = len(o)
    keep = n - int(np.floor((1 - 1 / ratio) * n))
    top_p = set(np.argsort(-p, kind="stable")[:keep])  # ties: lower row first
    top_o = set(np.argsort(-o, kind="stable")[:keep])
    return len(top_p & top_o) / keep


def make_metrics():
    """Per column and flat MSE, R^2 (sklearn r2_score), Pearson r, keep overlap at 2x/3x/4x.
    Column 2 is rounded to a 0.5 grid so ties exercise the lower-row-first rule."""
    from sklearn.metrics import r2_score
    rng = np.random.default_rng(11)
    n, H = 1001, 3
    o = rng.normal(-6.0, 2.0, size=(n, H))
    p = 0.8 * o + rng.normal(-1.0, 1.0, size=(n, H))
    o[:, 2], p[:, 2] = np.round(o[:, 2] * 2) / 2, np.round(p[:, 2] * 2) / 2
    o, p = o.astype(np.float32), p.astype(np.float32)
    od, pd = o.astype(np.float64), p.astype(np.float64)

    def values(pc, oc):
        return [np.mean((pc - oc) ** 2), r2_score(oc, pc), np.corrcoef(pc, oc)[0, 1]] + \
            [keep_overlap(pc, oc, c) for c in (2.0, 3.0, 4.0)]

    cols = np.array([values(pd[:, h], od[:, h]) for h in range(H)])
    flat = values(pd.ravel(), od.ravel())
    flat[3:] = list(cols[:, 3:].mean(0))  # overall overlap = mean over columns
    blob = Blob()
    blob.add("pred", p, "f32")
    blob.add("oracle", o, "f32")
    blob.add("columns", cols, "f64")
    blob.add("overall", np.array(flat), "f64")
    blob.write("metrics", {"n": n, "d_out": H, "fields": ["mse", "r2", "pearson", "keep2", "keep3", "keep4"]})


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    make_ridge()
    make_mlp()
    make_metrics()
