#!/usr/bin/env python3
"""Generate the reference fixtures in tests/fixtures/ with PyTorch + timm.

The Rust tests read only the committed .safetensors files; Python is not needed
at test time. See tests/fixtures/README.md for what each file holds.

Install (see scripts/requirements-fixtures.txt for why the CUDA wheels come along):

    python3 -m venv venv-fixtures
    venv-fixtures/bin/pip install -r scripts/requirements-fixtures.txt
    venv-fixtures/bin/python scripts/gen_fixtures.py          # writes tests/fixtures/*.safetensors

Everything is seeded and runs on the CPU. Parameters are drawn in float32; the
reference outputs (logits, loss, gradients) are computed in float64 from those
exact float32 values and stored rounded to float32, so a float32 engine is
compared with the true result of the function rather than with another float32
rounding pattern. (The float32 forward of timm is also run, and its distance
to the float64 reference is recorded in the metadata as `f32_logits_max_abs_diff`.)
"""
import argparse
import json
import math
import os
import struct
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import timm
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from safetensors import safe_open

FORMAT_VERSION = "1"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(REPO, "tests", "fixtures")
OFFICIAL_COMMIT = "545d0066dd9601283744981596cca45f51290e07"

# ---------------------------------------------------------------------------
# configs

TINY_MULTI = dict(
    name="tiny_multi", img_size=(16, 16), patch_size=4, in_chans=3, embed_dim=32, depth=3,
    num_heads=4, mlp_ratio=4.0, num_classes=5, global_pool="token", batch=3, seed=1001,
)
RECT_AVG = dict(
    name="rect_avg", img_size=(12, 20), patch_size=4, in_chans=1, embed_dim=24, depth=2,
    num_heads=2, mlp_ratio=2.0, num_classes=3, global_pool="avg", batch=2, seed=1002,
)
OFFICIAL = dict(
    img_size=(16, 16), patch_size=4, in_chans=3, embed_dim=32, depth=2, num_heads=4,
    mlp_ratio=4.0, num_classes=5, global_pool="token", batch=2,
)
FC_GROUPS = (4, 8)
WRAPPED = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


def build_timm(cfg, img_size=None):
    return VisionTransformer(
        img_size=img_size or cfg["img_size"],
        patch_size=cfg["patch_size"],
        in_chans=cfg["in_chans"],
        num_classes=cfg["num_classes"],
        global_pool=cfg["global_pool"],
        embed_dim=cfg["embed_dim"],
        depth=cfg["depth"],
        num_heads=cfg["num_heads"],
        mlp_ratio=cfg["mlp_ratio"],
        qkv_bias=True,
        class_token=True,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.0,
    )


def randomize_(model, gen):
    """Re-initialise every parameter so that no tensor is zero and every gradient is non-zero.

    LayerNorm: weight ~ 1 + 0.1 N(0,1), bias ~ 0.05 N(0,1).
    cls_token / pos_embed: 0.2 N(0,1).
    other weights: std = clamp(1/sqrt(fan_in), 0.02, 0.2) * N(0,1); biases 0.05 N(0,1).
    The head gets std 0.2 so that the logits are spread.
    """
    norm_params = set()
    for mname, m in model.named_modules():
        if isinstance(m, nn.LayerNorm):
            for pname, _ in m.named_parameters(recurse=False):
                norm_params.add(f"{mname}.{pname}" if mname else pname)
    with torch.no_grad():
        for name, p in model.named_parameters():
            n = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name in norm_params:
                v = 1.0 + 0.1 * n if name.endswith("weight") else 0.05 * n
            elif name in ("cls_token", "pos_embed"):
                v = 0.2 * n
            elif name.startswith("head."):
                v = 0.2 * n
            elif p.dim() >= 2:
                fan_in = p.numel() // p.shape[0]
                v = min(0.2, max(0.02, 1.0 / math.sqrt(fan_in))) * n
            else:
                v = 0.05 * n
            p.copy_(v)


def f32(t):
    return t.detach().to(torch.float32).contiguous().clone()


