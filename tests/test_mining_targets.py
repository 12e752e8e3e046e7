"""CAMs of every target of an image from one forward pass (`multi_target_cams`) equal the grad-cam library's one
pair at a time, for every CAM method."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from amrg.memory.mining import CAM_METHODS, frontal_cam, multi_target_cams
from modeling_amrg import AmrgConfig, AmrgForDiseaseClassification


@pytest.mark.parametrize("method", CAM_METHODS)
def test_one_forward_for_all_targets_equals_the_library_pair_by_pair(method):
    torch.manual_seed(0)
    model = AmrgForDiseaseClassification(AmrgConfig.from_preset("tiny")).eval()
    images = torch.randn(3, 3, 64, 64)
    targets = [[1, 3, 13], [0], [2, 5, 7, 9]]
    calls = []
    with frontal_cam(model, method) as cam:
        hook = model.disease_encoder.vision_tower.register_forward_hook(lambda *_: calls.append(1))
        maps = multi_target_cams(cam, images, targets)
        assert len(calls) == 1  # one forward pass for the eight pairs
        hook.remove()
        for b, chosen in enumerate(targets):
            for k, category in enumerate(chosen):
                expected = cam(input_tensor=images[b:b + 1], targets=[ClassifierOutputTarget(category)])[0]
                np.testing.assert_allclose(maps[b][k], expected, atol=1e-4)
    assert [len(per_image) for per_image in maps] == [3, 1, 4]
