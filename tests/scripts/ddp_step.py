"""Gradients of one data-parallel step (torchrun, 2 CPU processes, gloo; each process half the batch) or, with
--single, of one process on the whole batch. Writes grads_ddp.safetensors / grads_single.safetensors into argv[1]."""

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch.nn.parallel import DistributedDataParallel

from modeling_amrg import AmrgConfig, AmrgForDiseaseClassification


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    pixels = torch.randn(4, 3, 64, 64, generator=generator)
    labels = (torch.rand(4, 14, generator=generator) > 0.5).float()
    return pixels, labels


def model() -> AmrgForDiseaseClassification:
    torch.manual_seed(0)
    net = AmrgForDiseaseClassification(AmrgConfig.from_preset("tiny"))
    return net.eval()  # no dropout: the two runs must see the same function


def main() -> None:
    out = Path(sys.argv[1])
    pixels, labels = batch()
    if "--single" in sys.argv:
        net = model()
        net(pixel_values=pixels, labels=labels).loss.backward()
        grads = {n: p.grad.contiguous() for n, p in net.named_parameters() if p.grad is not None}
        save_file(grads, str(out / "grads_single.safetensors"))
        return
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    net = DistributedDataParallel(model())
    shard = slice(rank * 4 // world, (rank + 1) * 4 // world)
    # eq. 11 averages over the local batch; DDP averages over processes: together the whole-batch mean
    net(pixel_values=pixels[shard], labels=labels[shard]).loss.backward()
    if rank == 0:
        grads = {n: p.grad.contiguous() for n, p in net.module.named_parameters() if p.grad is not None}
        save_file(grads, str(out / "grads_ddp.safetensors"))
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)


if __name__ == "__main__":
    main()
