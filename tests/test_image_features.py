"""Stage 2 trained from the disease encoder's outputs computed once per study (`precompute_image_features`)."""

import copy
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from conftest import random_banks, write_phantoms
from datasets.utils.logging import disable_progress_bar
from safetensors.torch import load_file

from amrg.data.batching import Stage2Collator
from amrg.training.image_features import CachedFeaturesCollator, precompute_disease_features
from amrg.training.loop import TrainArguments
from amrg.training.stage2 import train_stage2


disable_progress_bar()


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return write_phantoms(tmp_path_factory.mktemp("phantoms"), n=40, seed=2)


def _model_with_banks(tiny):
    model, processor = copy.deepcopy(tiny[0]), tiny[1]
    model.set_memory_banks(**random_banks(model.config))
    return model, processor


def test_a_batch_from_precomputed_features_gives_the_loss_of_the_images(tiny, phantoms):
    model, processor = _model_with_banks(tiny)
    model.eval()
    rows = phantoms["train"].select(range(6))
    cache = precompute_disease_features(Accelerator(cpu=True), model.disease_encoder, rows,
                                        processor.image_processor, batch_size=4)
    items = [{"id": r["id"], "image_paths": r["image_paths"], "report_clean": r["report_clean"]} for r in rows]
    with torch.no_grad():
        from_images = model(**Stage2Collator(processor, 60)(items))
        from_cache = model(**CachedFeaturesCollator(processor, cache, 60)(items))
    torch.testing.assert_close(from_cache.loss, from_images.loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(from_cache.logits, from_images.logits, rtol=1e-5, atol=1e-5)
    with pytest.raises(KeyError, match="without precomputed features"):
        cache.batch(["not-a-study"])


def test_both_inputs_at_once_are_refused(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="exactly one of `pixel_values` and `disease_encoder_outputs`"):
        model.get_image_features(torch.zeros(1, 3, 64, 64), disease_encoder_outputs={})


def _stage2_weights(output: Path, dataset, tiny, precompute: bool) -> dict:
    model, processor = _model_with_banks(tiny)
    args = TrainArguments(output_dir=str(output), epochs=2, batch_size=8, learning_rate=1e-3, seed=5)
    best = train_stage2(args, dataset, model, processor, precompute_image_features=precompute)
    return load_file(str(best / "model.safetensors"))


def test_training_from_precomputed_features_trains_what_training_from_images_does(tmp_path, tiny, phantoms):
    from_images = _stage2_weights(tmp_path / "images", phantoms, tiny, precompute=False)
    from_cache = _stage2_weights(tmp_path / "cache", phantoms, tiny, precompute=True)
    assert from_images.keys() == from_cache.keys()
    changed = 0
    for name, tensor in from_images.items():
        # equal up to float rounding: the features were computed in batches of another composition
        torch.testing.assert_close(from_cache[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
        changed += int(not torch.equal(tensor, tiny[0].state_dict().get(name, tensor)))
    assert changed > 0  # stage 2 trained something
