"""A saved model folder loads with the Auto* classes and `trust_remote_code` in a fresh process that cannot import
this repository: the shipped files alone must be enough."""

import copy
import json
import os
import subprocess
import sys
import textwrap

import torch
from conftest import BLOCK_REPOSITORY
from safetensors.torch import load_file, save_file

from amrg.hub.export import save_model_folder


LOADER = BLOCK_REPOSITORY + textwrap.dedent(
    """
    import importlib.abc, json, sys
    import torch
    from safetensors.torch import load_file, save_file

    from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

    folder, work = sys.argv[1], sys.argv[2]
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    also = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)
    inputs = load_file(work + "/inputs.safetensors")
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6)
    tensors = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    tensors.update({"buffer::" + k: v.clone().contiguous() for k, v in model.named_buffers()})
    tensors["generated"] = generated.contiguous()
    save_file(tensors, work + "/loaded.safetensors")
    json.dump({
        "config": type(config).__name__, "model": type(model).__name__, "model_module": type(model).__module__,
        "processor": type(processor).__name__, "image_processor": type(processor.image_processor).__name__,
        "same_class": type(also).__name__, "num_image_tokens": processor.num_image_tokens,
        "prompt_ids": processor.prompt_ids(),
    }, open(work + "/loaded.json", "w"))
    """
)


def test_auto_classes_load_the_saved_folder_in_a_fresh_process(tmp_path, tiny, radiograph, banks):
    model, processor = copy.deepcopy(tiny[0]), tiny[1]
    contents = banks(model.config)
    model.set_memory_banks(visual=contents["visual"], report=contents["report"])
    folder = save_model_folder(model, processor, tmp_path / "model")
    files = set(os.listdir(folder))
    assert {"config.json", "model.safetensors", "generation_config.json", "processor_config.json",
            "tokenizer.json", "configuration_amrg.py", "modeling_amrg.py", "modeling_amrg_hopfield.py",
            "processing_amrg.py", "image_processing_amrg.py"} <= files
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModel"] == "modeling_amrg.AmrgForConditionalGeneration"

    inputs = processor(images=[[radiograph(0), radiograph(1)], [radiograph(2)]])
    save_file({k: v.contiguous() for k, v in inputs.items()}, str(tmp_path / "inputs.safetensors"))
    with torch.no_grad():
        expected = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6)

    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run(
        [sys.executable, "-c", LOADER, str(folder), str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads((tmp_path / "loaded.json").read_text())
    assert loaded["model"] == loaded["same_class"] == "AmrgForConditionalGeneration"
    assert loaded["model_module"].startswith("transformers_modules.")
    assert (loaded["config"], loaded["processor"], loaded["image_processor"]) == (
        "AmrgConfig", "AmrgProcessor", "AmrgImageProcessor")
    assert loaded["num_image_tokens"] == processor.num_image_tokens
    assert loaded["prompt_ids"] == processor.prompt_ids()

    tensors = load_file(str(tmp_path / "loaded.safetensors"))
    for name, value in model.state_dict().items():
        assert torch.equal(tensors[name], value), name
    for name, value in model.named_buffers():
        assert torch.equal(tensors["buffer::" + name], value), name
    assert torch.equal(tensors["generated"], expected)
