"""The one attention function every network in the pack calls.

``attention(q, k, v, heads)`` takes ``[B, Lq, heads*d]`` queries and ``[B, Lk, heads*d]`` keys and
values and returns ``[B, Lq, heads*d]`` (``causal``: each query sees only the keys up to its position, as in a
text encoder): the same convention as ComfyUI's
``optimized_attention``, so that function can be installed with :func:`set_attention`.
The default goes through ``torch.nn.functional.scaled_dot_product_attention``, which picks a
fused kernel (flash / memory-efficient) and never materialises the attention matrix.
"""

import torch
import torch.nn.functional as F


def sdpa_attention(q, k, v, heads, causal=False):
    b, lq, inner = q.shape
    d = inner // heads
    q, k, v = (t.reshape(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return out.transpose(1, 2).reshape(b, lq, inner)


def set_attention(model: torch.nn.Module, fn) -> None:
    """Make every attention layer of ``model`` call ``fn(q, k, v, heads)``."""
    for module in model.modules():
        if isinstance(module, Attention):
            module.attention_fn = fn


class Attention(torch.nn.Module):
    """diffusers-compatible attention layer (keys ``to_q``, ``to_k``, ``to_v``, ``to_out.0``)."""

    def __init__(self, dim, heads, context_dim=None, *, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        context_dim = context_dim or dim
        self.heads = heads
        self.to_q = operations.Linear(dim, dim, bias=False, dtype=dtype, device=device)
        self.to_k = operations.Linear(context_dim, dim, bias=False, dtype=dtype, device=device)
        self.to_v = operations.Linear(context_dim, dim, bias=False, dtype=dtype, device=device)
        self.to_out = torch.nn.ModuleList([operations.Linear(dim, dim, dtype=dtype, device=device)])
        self.attention_fn = sdpa_attention

    def forward(self, x, context=None):
        context = x if context is None else context
        return self.attend(self.to_q(x), self.to_k(context), self.to_v(context))

    def attend(self, q, k, v):
        return self.to_out[0](self.attention_fn(q, k, v, self.heads))


class GEGLU(torch.nn.Module):
    def __init__(self, dim, inner, *, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        self.proj = operations.Linear(dim, inner * 2, dtype=dtype, device=device)

    def forward(self, x):
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(torch.nn.Module):
    """diffusers ``FeedForward`` with GEGLU (keys ``net.0.proj``, ``net.2``)."""

    def __init__(self, dim, mult=4, *, dtype=None, device=None, operations=torch.nn):
        super().__init__()
        inner = dim * mult
        self.net = torch.nn.ModuleList([
            GEGLU(dim, inner, dtype=dtype, device=device, operations=operations),
            torch.nn.Identity(),
            operations.Linear(inner, dim, dtype=dtype, device=device),
        ])

    def forward(self, x):
        return self.net[2](self.net[0](x))
