"""Distillation losses on per-token text features, over valid tokens only (start token to end token).

For student features S and teacher features T of shape [B, L, D] and a valid mask m [B, L] (1 from the start
token to the end token, 0 on pads):

- ``mse``: per prompt, the mean over its valid tokens and the D channels of (S - T)^2; then the mean over the
  batch. Pads carry no target: SAM3's heads mask them out.
- ``cosine``: per prompt, the mean over its valid tokens of 1 - cos(S_t, T_t); then the mean over the batch.
- ``word_order``: for each prompt of two or more words, a twin with its words shuffled (seeded); the loss is
  the mean over those prompts of the mean over channels of (pool(S) - pool(S_twin))^2, where pool is the mean
  over valid tokens. Both sides get gradients. It pushes the pooled student feature to depend on which words
  a prompt has rather than on their order.

This follows upstream EfficientSAM3's stage-1 text recipe (masked MSE + weighted cosine + a permutation
"consistency" term, weights 1 / 2 / 0.1 for S0 and S1); upstream's consistency term pools over all positions,
pads included, and keeps single-word prompts (whose twin is themselves) in its mean; ours pools over valid
tokens only and averages over the prompts that can be shuffled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mse(student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    m = valid.to(student.dtype)
    per_prompt = ((student - teacher).square() * m[..., None]).sum(dim=(1, 2))
    return (per_prompt / (m.sum(1).clamp(min=1) * student.shape[-1])).mean()


def token_cosine(student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per prompt, the mean cosine over valid tokens: [B]."""
    m = valid.to(student.dtype)
    cos = F.cosine_similarity(student, teacher, dim=-1, eps=1e-8)
    return (cos * m).sum(1) / m.sum(1).clamp(min=1)


def masked_cosine_loss(student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return (1.0 - token_cosine(student, teacher, valid)).mean()


def pool(features: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over valid tokens: [B, L, D] -> [B, D]."""
    m = valid.to(features.dtype)
    return (features * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1)


def word_order_loss(original: torch.Tensor, original_valid: torch.Tensor, shuffled: torch.Tensor,
                    shuffled_valid: torch.Tensor) -> torch.Tensor:
    """MSE between the valid-token means of prompts and their shuffled twins (rows already paired)."""
    if original.shape[0] == 0:
        return original.sum() * 0.0
    return (pool(original, original_valid) - pool(shuffled, shuffled_valid)).square().mean()