def base_meta(cfg, seed):
    h, w = cfg["img_size"]
    return {
        "format_version": FORMAT_VERSION,
        "img_size_h": str(h),
        "img_size_w": str(w),
        "patch_size": str(cfg["patch_size"]),
        "patch_h": str(cfg["patch_size"]),
        "patch_w": str(cfg["patch_size"]),
        "grid_h": str(h // cfg["patch_size"]),
        "grid_w": str(w // cfg["patch_size"]),
        "in_chans": str(cfg["in_chans"]),
        "embed_dim": str(cfg["embed_dim"]),
        "depth": str(cfg["depth"]),
        "num_heads": str(cfg["num_heads"]),
        "mlp_ratio": repr(float(cfg["mlp_ratio"])),
        "mlp_hidden": str(int(cfg["embed_dim"] * cfg["mlp_ratio"])),
        "num_classes": str(cfg["num_classes"]),
        "global_pool": cfg["global_pool"],
        "fc_norm": "true" if cfg["global_pool"] == "avg" else "false",
        "class_token": "true",
        "num_prefix_tokens": "1",
        "no_embed_class": "false",
        "qkv_bias": "true",
        "layer_norm_eps": "1e-06",
        "act": "gelu_erf",
        "batch": str(cfg["batch"]),
        "timm_version": timm.__version__,
        "torch_version": torch.__version__,
        "seed": str(seed),
        "compute_dtype": "float64 (params drawn in float32, outputs stored as float32)",
    }


def forward_loss_grads(model, x, labels):
    """float64 eval forward + backward. Returns logits, loss, {name: grad} (float64)."""
    m64 = model.double().eval()
    for p in m64.parameters():
        p.grad = None
    logits = m64(x.double())
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in m64.named_parameters()}
    model.float()
    return logits.detach(), loss.detach(), grads


def check_grads_nonzero(grads, what):
    for n, g in grads.items():
        if not torch.isfinite(g).all() or g.abs().max().item() == 0.0:
            raise SystemExit(f"{what}: gradient of {n} is zero or not finite")


def save_sorted(tensors, path, meta):
    """Write a safetensors file whose header lists metadata and tensors in sorted key order.

    safetensors.torch.save_file writes the same tensor bytes every run, but its
    __metadata__ order varies between runs; this writer makes regeneration
    byte-identical. The file is read back with safetensors.safe_open and compared.
    """
    names = sorted(tensors)
    header = {"__metadata__": {k: meta[k] for k in sorted(meta)}}
    blobs, off = [], 0
    for n in names:
        t = tensors[n]
        assert t.dtype == torch.float32 and t.is_contiguous()
        b = t.numpy().astype("<f4", copy=False).tobytes()
        header[n] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(hjson)))
        fh.write(hjson)
        for b in blobs:
            fh.write(b)
    with safe_open(path, "pt") as fh:
        assert fh.metadata() == meta
        assert sorted(fh.keys()) == names
        for n in names:
            assert torch.equal(fh.get_tensor(n), tensors[n]), n


def write(path, tensors, meta):
    tensors = {k: f32(v) for k, v in tensors.items()}
    save_sorted(tensors, path, meta)
    size = os.path.getsize(path)
    assert size < 1_000_000, f"{path} is {size} bytes"
    print(f"wrote {os.path.relpath(path, REPO)}: {len(tensors)} tensors, {size} bytes")


# ---------------------------------------------------------------------------
# 1. plain timm ViT fixtures


