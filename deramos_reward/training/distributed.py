"""Gathering tensors across processes *with* gradient, for BALR over the global batch.

``torch.distributed.all_gather`` has no autograd: the gathered copies of other processes' scores
are constants. ``gather_with_grad`` keeps the graph: its backward sums, over all processes, the
gradient each process computed for the gathered tensor and hands every process the slice that
belongs to its own input (an all-reduce of the full gradient, then a slice; this works on gloo
and NCCL alike). Every process evaluates the same global loss, so the summed gradient is
``N`` times the gradient of that loss; DDP then averages parameter gradients over the ``N``
processes, which leaves exactly the single-process gradient of the global-batch loss.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.size = rank, x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.size : (ctx.rank + 1) * ctx.size]


def distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` [n, ...] from all processes in rank order -> [N * n, ...], differentiably.

    Every process must pass the same shape. Without a process group (or with one process) it
    returns ``x`` itself.
    """
    if not distributed():
        return x
    return _GatherWithGrad.apply(x)


def gather(x: torch.Tensor) -> torch.Tensor:
    """Like ``gather_with_grad`` but detached (labels, metrics)."""
    if not distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    return torch.cat(parts)
