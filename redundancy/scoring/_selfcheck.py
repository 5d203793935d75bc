"""Self-check: the captured streams must rebuild each layer's real output.

The scores are only right while the hook sites capture what the family table says. A transformers
release that moves a residual add, or a family entry naming the wrong module, would silently change
every score. So on the first batch of every checkpoint, per layer:

    sequential:  h + a = resid_mid  and  h + a + m = o        parallel:  h + a + m = o

measured as max over tokens of |h + a + m - o| / (|h| + |a| + |m|) (robust to cancellation). In
exact arithmetic it is 0; the model's own adds round twice in its dtype, so the tolerance is a few
units of that dtype's epsilon. A wrong site misses by orders of magnitude more.
"""
from __future__ import annotations

import torch

from ..errors import SelfCheckError
from ..families import Family


def tolerance(dtype: torch.dtype) -> float:
    """4 epsilons of the model's dtype (two roundings in its residual adds, with margin); >= 1e-5."""
    return max(4 * torch.finfo(dtype).eps, 1e-5)


def _miss(parts: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """max over tokens of |sum(parts) - target| / sum |part|, in fp32; inf when shapes disagree.
    Tokens holding NaN or inf are skipped: the scorer's finiteness check names those."""
    if any(p.shape != target.shape for p in parts):
        return torch.tensor(float("inf"), device=target.device)
    total = torch.stack([p.float() for p in parts]).sum(0)  # (B, T, D)
    scale = sum(p.float().norm(dim=-1) for p in parts).clamp_min(1e-30)  # (B, T)
    ratio = (total - target.float()).norm(dim=-1) / scale  # (B, T)
    return torch.where(torch.isfinite(ratio), ratio, 0.0).max()


def layer_deviation(sites: dict[str, torch.Tensor]) -> torch.Tensor:
    """How far one layer's captured streams are from rebuilding its residual stream (a 0-d tensor)."""
    h, a, m = sites["hook_resid_pre"], sites["hook_attn_out"], sites["hook_mlp_out"]
    miss = _miss([h, a, m], sites["hook_resid_post"])
    if "hook_resid_mid" in sites:  # sequential families: the residual after attention too
        miss = torch.maximum(miss, _miss([h, a], sites["hook_resid_mid"]))
    return miss


def check(deviations: torch.Tensor, family: Family, dtype: torch.dtype, first_layer: int = 0) -> None:
    """deviations of layers first_layer.. -> nothing, or SelfCheckError naming the first out of tolerance."""
    tol = tolerance(dtype)
    bad = torch.nonzero(~(deviations <= tol)).flatten()  # NaN and inf count as misses
    if bad.numel() == 0:
        return
    import transformers

    i = int(bad[0])
    layer = first_layer + i
    raise SelfCheckError(
        f"self-check failed for {family.model_type} ({family.describe()}): at layer {layer} the captured "
        f"streams miss the layer's output by {float(deviations[i]):.3g} (tolerance {tol:.1g} in "
        f"{str(dtype).removeprefix('torch.')}) under transformers {transformers.__version__}. The family "
        "table's hook sites do not match this model's code; nothing was stored for this checkpoint. "
        "Use the transformers version the project pins, or fix the entry in redundancy/families.py.")