def make_timm_fixture(cfg):
    seed = cfg["seed"]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_timm(cfg)
    randomize_(model, gen)
    model.eval()
    sd = {k: f32(v) for k, v in model.state_dict().items()}
    h, w = cfg["img_size"]
    x = torch.randn(cfg["batch"], cfg["in_chans"], h, w, generator=gen, dtype=torch.float32)
    labels = torch.randint(0, cfg["num_classes"], (cfg["batch"],), generator=gen)

    with torch.no_grad():
        logits32 = model(x)
    logits, loss, grads = forward_loss_grads(model, x, labels)
    check_grads_nonzero(grads, cfg["name"])
    f32_diff = (logits32.double() - logits).abs().max().item()

    tensors = dict(sd)
    tensors["input"] = x
    tensors["labels"] = labels.to(torch.float32)
    tensors["logits"] = logits
    tensors["loss"] = loss.reshape(())
    for n, g in grads.items():
        tensors[f"grad.{n}"] = g
    meta = base_meta(cfg, seed)
    meta["f32_logits_max_abs_diff"] = f"{f32_diff:.3e}"
    meta["loss_reduction"] = "mean cross_entropy over the batch, eval mode"
    meta["state_dict_keys"] = ",".join(sd.keys())
    write(os.path.join(OUT_DIR, f"vit_{cfg['name']}.safetensors"), tensors, meta)
    return model, sd


# ---------------------------------------------------------------------------
# 2. pos_embed resampling fixture


