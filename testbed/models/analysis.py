"""Static costs of a split-able model: FLOPs and parameters per block, bytes at every split point.

FLOPs are counted with forward hooks on Conv2d and Linear layers (the layers that dominate;
BN/ReLU/pooling are ignored) and reported as 2 x multiply-accumulates. Bytes are measured on real
feature maps, one sample at a time (batch 1, as shipped by the runtime), for four encodings:
raw float32, float16, int8 (per-tensor affine, 8 bytes of scale/offset) and int8 followed by zstd.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

INT8_HEADER_BYTES = 8  # float32 scale + float32 offset shipped with every int8 tensor


def _count_flops(module: nn.Module, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    """FLOPs (2*MACs of conv/linear) of one forward pass of ``module`` on ``x``, plus its output."""
    total = 0

    def hook(layer, inputs, output):
        nonlocal total
        if isinstance(layer, nn.Conv2d):
            kh, kw = layer.kernel_size
            total += 2 * output.numel() * (layer.in_channels // layer.groups) * kh * kw
        elif isinstance(layer, nn.Linear):
            total += 2 * output.numel() * layer.in_features

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            out = module(x)
    finally:
        for handle in handles:
            handle.remove()
    return total, out


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def block_costs(model, input_shape: tuple[int, ...]) -> dict:
    """Per-block and per-exit FLOPs/params, feature shapes, and cumulative device FLOPs per split."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, *input_shape)
    blocks, shapes = [], {"input": list(x.shape[1:])}
    features = {"input": x}
    for name, block in zip(model.block_names, model.blocks, strict=True):
        flops, x = _count_flops(block, x)
        blocks.append({"name": name, "flops": flops, "params": _params(block), "output_shape": list(x.shape[1:])})
        shapes[name] = list(x.shape[1:])
        features[name] = x
    exits = []
    for info in model.exits:
        flops, _ = _count_flops(model.exit_heads[info.index], features[info.after])
        exits.append({"index": info.index, "after": info.after, "flops": flops,
                      "params": _params(model.exit_heads[info.index])})
    model.train(was_training)
    backbone = sum(b["flops"] for b in blocks)
    exit_flops = {e["after"]: e["flops"] for e in exits}
    splits, device = [], 0
    for name in model.split_points:
        if name != "input":
            device += next(b["flops"] for b in blocks if b["name"] == name)
        # Device cost at a split includes every exit head it passes; the final head runs in the tail.
        head_exits = sum(e["flops"] for e in exits[:-1] if model.split_index(e["after"]) <= model.split_index(name))
        splits.append({"name": name, "index": model.split_index(name), "shape": shapes[name],
                       "device_flops": device + head_exits,
                       "cloud_flops": backbone - device + exits[-1]["flops"],
                       "fraction_of_backbone_flops": round(device / backbone, 4)})
    return {
        "params_total": _params(model),
        "flops_total_all_exits": backbone + sum(exit_flops.values()),
        "flops_backbone_and_final_exit": backbone + exits[-1]["flops"],
        "blocks": blocks,
        "exits": exits,
        "splits": splits,
    }


def encode_int8(tensor: torch.Tensor) -> tuple[np.ndarray, float, float]:
    """Per-tensor affine uint8 quantisation: returns (codes, scale, offset)."""
    values = tensor.detach().float().numpy()
    lo, hi = float(values.min()), float(values.max())
    scale = (hi - lo) / 255.0 or 1.0
    codes = np.clip(np.round((values - lo) / scale), 0, 255).astype(np.uint8)
    return codes, scale, lo


def tensor_bytes(tensor: torch.Tensor, compressor=None) -> dict[str, int]:
    """Wire size of one feature tensor under each encoding the runtime may use."""
    import zstandard

    compressor = compressor or zstandard.ZstdCompressor(level=3)
    codes, _, _ = encode_int8(tensor)
    numel = tensor.numel()
    return {
        "float32": 4 * numel,
        "float16": 2 * numel,
        "int8": numel + INT8_HEADER_BYTES,
        "int8_zstd": len(compressor.compress(codes.tobytes())) + INT8_HEADER_BYTES,
    }


def split_bytes(model, images: torch.Tensor, max_samples: int = 200) -> list[dict]:
    """Mean/p95 bytes per sample at every split point, measured on real images (batch 1 each)."""
    import zstandard

    compressor = zstandard.ZstdCompressor(level=3)
    was_training = model.training
    model.eval()
    per_split: dict[str, list[dict[str, int]]] = {name: [] for name in model.split_points}
    with torch.no_grad():
        for image in images[:max_samples]:
            x = image.unsqueeze(0)
            per_split["input"].append(tensor_bytes(x, compressor))
            for name, block in zip(model.block_names, model.blocks, strict=True):
                x = block(x)
                per_split[name].append(tensor_bytes(x, compressor))
    model.train(was_training)
    rows = []
    for name, samples in per_split.items():
        row: dict = {"name": name, "samples": len(samples)}
        for encoding in ("float32", "float16", "int8", "int8_zstd"):
            values = np.array([s[encoding] for s in samples])
            row[encoding] = round(float(values.mean()), 1)
            if encoding == "int8_zstd":
                row["int8_zstd_p95"] = round(float(np.percentile(values, 95)), 1)
        rows.append(row)
    return rows


def sparsity_report(sparse_model, dense_model, input_shape: tuple[int, ...]) -> dict:
    """Density of the sparse model's convs and its params/FLOPs relative to the dense twin."""
    sparse_costs, dense_costs = block_costs(sparse_model, input_shape), block_costs(dense_model, input_shape)
    sparse_conv = sum(m.weight.numel() for m in sparse_model.blocks.modules() if isinstance(m, nn.Conv2d))
    dense_conv = sum(m.weight.numel() for m in dense_model.blocks.modules() if isinstance(m, nn.Conv2d))
    return {
        "conv_weight_density": round(sparse_conv / dense_conv, 4),
        "params_sparse": sparse_costs["params_total"],
        "params_dense": dense_costs["params_total"],
        "params_reduction": round(dense_costs["params_total"] / sparse_costs["params_total"], 3),
        "flops_sparse": sparse_costs["flops_total_all_exits"],
        "flops_dense": dense_costs["flops_total_all_exits"],
        "flops_reduction": round(dense_costs["flops_total_all_exits"] / sparse_costs["flops_total_all_exits"], 3),
        "storage_bytes_fp32_sparse": 4 * sparse_costs["params_total"],
        "storage_bytes_fp32_dense": 4 * dense_costs["params_total"],
    }
