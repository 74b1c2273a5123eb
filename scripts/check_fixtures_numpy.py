#!/usr/bin/env python3
"""Recompute every fixture's logits with a from-scratch float64 numpy ViT (no torch, no timm).

This is a readable statement of the forward semantics the fixtures encode (see
tests/fixtures/README.md), and a check that the files say what the README says:

    python3 -m pip install numpy safetensors      # or use the fixtures venv
    python3 scripts/check_fixtures_numpy.py

For the official-consolidator files it runs two forwards: one unmerged, with the
kernel-1 Conv1d keys and grouped branches (channel reorder if the metadata says so),
and one with the `merged.*` dense weights in place of the wrapped layers.
"""
import glob
import math
import os
import sys

import numpy as np
from safetensors import safe_open

FIX = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures")
_erf = np.vectorize(math.erf)


def layer_norm(x, w, b, eps=1e-6):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * w + b


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def dense(d, name):
    """A plain timm Linear: y = x W^T + b, W [out, in]."""
    return lambda x: x @ d[name + ".weight"].T + d[name + ".bias"]


def consolidator(d, name, groups, reorder):
    """Unmerged official layout: fc_origin [O,I,1] + branches group_fc [O,I/g,1] (+ reorder)."""
    w0 = d[name + ".fc_origin.weight"][:, :, 0]
    b0 = d[name + ".fc_origin.bias"]

    def f(x):
        y = x @ w0.T + b0
        lead, n_in = x.shape[:-1], x.shape[-1]
        for k, g in enumerate(groups):
            wk = d[f"{name}.fc_rep_branches.{k}.group_fc.weight"][:, :, 0]  # [O, I/g]
            bk = d[f"{name}.fc_rep_branches.{k}.group_fc.bias"]
            n_out, c_in = wk.shape
            c_out = n_out // g
            xt = x
            if reorder:  # x~[b*g + a] = x[a*c_in + b]
                xt = x.reshape(*lead, g, c_in).swapaxes(-1, -2).reshape(*lead, n_in)
            parts = [xt[..., i * c_in:(i + 1) * c_in] @ wk[i * c_out:(i + 1) * c_out].T for i in range(g)]
            y = y + np.concatenate(parts, -1) + bk
        return y

    return f


def vit_forward(d, meta, linear):
    x = d["input"]
    bsz, chans, h, w = x.shape
    p = int(meta["patch_size"])
    dim = int(meta["embed_dim"])
    heads = int(meta["num_heads"])
    gh, gw = h // p, w // p
    # Conv2d(k = stride = p) == linear map of each patch flattened as (c, ky, kx); tokens row-major over the grid
    patches = x.reshape(bsz, chans, gh, p, gw, p).transpose(0, 2, 4, 1, 3, 5).reshape(bsz, gh * gw, chans * p * p)
    t = patches @ d["patch_embed.proj.weight"].reshape(dim, -1).T + d["patch_embed.proj.bias"]
    t = np.concatenate([np.broadcast_to(d["cls_token"], (bsz, 1, dim)), t], 1) + d["pos_embed"]
    hd = dim // heads
    for i in range(int(meta["depth"])):
        pre = f"blocks.{i}."
        u = layer_norm(t, d[pre + "norm1.weight"], d[pre + "norm1.bias"])
        n = t.shape[1]
        q, k, v = linear(pre + "attn.qkv")(u).reshape(bsz, n, 3, heads, hd).transpose(2, 0, 3, 1, 4)
        a = q @ k.transpose(0, 1, 3, 2) * hd ** -0.5
        a = np.exp(a - a.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        t = t + linear(pre + "attn.proj")((a @ v).transpose(0, 2, 1, 3).reshape(bsz, n, dim))
        u = layer_norm(t, d[pre + "norm2.weight"], d[pre + "norm2.bias"])
        t = t + linear(pre + "mlp.fc2")(gelu(linear(pre + "mlp.fc1")(u)))
    if meta["global_pool"] == "avg":  # no final norm; mean over patch tokens (class token excluded), then fc_norm
        f = layer_norm(t[:, 1:].mean(1), d["fc_norm.weight"], d["fc_norm.bias"])
    else:  # final norm, then class token
        f = layer_norm(t, d["norm.weight"], d["norm.bias"])[:, 0]
    return f @ d["head.weight"].T + d["head.bias"]


def main():
    worst = 0.0
    for path in sorted(glob.glob(os.path.join(FIX, "*.safetensors"))):
        with safe_open(path, "np") as fh:
            meta = fh.metadata()
            d = {k: fh.get_tensor(k).astype(np.float64) for k in fh.keys()}
        name = os.path.basename(path)
        runs = []
        if "fc_groups" in meta:
            groups = [int(g) for g in meta["fc_groups"].split(",")]
            reorder = meta["with_channel_shuffle"] == "true"
            runs.append(("unmerged", lambda n: consolidator(d, n, groups, reorder)))
            md = {k[len("merged."):]: v for k, v in d.items() if k.startswith("merged.")}
            runs.append(("merged", lambda n: dense(md, n)))
        else:
            runs.append(("plain", lambda n: dense(d, n)))
        for label, lin in runs:
            diff = np.abs(vit_forward(d, meta, lin) - d["logits"]).max()
            worst = max(worst, diff)
            print(f"{name:45s} {label:9s} max|logits - numpy| = {diff:.2e}")
    ok = worst < 1e-5
    print("OK" if ok else "MISMATCH", f"(worst {worst:.2e})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
