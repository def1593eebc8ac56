"""A backbone plus a 2-way linear head, with pooling chosen from the attention mask."""

from __future__ import annotations

import inspect

import torch
from torch import nn


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """Pool [B, T, H] hidden states into [B, H] using the attention mask [B, T].

    ``last`` takes the last position whose mask is 1, ``first`` the first, so both work with
    padding on either side (earlier W2S code counted non-zero token ids, which breaks when the
    pad id is a real token or padding is on the left).
    """
    mask = mask.to(hidden.device)
    positions = torch.arange(mask.shape[1], device=hidden.device).expand_as(mask)
    if how == "last":
        idx = torch.where(mask.bool(), positions, -1).max(dim=1).values
    elif how == "first":
        big = mask.shape[1]
        idx = torch.where(mask.bool(), positions, big).min(dim=1).values
    elif how == "mean":
        # Summed in float32: a bf16 sum over many tokens loses precision.
        w = mask.float().unsqueeze(-1)
        return ((hidden.float() * w).sum(1) / w.sum(1).clamp_min(1.0)).to(hidden.dtype)
    else:
        raise ValueError(f"unknown pooling {how!r}")
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]


class W2SClassifier(nn.Module):
    """Backbone -> pooled hidden state -> linear head with 2 logits.

    Given ``lm`` (the causal LM whose base model is ``backbone``), the backbone is registered
    once, through the LM, and ``forward(..., lm_loss=True)`` returns the language-modelling loss
    instead (generative fine-tuning trains the same parameters the classifier then uses).
    """

    def __init__(self, backbone: nn.Module, pooling: str, lm: nn.Module | None = None):
        super().__init__()
        if lm is not None:
            assert lm.base_model is backbone, "backbone must be the LM's base model"
            self.lm = lm
        else:
            self.backbone = backbone
        self.has_lm = lm is not None
        self.pooling = pooling
        hidden = backbone.config.hidden_size
        self.head = nn.Linear(hidden, 2)
        # Small init: the head starts near 50/50 so early weak labels are not overconfident.
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.takes_position_ids = "position_ids" in inspect.signature(backbone.forward).parameters

    def body(self) -> nn.Module:
        return self.lm.base_model if self.has_lm else self.backbone

    def _position_kwargs(self, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.takes_position_ids:
            return {}
        # Positions count real tokens only, so left padding does not shift them (HF models
        # default to 0..T-1 whatever the mask). Same positions as the default when right-padded.
        return {"position_ids": (attention_mask.long().cumsum(-1) - 1).clamp_min(0)}

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The pooled backbone output [B, H] the head reads: what a probe's cached features
        are (w2sray/train/features.py), computed exactly as in ``forward``."""
        kwargs = self._position_kwargs(attention_mask)
        out = self.body()(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return pool(out.last_hidden_state, attention_mask, self.pooling)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        lm_loss: bool = False,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if lm_loss:
            return self.lm(
                input_ids=input_ids,
                attention_mask=attention_mask,
                # a masked LM's targets come with its masked inputs; a causal LM's are its inputs
                labels=lm_labels(input_ids, attention_mask) if labels is None else labels,
                **self._position_kwargs(attention_mask),
            ).loss
        pooled = self.pooled(input_ids, attention_mask)
        # The head runs in its own dtype (float32 unless DeepSpeed's bf16 cast the whole model),
        # whatever the backbone's; the losses compute in float32 either way (w2sray/losses.py).
        return self.head(pooled.to(self.head.weight.dtype))


def lm_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Next-token targets for a causal LM (HF shifts them): padding is ignored (-100), and so is
    a real token right after padding (left padding), which would be predicted from a pad."""
    valid = attention_mask.bool().clone()
    valid[:, 1:] &= attention_mask[:, :-1].bool()
    return input_ids.masked_fill(~valid, -100)