def make_posres_fixtures(sd_src):
    cfg = dict(TINY_MULTI)
    new_img = (24, 24)
    p = cfg["patch_size"]
    old_grid = [cfg["img_size"][0] // p, cfg["img_size"][1] // p]
    new_grid = [new_img[0] // p, new_img[1] // p]
    seed = 1003
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, cfg["in_chans"], *new_img, generator=gen, dtype=torch.float32)

    variants = [
        ("posres", "bilinear", True, "direct"),
        ("posres_bicubic", "bicubic", True, "loader"),
    ]
    for fname, interp, aa, route in variants:
        model = build_timm(cfg, img_size=new_img)
        call = (
            f"timm.layers.resample_abs_pos_embed(pos_embed, new_size={new_grid}, old_size={old_grid}, "
            f"num_prefix_tokens=1, interpolation='{interp}', antialias={aa})"
        )
        direct = resample_abs_pos_embed(
            sd_src["pos_embed"], new_size=new_grid, old_size=old_grid, num_prefix_tokens=1,
            interpolation=interp, antialias=aa,
        )
        if route == "loader":
            # what timm's own checkpoint loader does by default (bicubic, antialias=True)
            sd = checkpoint_filter_fn(dict(sd_src), model)
            assert torch.equal(sd["pos_embed"], direct), "loader and direct call differ"
            call = "timm.models.vision_transformer.checkpoint_filter_fn(state_dict, model) == " + call
        else:
            sd = dict(sd_src)
            sd["pos_embed"] = direct
        model.load_state_dict(sd)
        model.eval()
        with torch.no_grad():
            logits32 = model(x)
            logits = model.double()(x.double())
        model.float()
        # without antialias (for the note in the README)
        noaa = resample_abs_pos_embed(
            sd_src["pos_embed"], new_size=new_grid, old_size=old_grid, num_prefix_tokens=1,
            interpolation=interp, antialias=False,
        )
        aa_diff = (noaa - direct).abs().max().item()

        tensors = {k: v for k, v in sd.items()}
        tensors["src.pos_embed"] = sd_src["pos_embed"]
        tensors["input"] = x
        tensors["logits"] = logits
        meta = base_meta(dict(cfg, img_size=new_img, batch=2), seed)
        meta["weights_from"] = "vit_tiny_multi.safetensors (identical except pos_embed)"
        meta["src_img_size_h"] = str(cfg["img_size"][0])
        meta["src_img_size_w"] = str(cfg["img_size"][1])
        meta["src_grid"] = f"{old_grid[0]}x{old_grid[1]}"
        meta["new_grid"] = f"{new_grid[0]}x{new_grid[1]}"
        meta["resample_call"] = call
        meta["resample_interpolation"] = interp
        meta["resample_antialias"] = str(aa).lower()
        meta["resample_align_corners"] = "None (F.interpolate default, i.e. false)"
        meta["resample_dtype"] = "float32 (timm casts posemb to float before F.interpolate)"
        meta["antialias_vs_no_antialias_max_abs_diff"] = f"{aa_diff:.3e}"
        meta["f32_logits_max_abs_diff"] = f"{(logits32.double() - logits).abs().max().item():.3e}"
        write(os.path.join(OUT_DIR, f"vit_{fname}.safetensors"), tensors, meta)


# ---------------------------------------------------------------------------
# 3. official-consolidator interop fixtures
#
# Re-implemented from the paper and the official code (THU-MIG/Consolidator); only the
# module and parameter NAMES and SHAPES follow the official code
# (THU-MIG/Consolidator model/vision_transformer_timm.py), so that state_dict()
# keys equal what that code saves:
#   <layer>.fc_origin.weight                    [O, I, 1]      (a kernel-1 Conv1d)
#   <layer>.fc_origin.bias                      [O]
#   <layer>.fc_rep_branches.<k>.group_fc.weight [O, I/g_k, 1]  (a kernel-1 Conv1d with groups=g_k)
#   <layer>.fc_rep_branches.<k>.group_fc.bias   [O]
# The reorder ("channel_shuffle") and drop sub-modules hold no parameters.


class InputReorder(nn.Module):
    """x~[b*g + a] = x[a*c_in + b] on the last axis (ShuffleNet interleave)."""

    def __init__(self, groups):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        lead, n = x.shape[:-1], x.shape[-1]
        return x.reshape(*lead, self.groups, n // self.groups).transpose(-1, -2).reshape(*lead, n)


class ConsolidatorRef(nn.Module):
    """y = W0 x + b0 + sum_k (BD(G_k) P_k x + beta_k)   (eval mode: DropPath is the identity)."""

    def __init__(self, linear, fc_groups, reorder):
        super().__init__()
        out_f, in_f = linear.weight.shape
        self.in_features, self.out_features = in_f, out_f
        self.fc_origin = nn.Conv1d(in_f, out_f, 1, bias=True)
        with torch.no_grad():
            self.fc_origin.weight.copy_(linear.weight.unsqueeze(-1))
            self.fc_origin.bias.copy_(linear.bias)
        self.fc_rep_branches = nn.ModuleList()
        for g in fc_groups:
            assert in_f % g == 0 and out_f % g == 0
            self.fc_rep_branches.append(nn.Sequential(OrderedDict([
                ("channel_shuffle", InputReorder(g) if reorder else nn.Identity()),
                ("group_fc", nn.Conv1d(in_f, out_f, 1, groups=g, bias=True)),
                ("drop", nn.Identity()),
            ])))

    def forward(self, x):
        y = F.linear(x, self.fc_origin.weight[:, :, 0], self.fc_origin.bias)
        lead = x.shape[:-1]
        for br in self.fc_rep_branches:
            g = br.group_fc.groups
            c_in, c_out = self.in_features // g, self.out_features // g
            xt = br.channel_shuffle(x).reshape(*lead, g, c_in)
            G = br.group_fc.weight[:, :, 0].reshape(g, c_out, c_in)
            yb = torch.einsum("...gi,goi->...go", xt, G).reshape(*lead, self.out_features)
            y = y + yb + br.group_fc.bias
        return y


def get_sub(model, dotted):
    m = model
    for part in dotted.split("."):
        m = getattr(m, part)
    return m


def set_sub(model, dotted, new):
    parent, _, last = dotted.rpartition(".")
    setattr(get_sub(model, parent) if parent else model, last, new)


def dense_branch_np(w, g, out_f, in_f, reorder):
    """Independent dense form of one branch: BD(G) built block by block, times an explicit P."""
    w = np.asarray(w, dtype=np.float64)[:, :, 0]  # [O, c_in]
    c_out, c_in = out_f // g, in_f // g
    bd = np.zeros((out_f, in_f))
    for i in range(g):
        bd[i * c_out:(i + 1) * c_out, i * c_in:(i + 1) * c_in] = w[i * c_out:(i + 1) * c_out, :]
    if not reorder:
        return bd
    perm = np.zeros((in_f, in_f))
    for a in range(g):
        for b in range(c_in):
            perm[b * g + a, a * c_in + b] = 1.0
    return bd @ perm


def check_conv1d_semantics(layer, x):
    """The official forward runs kernel-1 Conv1d modules on [B, C, N]; check ours agrees."""
    xc = x.transpose(1, 2)
    ref = F.conv1d(xc, layer.fc_origin.weight, layer.fc_origin.bias)
    for br in layer.fc_rep_branches:
        g = br.group_fc.groups
        xs = xc
        if isinstance(br.channel_shuffle, InputReorder):
            b, c, n = xc.shape
            xs = xc.reshape(b, g, c // g, n).transpose(1, 2).reshape(b, c, n)
        ref = ref + F.conv1d(xs, br.group_fc.weight, br.group_fc.bias, groups=g)
    ours = layer(x)
    d = (ref.transpose(1, 2) - ours).abs().max().item()
    assert d < 1e-10, f"Conv1d cross-check failed: {d}"


def make_official_fixture(reorder, seed):
    cfg = dict(OFFICIAL)
    name = "shuffle" if reorder else "plain"
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    base = build_timm(cfg)
    randomize_(base, gen)
    model = build_timm(cfg)
    model.load_state_dict(base.state_dict())
    for i in range(cfg["depth"]):
        for lname in WRAPPED:
            path = f"blocks.{i}.{lname}"
            set_sub(model, path, ConsolidatorRef(get_sub(base, path), FC_GROUPS, reorder))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".fc_rep_branches." in n:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen, dtype=torch.float32))
    model.eval()
    sd = {k: f32(v) for k, v in model.state_dict().items()}

    h, w = cfg["img_size"]
    x = torch.randn(cfg["batch"], cfg["in_chans"], h, w, generator=gen, dtype=torch.float32)
    labels = torch.randint(0, cfg["num_classes"], (cfg["batch"],), generator=gen)

    # merged dense weights by the independent route
    merged = {}
    for i in range(cfg["depth"]):
        for lname in WRAPPED:
            pre = f"blocks.{i}.{lname}"
            w0 = sd[f"{pre}.fc_origin.weight"].double().numpy()[:, :, 0]
            b0 = sd[f"{pre}.fc_origin.bias"].double().numpy()
            out_f, in_f = w0.shape
            wm, bm = w0.copy(), b0.copy()
            for k, g in enumerate(FC_GROUPS):
                wk = sd[f"{pre}.fc_rep_branches.{k}.group_fc.weight"].numpy()
                assert wk.shape == (out_f, in_f // g, 1), (pre, wk.shape)
                wm += dense_branch_np(wk, g, out_f, in_f, reorder)
                bm += sd[f"{pre}.fc_rep_branches.{k}.group_fc.bias"].double().numpy()
            merged[f"{pre}.weight"] = torch.from_numpy(wm)
            merged[f"{pre}.bias"] = torch.from_numpy(bm)

    with torch.no_grad():
        m64 = model.double()
        tokens = torch.randn(2, 7, cfg["embed_dim"], generator=gen, dtype=torch.float64)
        check_conv1d_semantics(m64.blocks[0].attn.qkv, tokens)
        hid = torch.randn(2, 7, int(cfg["embed_dim"] * cfg["mlp_ratio"]), generator=gen, dtype=torch.float64)
        check_conv1d_semantics(m64.blocks[0].mlp.fc2, hid)
        model.float()

    logits32_unmerged = None
    with torch.no_grad():
        logits32_unmerged = model(x)
    logits, loss, grads = forward_loss_grads(model, x, labels)
    check_grads_nonzero(grads, f"official_{name}")

    # plain timm ViT with merged weights must reproduce the unmerged logits
    plain = build_timm(cfg)
    psd = {k: v for k, v in sd.items() if not any(f".{l}." in k for l in WRAPPED)}
    for k, v in merged.items():
        psd[k] = v.to(torch.float32)
    plain.load_state_dict(psd)
    plain.eval()
    with torch.no_grad():
        plain_sd64 = dict(psd)
        for k, v in merged.items():
            plain_sd64[k] = v
        plain64 = build_timm(cfg).double().eval()
        plain64.load_state_dict({k: v.double() for k, v in plain_sd64.items()})
        d64 = (plain64(x.double()) - logits).abs().max().item()
        d32 = (plain(x).double() - logits).abs().max().item()
    assert d64 < 1e-5, f"merged (float64) vs unmerged logits differ by {d64}"
    assert d32 < 1e-5, f"merged (float32) vs unmerged logits differ by {d32}"
    print(f"official_{name}: merged vs unmerged logits max|diff| float64 {d64:.2e}, float32 {d32:.2e}")

    tensors = dict(sd)
    tensors["input"] = x
    tensors["labels"] = labels.to(torch.float32)
    tensors["logits"] = logits
    tensors["loss"] = loss.reshape(())
    for n, g in grads.items():
        tensors[f"grad.{n}"] = g
    for k, v in merged.items():
        tensors[f"merged.{k}"] = v
    meta = base_meta(cfg, seed)
    meta.update({
        "fc_groups": ",".join(str(g) for g in FC_GROUPS),
        "with_channel_shuffle": "true" if reorder else "false",
        "rep_bias": "true",
        "rep_drop": "0 (eval mode: DropPath is the identity)",
        "branch_init": "N(0, 0.05^2) for every group_fc weight and bias",
        "wrapped_layers": ",".join(WRAPPED),
        "official_repo_commit": "THU-MIG/Consolidator@" + OFFICIAL_COMMIT,
        "merged_vs_unmerged_max_abs_diff_f64": f"{d64:.3e}",
        "merged_vs_unmerged_max_abs_diff_f32": f"{d32:.3e}",
        "f32_logits_max_abs_diff": f"{(logits32_unmerged.double() - logits).abs().max().item():.3e}",
        "loss_reduction": "mean cross_entropy over the batch, eval mode",
        "keys_note": (
            "State dict as the official Consolidator ViT saves it: every timm key for the "
            "unwrapped parts (cls_token, pos_embed, patch_embed.proj.*, blocks.i.norm1/norm2.*, norm.*, head.*); "
            "each of blocks.i.{attn.qkv,attn.proj,mlp.fc1,mlp.fc2} is replaced by "
            "<layer>.fc_origin.weight [O,I,1] (kernel-1 Conv1d), <layer>.fc_origin.bias [O], and for branch k "
            "(g_k = fc_groups[k]) <layer>.fc_rep_branches.k.group_fc.weight [O,I/g_k,1] (kernel-1 Conv1d, "
            "groups=g_k; output row o is in group o // (O/g_k) and sees reordered inputs "
            "(o // (O/g_k))*(I/g_k) .. +I/g_k) and <layer>.fc_rep_branches.k.group_fc.bias [O]. "
            "With with_channel_shuffle=true each branch first reorders its input x~[b*g+a] = x[a*(I/g)+b]. "
            "Extra keys: input [B,C,H,W], labels [B] (float32 class ids), logits [B,classes] (eval), "
            "loss [] (mean CE), grad.<key> for every parameter, merged.<timm key> = dense "
            "W0 + sum_k BD(G_k) P_k [O,I] and b0 + sum_k beta_k [O] for every wrapped layer "
            "(load those into a plain timm ViT to get the same logits)."
        ),
    })
    write(os.path.join(OUT_DIR, f"official_consolidator_{name}.safetensors"), tensors, meta)


def main():
    global OUT_DIR
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=OUT_DIR)
    args = ap.parse_args()
    OUT_DIR = args.out
    os.makedirs(OUT_DIR, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    _, sd_tiny = make_timm_fixture(TINY_MULTI)
    make_timm_fixture(RECT_AVG)
    make_posres_fixtures(sd_tiny)
    make_official_fixture(reorder=True, seed=2001)
    make_official_fixture(reorder=False, seed=2002)


if __name__ == "__main__":
    main()
