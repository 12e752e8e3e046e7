"""One ZeRO-2 optimiser step of the tiny stage-1 model with DeepSpeed on CPU (single process, gloo), using the
project's ds_config.json with the "auto" values filled as accelerate fills them. Writes deepspeed.json into argv[1]."""

import json
import sys
from pathlib import Path

import deepspeed
import torch

from modeling_amrg import AmrgConfig, AmrgForDiseaseClassification


def main() -> None:
    out = Path(sys.argv[1])
    config = json.loads((Path(__file__).resolve().parents[2] / "ds_config.json").read_text())
    config.update(train_batch_size=2, train_micro_batch_size_per_gpu=2, gradient_accumulation_steps=1,
                  gradient_clipping=1.0, bf16={"enabled": False}, fp16={"enabled": False})
    deepspeed.init_distributed(dist_backend="gloo")
    torch.manual_seed(0)
    model = AmrgForDiseaseClassification(AmrgConfig.from_preset("tiny"))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    labels = torch.tensor([[1.0] * 7 + [0.0] * 7, [0.0] * 7 + [1.0] * 7])
    loss = engine(pixel_values=torch.randn(2, 3, 64, 64), labels=labels).loss
    engine.backward(loss)
    engine.step()
    changed = any(not torch.equal(before[n], p.detach()) for n, p in engine.module.named_parameters())
    (out / "deepspeed.json").write_text(json.dumps({
        "zero_stage": engine.zero_optimization_stage(), "loss_finite": bool(torch.isfinite(loss)),
        "weights_changed": changed}))


if __name__ == "__main__":
    main()
