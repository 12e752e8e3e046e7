"""Bad inputs of model folders, configurations, memory banks, images and the model commands (`amrg generate`,
`amrg init`, `amrg assemble`): each case is refused with one line naming the input and what is wrong (exit status 2,
no traceback), or handled correctly (the exact output is checked).

Decisions pinned here (and documented in the modules):
- a model folder needs config.json, model.safetensors (or shards and their index), generation_config.json,
  processor_config.json, tokenizer.json and tokenizer_config.json; the Python files and README.md are not read;
- weights that do not match config.json (tensors missing, not in the model, or of another shape) are refused, naming
  the first tensors and their count, unless `--allow-missing-weights` (then a warning, in `--json` too);
- unknown keys in the AM-MRG configurations, the Q-Former's and the image processor's settings are refused (typos);
  the LLM's `text_config` is not checked key by key (LLM configurations carry their family's legacy keys);
- every float field must be finite; bank rows must lie within +-1e4 and project to finite keys;
- images smaller than 16 pixels on a side, or with NaN/infinite values, are refused; a uniform image (all black,
  all white) is read with a warning naming it (stderr, and `warnings` of `amrg generate --json`);
- every other PIL mode (16-bit, RGBA, grey + alpha, palette, 1-bit) is read as luminance, alpha dropped.
"""

from __future__ import annotations

import json
import logging
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from amrg.cli import main
from amrg.hub.export import save_model_folder
from amrg.hub.loading import load_disease_classifier, load_model_config, load_model_folder
from amrg.hub.presets import build_tiny_model
from modeling_amrg import AmrgConfig, AmrgForDiseaseClassification, AmrgHopfieldConfig, AmrgImageProcessor
from modeling_amrg.modeling_amrg_memory import AmrgMemoryBank


FILES = ("config.json", "model.safetensors", "generation_config.json", "processor_config.json", "tokenizer.json",
         "tokenizer_config.json")
JSON_FILES = tuple(name for name in FILES if name.endswith(".json"))
FAST = ["--max-new-tokens", "3", "--num-beams", "1"]


# -- helpers ---------------------------------------------------------------------------------------------------------

def run(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main([str(arg) for arg in argv])
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(capsys, argv, *fragments: str) -> str:
    """`amrg ARGV` exits 2 with exactly one line on stderr, `amrg CMD: error: ...`, holding every fragment."""
    code, out, err = run(capsys, *argv)
    lines = err.splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1, err
    assert lines[0].startswith(f"amrg {argv[0]}: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], err
    assert "Traceback" not in err and out == ""
    return lines[0]


def generate_json(capsys, model: Path, *images, extra=()) -> dict:
    code, out, err = run(capsys, "generate", "--model", model, *images, "--json", *FAST, *extra)
    assert code == 0, err
    assert "Traceback" not in err
    return json.loads(out)


def edit_json(name: str, change):
    def mutate(folder: Path) -> None:
        path = folder / name
        value = json.loads(path.read_text())
        change(value)
        path.write_text(json.dumps(value))
    return mutate


def edit_weights(change):
    def mutate(folder: Path) -> None:
        tensors = load_file(str(folder / "model.safetensors"))
        change(tensors)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"),
                  metadata={"format": "pt"})
    return mutate


def bomb_png(width: int = 40_000, height: int = 40_000) -> bytes:
    """A valid PNG header declaring `width` x `height` pixels (PIL refuses it at open: no pixel data needed)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


# -- fixtures ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "tiny"
    assert main(["init", "--output", str(folder), "--seed", "0"]) == 0
    return folder


@pytest.fixture(scope="module")
def banks_dir(tmp_path_factory, model_dir) -> Path:
    """The tiny model with small random banks."""
    from conftest import random_banks

    model, processor = load_model_folder(model_dir)
    model.set_memory_banks(**random_banks(model.config, visual_rows=6, report_rows=4))
    return save_model_folder(model, processor, tmp_path_factory.mktemp("models") / "banks")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """One 8-bit radiograph in every form that must read as the same pixels, and degenerate neighbours."""
    from conftest import synthetic_radiograph

    root = tmp_path_factory.mktemp("images")
    gray = synthetic_radiograph(0, (90, 110))
    palette = Image.new("P", (gray.shape[1], gray.shape[0]))
    palette.putpalette([v for i in range(256) for v in (i, i, i)])
    palette.putdata(gray.flatten().tolist())
    binary = gray > 128
    nan = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    nan[3, 3] = np.nan
    forms = {
        "gray8.png": Image.fromarray(gray),
        "gray16.png": Image.fromarray(gray.astype(np.uint16) * 257),
        "rgba.png": Image.fromarray(np.dstack([gray] * 3 + [np.full_like(gray, 77)])),
        "gray_alpha.png": Image.fromarray(np.dstack([gray] * 3 + [np.full_like(gray, 77)])).convert("LA"),
        "palette.png": palette,
        "binary.png": Image.fromarray(binary),
        "binary8.png": Image.fromarray(binary.astype(np.uint8) * 255),
        "side16.png": Image.fromarray(synthetic_radiograph(1, (16, 16))),
        "one.png": Image.fromarray(np.zeros((1, 1), np.uint8)),
        "thin.png": Image.fromarray(synthetic_radiograph(2, (15, 200))),
        "black.png": Image.fromarray(np.zeros((64, 64), np.uint8)),
        "white.png": Image.fromarray(np.full((64, 64), 255, np.uint8)),
        "nan.tiff": Image.fromarray(nan, mode="F"),
    }
    paths = {}
    for name, image in forms.items():
        image.save(root / name)
        paths[name] = root / name
    assert Image.open(paths["gray16.png"]).mode == "I;16" and Image.open(paths["gray_alpha.png"]).mode == "LA"
    assert Image.open(paths["palette.png"]).mode == "P" and Image.open(paths["binary.png"]).mode == "1"
    (root / "empty.png").touch()
    (root / "text.png").write_text("not an image")
    (root / "truncated.png").write_bytes(paths["gray16.png"].read_bytes()[:300])
    (root / "huge.png").write_bytes(bomb_png())
    (root / "folder.png").mkdir()
    for name in ("empty.png", "text.png", "truncated.png", "huge.png", "folder.png"):
        paths[name] = root / name
    paths["missing.png"] = root / "missing.png"
    return paths


# -- model folders: every file missing, empty, corrupt, or from another model -----------------------------------------

def _other_model_weights(tensors: dict) -> None:
    """The weights of the tiny model with Hopfield memories of width 8 instead of 16."""
    other, _ = build_tiny_model(seed=1, hopfield_config={"hidden_size": 8})
    tensors.clear()
    tensors.update(other.state_dict())


def _add_token(tokenizer: dict) -> None:
    tokenizer["added_tokens"].append({"id": 600, "content": "<extra>", "single_word": False, "lstrip": False,
                                      "rstrip": False, "normalized": False, "special": True})


FOLDER_CASES = [
    # (id, mutation of a copy of the tiny folder, fragments of the one-line error; {folder} is the copy)
    *[(f"no_{name}", lambda f, n=name: (f / n).unlink(), [f"model folder {{folder}} has no {name}"])
      for name in FILES],
    *[(f"empty_{name}", lambda f, n=name: (f / n).write_bytes(b""), [f"{{folder}}/{name} is empty"])
      for name in FILES],
    *[(f"invalid_json_{name}", lambda f, n=name: (f / n).write_text("{oops"),
       [f"{{folder}}/{name} is not valid JSON (Expecting property name"]) for name in JSON_FILES],
    *[(f"list_json_{name}", lambda f, n=name: (f / n).write_text("[1, 2]"),
       [f"{{folder}}/{name} must hold a JSON object, got list"]) for name in JSON_FILES],
    ("latin1_config", lambda f: (f / "config.json").write_bytes('{"a": "\xe9"}'.encode("latin-1")),
     ["{folder}/config.json is not valid JSON ('utf-8' codec can't decode"]),
    # weights
    ("truncated_weights", lambda f: (f / "model.safetensors").write_bytes(
        (f / "model.safetensors").read_bytes()[:5000]),
     ["{folder}/model.safetensors is truncated or corrupt (safetensors: Error while deserializing header"]),
    ("garbage_weights", lambda f: (f / "model.safetensors").write_bytes(b"\x00" * 4096),
     ["{folder}/model.safetensors is truncated or corrupt"]),
    ("missing_tensors", edit_weights(lambda t: [t.pop(k) for k in list(t) if "classifier" in k or "lm_head" in k]),
     ["{folder}/model.safetensors does not match config.json: 3 tensors missing (disease_encoder.classifier.bias, "
      "disease_encoder.classifier.weight, language_model.lm_head.weight); pass allow_missing_weights=True "
      "(--allow-missing-weights)"]),
    ("extra_tensor", edit_weights(lambda t: t.update({"extra.weight": torch.zeros(2)})),
     ["does not match config.json: 1 tensor not in the model (extra.weight)"]),
    ("weights_of_another_configuration", edit_weights(_other_model_weights),
     ["does not match config.json: 18 tensors of another shape (language_projection.report_memory.weight (32, 8) "
      "in the file, (32, 16) in the model, ", "... 15 more)"]),
    ("nan_weight", edit_weights(lambda t: t["language_model.lm_head.weight"].__setitem__((0, 0), float("nan"))),
     ["{folder}/model.safetensors holds NaN or infinite values in 1 tensor (language_model.lm_head.weight)"]),
    ("sharded_index_without_shards", lambda f: ((f / "model.safetensors").unlink(),
                                                (f / "model.safetensors.index.json").write_text(
                                                    '{"weight_map": {"a": "model-00001-of-00002.safetensors"}}')),
     ["weights file not found: {folder}/model-00001-of-00002.safetensors"]),
    # config.json
    ("config_of_another_model", edit_json("config.json", lambda c: c.update(model_type="bert")),
     ["{folder}/config.json is not an AM-MRG configuration: model_type is 'bert', not 'amrg'"]),
    ("config_misspelled_key", edit_json("config.json", lambda c: c.update(hopfield_confg={"scaling": 2.0})),
     ["{folder}/config.json: `AmrgConfig` has unknown keys ['hopfield_confg']"]),
    ("config_beta_for_scaling", edit_json("config.json", lambda c: c["hopfield_config"].update(beta=2.0)),
     ["{folder}/config.json: `hopfield_config` has unknown keys ['beta']"]),
    ("config_scaling_inf", edit_json("config.json", lambda c: c["hopfield_config"].update(scaling=float("inf"))),
     ["{folder}/config.json: `hopfield_config.scaling` must be a finite number > 0 (the beta of eq. 2), got inf"]),
    ("config_qformer_typo", edit_json("config.json", lambda c: c["qformer_config"].update(num_hiden_layers=3)),
     ["`qformer_config` has unknown keys ['num_hiden_layers']"]),
    ("config_vision_of_another_model", edit_json("config.json", lambda c: c["vision_config"].update(model_type="vit")),
     ["`vision_config.model_type` must be 'amrg_vision', got 'vit'"]),
    ("config_unknown_timm_model", edit_json("config.json",
                                            lambda c: c["vision_config"].update(timm_model_name="nope_net")),
     ["{folder}/config.json: cannot build the model it describes and load model.safetensors: Unknown model "
      "(nope_net)"]),
    ("config_wrong_token_count", edit_json("config.json", lambda c: c["vision_config"].update(num_tokens=63)),
     ["{folder}/config.json: cannot build the model it describes", "`vision_config.num_tokens` must be 64"]),
    ("config_bank_rows_not_in_weights", edit_json("config.json", lambda c: c["visual_bank"].update(size=3)),
     ["does not match config.json: 4 tensors of another shape (visual_bank.disease_ids (0,) in the file, (3,) in "
      "the model"]),
    # generation_config.json
    ("generation_max_new_tokens_0", edit_json("generation_config.json", lambda c: c.update(max_new_tokens=0)),
     ["{folder}/generation_config.json: `max_new_tokens` must be greater than 0"]),
    ("generation_num_beams_0", edit_json("generation_config.json", lambda c: c.update(num_beams=0)),
     ["{folder}/generation_config.json: `num_beams` must be a positive integer, got 0"]),
    ("generation_eos_of_another_model", edit_json("generation_config.json", lambda c: c.update(eos_token_id=99999)),
     ["{folder}/generation_config.json: `eos_token_id` 99999 is not a token id of this model (0..511)"]),
    # processor_config.json
    ("processor_unknown_key", edit_json("processor_config.json", lambda c: c.update(num_image_token=106)),
     ["{folder}/processor_config.json has unknown keys ['num_image_token']"]),
    ("processor_of_another_model", edit_json("processor_config.json", lambda c: c.update(num_image_tokens=92)),
     ["{folder}/processor_config.json: num_image_tokens is 92 but config.json expects 106"]),
    ("processor_image_size", edit_json("processor_config.json", lambda c: c["image_processor"].update(image_size=32)),
     ["{folder}/processor_config.json: image_processor.image_size is 32 but config.json expects 64"]),
    ("processor_image_typo", edit_json("processor_config.json", lambda c: c["image_processor"].update(imag_size=64)),
     ["`image_processor` has unknown keys ['imag_size']"]),
    ("processor_std_zero", edit_json("processor_config.json", lambda c: c["image_processor"].update(
        image_std=[0, 0, 0])), ["`image_mean`/`image_std` must be 3 finite values (std > 0)"]),
    ("processor_mean_nan", edit_json("processor_config.json", lambda c: c["image_processor"].update(
        image_mean=[float("nan")] * 3)), ["`image_mean`/`image_std` must be 3 finite values"]),
    ("processor_max_views_0", edit_json("processor_config.json", lambda c: c["image_processor"].update(max_views=0)),
     ["`max_views` must be a positive integer, got 0"]),
    ("processor_without_image_processor", edit_json("processor_config.json", lambda c: c.pop("image_processor")),
     ["{folder}/processor_config.json has no `image_processor` settings"]),
    ("processor_template", edit_json("processor_config.json", lambda c: c.update(prompt_template="no slots")),
     ["`prompt_template` must contain {{image}} and {{prompt}} once each"]),
    ("processor_unknown_image_token", edit_json("processor_config.json", lambda c: c.update(image_token="<img>")),
     ["{folder}/processor_config.json (with tokenizer_config.json): the tokenizer does not know the image token"]),
    # tokenizer.json / tokenizer_config.json
    ("tokenizer_not_a_tokenizer", lambda f: (f / "tokenizer.json").write_text('{"version": "1.0"}'),
     ["{folder}/tokenizer.json is not a tokenizers file"]),
    ("tokenizer_of_another_model", edit_json("tokenizer.json", _add_token),
     ["{folder}/tokenizer.json has 513 tokens but the LLM's embedding has 512 rows"]),
    ("tokenizer_config_without_pad", edit_json("tokenizer_config.json", lambda c: c.update(pad_token=None)),
     ["{folder}/tokenizer_config.json defines no pad token"]),
]


@pytest.mark.parametrize(("mutate", "fragments"), [case[1:] for case in FOLDER_CASES],
                         ids=[case[0] for case in FOLDER_CASES])
def test_model_folder_refusals(model_dir, images, tmp_path, capsys, mutate, fragments):
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    mutate(folder)
    assert_refused(capsys, ["generate", "--model", folder, images["gray8.png"], *FAST],
                   *[fragment.format(folder=folder) for fragment in fragments])


def test_model_folder_missing_or_a_file(tmp_path, images, capsys):
    assert_refused(capsys, ["generate", "--model", tmp_path / "none", images["gray8.png"]],
                   f"model folder not found: {tmp_path / 'none'}")
    assert_refused(capsys, ["generate", "--model", images["gray8.png"], images["gray8.png"]],
                   f"model folder {images['gray8.png']} is a file, not a folder")


def test_a_correct_folder_loads_without_any_report_of_missing_weights(model_dir, banks_dir, capsys, images):
    """The tiny folders (timm's non-persistent buffers, banks) report nothing missing; what loads is what was
    saved."""
    for folder in (model_dir, banks_dir):
        model, processor = load_model_folder(folder)
        saved = load_file(str(folder / "model.safetensors"))
        assert set(saved) == set(model.state_dict())
        for key, tensor in model.state_dict().items():
            assert torch.equal(tensor, saved[key]), key
    payload = generate_json(capsys, banks_dir, images["gray8.png"])
    assert payload["warnings"] == [] and payload["report"]


def test_missing_weights_load_only_when_allowed_and_say_so(model_dir, tmp_path, images, capsys):
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    edit_weights(lambda t: t.pop("disease_encoder.classifier.weight"))(folder)
    with pytest.raises(ValueError, match=r"1 tensor missing \(disease_encoder.classifier.weight\)"):
        load_model_folder(folder)
    payload = generate_json(capsys, folder, images["gray8.png"], extra=["--allow-missing-weights"])
    assert payload["warnings"] == [
        f"{folder}/model.safetensors does not match config.json: 1 tensor missing "
        "(disease_encoder.classifier.weight); loaded anyway (allow_missing_weights): missing and other-shape tensors "
        "hold random values, the others are ignored"]


def test_bank_rows_that_overflow_in_a_saved_folder(banks_dir, tmp_path, images, capsys):
    folder = tmp_path / "model"
    shutil.copytree(banks_dir, folder)
    edit_weights(lambda t: t["visual_bank.embeddings"].mul_(1e30))(folder)
    assert_refused(capsys, ["generate", "--model", folder, images["gray8.png"], *FAST],
                   f"{folder}/model.safetensors: `visual_bank.embeddings` overflow in the Hopfield projection "
                   "(torch.float32)")


def test_stage1_folders_through_the_classifier_loader(model_dir, tmp_path):
    """`load_disease_classifier` (for `train mine/banks --stage1`): a stage-1 folder or a full model folder; the
    disease encoder's tensors must all be there, the generator's other tensors are not its business."""
    config = AmrgConfig.from_pretrained(model_dir)
    stage1 = tmp_path / "stage1"
    AmrgForDiseaseClassification(config).save_pretrained(stage1)
    assert isinstance(load_disease_classifier(stage1), AmrgForDiseaseClassification)
    full = load_disease_classifier(model_dir)
    saved = load_file(str(model_dir / "model.safetensors"))
    assert all(torch.equal(tensor, saved[key]) for key, tensor in full.state_dict().items())
    edit_weights(lambda t: (t.pop("disease_encoder.classifier.bias"),
                            t.update({"disease_encoder.stray": torch.zeros(1)})))(stage1)
    with pytest.raises(ValueError, match=r"1 tensor missing \(disease_encoder.classifier.bias\); 1 tensor not in the "
                                         r"model \(disease_encoder.stray\)"):
        load_disease_classifier(stage1)
    (tmp_path / "config_only").mkdir()
    shutil.copy(model_dir / "config.json", tmp_path / "config_only")
    with pytest.raises(FileNotFoundError, match="config_only has no model.safetensors"):
        load_disease_classifier(tmp_path / "config_only")


def test_config_files_through_load_model_config(model_dir, tmp_path):
    """`load_model_config` (for `train stage1 --config`): a folder or the JSON file, errors naming the file."""
    assert load_model_config(model_dir).to_dict() == load_model_config(model_dir / "config.json").to_dict()
    config = json.loads((model_dir / "config.json").read_text())
    for name, change, message in [
        ("typo.json", lambda c: c.update(use_visual_memroy=False), "has unknown keys ['use_visual_memroy']"),
        ("other.json", lambda c: c.update(model_type="llama"), "is not an AM-MRG configuration"),
        ("nan.json", lambda c: c.update(orthogonality_loss_weight=float("nan")), "must be a finite number >= 0"),
    ]:
        changed = json.loads(json.dumps(config))
        change(changed)
        (tmp_path / name).write_text(json.dumps(changed))
        with pytest.raises(ValueError) as error:
            load_model_config(tmp_path / name)
        assert str(error.value).startswith(str(tmp_path / name)) and message in str(error.value)
    with pytest.raises(FileNotFoundError, match="configuration not found"):
        load_model_config(tmp_path / "none.json")


# -- images through `amrg generate` -----------------------------------------------------------------------------------

IMAGE_REFUSALS = [
    ("missing.png", "image file not found: {path}"),
    ("empty.png", "image file is empty: {path}"),
    ("text.png", "cannot read image file {path}: cannot identify image file"),
    ("truncated.png", "cannot read image file {path}:"),
    ("folder.png", "image file {path} is a folder, not an image"),
    ("huge.png", "cannot read image file {path}: too many pixels for a radiograph (Image size (1600000000 pixels)"),
    ("one.png", "{path}: image is 1 x 1 pixels; a radiograph needs at least 16 on each side"),
    ("thin.png", "{path}: image is 200 x 15 pixels; a radiograph needs at least 16 on each side"),
    ("nan.tiff", "{path}: image holds NaN or infinite values"),
]


@pytest.mark.parametrize(("name", "fragment"), IMAGE_REFUSALS, ids=[case[0] for case in IMAGE_REFUSALS])
def test_image_refusals(model_dir, images, capsys, name, fragment):
    assert_refused(capsys, ["generate", "--model", model_dir, images["gray8.png"], images[name], *FAST],
                   fragment.format(path=images[name]))


# Each form reads as exactly the pixels of its reference, so the report and probabilities are those of the reference.
SAME_PIXELS = [("gray16.png", "gray8.png"), ("rgba.png", "gray8.png"), ("gray_alpha.png", "gray8.png"),
               ("palette.png", "gray8.png"), ("binary.png", "binary8.png")]


_REFERENCE_OUTPUTS: dict[str, dict] = {}


@pytest.mark.parametrize(("name", "reference"), SAME_PIXELS, ids=[case[0] for case in SAME_PIXELS])
def test_image_kinds_read_as_their_pixels(model_dir, images, capsys, name, reference):
    if reference not in _REFERENCE_OUTPUTS:  # each reference is generated once for the whole table
        _REFERENCE_OUTPUTS[reference] = generate_json(capsys, model_dir, images[reference])
    expected = _REFERENCE_OUTPUTS[reference]
    assert generate_json(capsys, model_dir, images[name]) == expected
    assert expected["warnings"] == []


def test_the_smallest_accepted_image(model_dir, images, capsys):
    payload = generate_json(capsys, model_dir, images["side16.png"])
    assert payload["warnings"] == [] and set(payload) == {"report", "probabilities", "agreement", "warnings"}


def test_uniform_images_are_read_with_a_warning_naming_them(model_dir, images, capsys, caplog):
    black = generate_json(capsys, model_dir, images["black.png"])
    white = generate_json(capsys, model_dir, images["white.png"])
    for payload, name, value in ((black, "black.png", 0), (white, "white.png", 255)):
        assert payload["warnings"] == [
            f"{images[name]}: the image is uniform (every pixel is {value}): it holds no information, and a report "
            "written from it describes nothing that is in the image"]
    # both read as zeros: the same (uninformed) output
    assert black["report"] == white["report"] and black["probabilities"] == white["probabilities"]
    # without --json the warning is logged (to stderr in a terminal) and stdout is the report alone
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="modeling_amrg.image_processing_amrg"):
        code, out, err = run(capsys, "generate", "--model", model_dir, images["black.png"], *FAST)
    assert code == 0 and out == black["report"] + "\n"
    assert [r.getMessage() for r in caplog.records if r.name.endswith("image_processing_amrg")] == black["warnings"]


def test_degenerate_arrays_through_the_processor(caplog):
    processor = AmrgImageProcessor(image_size=32)
    with pytest.raises(ValueError, match=r"^study 0, view 0: image holds NaN or infinite values$"):
        processor(np.full((64, 64), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match=r"^study 1, view 0: image holds NaN or infinite values$"):
        processor([np.ones((64, 64)), np.full((64, 64), np.inf)])
    with pytest.raises(ValueError, match=r"^study 0, view 1: image is 1 x 1 pixels"):
        processor([[np.eye(64), np.zeros((1, 1))]])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="modeling_amrg.image_processing_amrg"):
        out = processor([[np.eye(64), np.full((64, 64), 7.0)]])
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["study 0, view 1"]
    assert torch.equal(out["pixel_values"][0, 1], processor.preprocess_view(np.zeros((64, 64)), "zeros"))


# -- options of amrg generate / init / assemble -----------------------------------------------------------------------

GENERATE_OPTIONS = [
    (["--num-beams", "0"], "--num-beams must be at least 1, got 0"),
    (["--num-beams", "-2"], "--num-beams must be at least 1, got -2"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1, got 0"),
    (["--max-new-tokens", "-5"], "--max-new-tokens must be at least 1, got -5"),
    (["--max-new-tokens", "100000"], "--max-new-tokens 100000: the prompt's 189 tokens plus the report exceed the "
                                     "LLM's 512 positions (at most 323 new tokens)"),
    (["--num-beams", "x"], "argument --num-beams: invalid int value: 'x'"),
    (["--device", "nonsense"], "--device 'nonsense' is not a torch device"),
    (["--device", "meta"], "--device 'meta': no meta device is available on this machine"),
    (["--dtype", "float8"], "argument --dtype: invalid choice: 'float8'"),
]


@pytest.mark.parametrize(("options", "fragment"), GENERATE_OPTIONS, ids=[" ".join(c[0]) for c in GENERATE_OPTIONS])
def test_generate_option_refusals(model_dir, images, capsys, options, fragment):
    assert_refused(capsys, ["generate", "--model", model_dir, images["gray8.png"], *options], fragment)


def test_generate_budget_from_the_folder_and_image_count(model_dir, images, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    edit_json("generation_config.json", lambda c: c.update(max_new_tokens=400))(folder)
    assert_refused(capsys, ["generate", "--model", folder, images["gray8.png"]],
                   f"max_new_tokens of {folder}/generation_config.json 400: the prompt's 189 tokens")
    assert_refused(capsys, ["generate", "--model", model_dir, *[images["gray8.png"]] * 3],
                   "give one study: one or two images (frontal, lateral), got 3")


def test_bfloat16_on_a_cuda_device_without_it(model_dir, images, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert_refused(capsys, ["generate", "--model", model_dir, images["gray8.png"], "--device", "cuda:0",
                            "--dtype", "bfloat16"],
                   "--dtype bfloat16: the CUDA device cuda:0 does not support bfloat16")


def test_init_and_assemble_option_refusals(tmp_path, model_dir, capsys):
    out = tmp_path / "out"
    assert_refused(capsys, ["init", "--output", out, "--seed", "-1"], "--seed must be in [0, 4294967295], got -1")
    assert_refused(capsys, ["init", "--output", out, "--seed", str(2**32)], "--seed must be in [0, 4294967295]")
    assert_refused(capsys, ["init", "--output", out, "--seed", "1.5"], "argument --seed: invalid int value: '1.5'")
    assert_refused(capsys, ["init", "--output", out, "--preset", "paper"], "use `amrg assemble`")
    assert_refused(capsys, ["init", "--output", model_dir], f"output folder is not empty: {model_dir}")
    assert_refused(capsys, ["init", "--output", model_dir / "config.json"], "output path exists and is not a folder")
    llm = tmp_path / "llm"
    llm.mkdir()
    base = ["assemble", "--language-model", model_dir, "--output", out, "--random-vision", "--text-encoder", ""]
    assert_refused(capsys, [*base, "--image-size", "0"], "--image-size must be at least 1, got 0")
    assert_refused(capsys, [*base, "--vision-kwargs", "{bad"], "--vision-kwargs is not valid JSON (")
    assert_refused(capsys, [*base, "--vision-kwargs", "[1]"], "--vision-kwargs must be a JSON object")
    assert_refused(capsys, [*base, "--vision-checkpoint", tmp_path / "none.pt"],
                   f"--vision-checkpoint {tmp_path / 'none.pt'}: no such file")
    assert_refused(capsys, [*base, "--dtype", "int8"], "argument --dtype: invalid choice: 'int8'")
    assert_refused(capsys, ["assemble", "--language-model", tmp_path / "none", "--output", out],
                   f"--language-model {tmp_path / 'none'}: no such folder")
    assert_refused(capsys, ["assemble", "--language-model", llm, "--output", out],
                   f"--language-model {llm}: not a transformers model folder (no config.json)")
    assert_refused(capsys, ["assemble", "--language-model", model_dir, "--text-encoder", "./no/such/encoder",
                            "--output", out], "--text-encoder ./no/such/encoder: no such folder")
    assert not out.exists()


# -- configuration fields ---------------------------------------------------------------------------------------------

CONFIG_REFUSALS = [
    ({"hopfield_confg": {}}, "`AmrgConfig` has unknown keys ['hopfield_confg']"),
    ({"num_beams": 3}, "`AmrgConfig` has unknown keys ['num_beams']"),
    ({"model_type": "llama"}, "`AmrgConfig.model_type` must be 'amrg', got 'llama'"),
    ({"hopfield_config": {"beta": 4}}, "`hopfield_config` has unknown keys ['beta']"),
    ({"vision_config": {"img_size": 64}}, "`vision_config` has unknown keys ['img_size']"),
    ({"qformer_config": {"hidden_sise": 32}}, "`qformer_config` has unknown keys ['hidden_sise']"),
    ({"text_config": {"model_type": "no_such_llm"}}, "`text_config.model_type` must be a model type known"),
    *[({"hopfield_config": {"scaling": value}}, "`hopfield_config.scaling` must be a finite number > 0")
      for value in (float("inf"), float("nan"), -1.0, 0.0, True, "4")],
    *[({"hopfield_config": {"step_size": value}}, "`hopfield_config.step_size` must be in (0, 1)")
      for value in (float("nan"), 1.0, 0.0, float("inf"))],
    *[({"hopfield_config": {"update_steps_eps": value}}, "`hopfield_config.update_steps_eps` must be a finite")
      for value in (float("inf"), float("nan"), -1e-3)],
    *[({"hopfield_config": {"dropout": value}}, "`hopfield_config.dropout` must be in [0, 1)")
      for value in (float("nan"), 1.0, -0.1, "x")],
    ({"hopfield_config": {"update_steps_max": 0}}, "`hopfield_config.update_steps_max` must be an integer >= 1"),
    ({"hopfield_config": {"hidden_size": 16.0}}, "`hopfield_config.hidden_size` must be a positive integer"),
    ({"hopfield_config": {"normalize_state_pattern": "no"}}, "`hopfield_config.normalize_state_pattern` must be"),
    *[({"orthogonality_loss_weight": value}, "`orthogonality_loss_weight` must be a finite number >= 0")
      for value in (float("inf"), float("nan"), -0.1)],
    *[({"initializer_range": value}, "`initializer_range` must be a finite number >= 0")
      for value in (float("inf"), float("nan"), -1.0)],
    ({"vision_config": {"image_size": 0}}, "`vision_config.image_size` must be a positive integer, got 0"),
    ({"vision_config": {"num_tokens": True}}, "`vision_config.num_tokens` must be a positive integer, got True"),
    ({"vision_config": {"timm_kwargs": [1]}}, "`vision_config.timm_kwargs` must be a dict"),
    ({"num_query_tokens": 0}, "`num_query_tokens` must be a positive integer"),
    ({"use_visual_memory": "false"}, "`use_visual_memory` must be true or false, got 'false'"),
    ({"freeze_language_model": 0}, "`freeze_language_model` must be true or false, got 0"),
    ({"image_token_index": -1}, "`image_token_index` must be None or a token id >= 0"),
    ({"observation_names": "Cardiomegaly"}, "`observation_names` must be a list of observation names"),
    ({"visual_bank_max_rows_per_disease": 0}, "`visual_bank_max_rows_per_disease` must be a positive integer"),
    ({"report_bank": {"size": -1}}, "`report_bank.size` must be an integer >= 0"),
    ({"language_model_dtype": "int8"}, "`language_model_dtype` must be None or one of"),
]


@pytest.mark.parametrize(("kwargs", "message"), CONFIG_REFUSALS, ids=[repr(c[0]) for c in CONFIG_REFUSALS])
def test_config_field_refusals(kwargs, message):
    with pytest.raises(ValueError) as error:
        AmrgConfig(**kwargs)
    assert message in str(error.value) and len(str(error.value).splitlines()) == 1


def test_transformers_own_keys_are_accepted_and_round_trip(tmp_path):
    """The keys PretrainedConfig writes or forwards are not mistaken for typos."""
    config = AmrgConfig.from_preset("tiny", image_token_index=4, architectures=["AmrgForConditionalGeneration"],
                                    auto_map={"AutoConfig": "configuration_amrg.AmrgConfig"}, dtype="float32",
                                    transformers_version="5.24.0", use_cache=False, output_attentions=False,
                                    num_labels=2)
    config.save_pretrained(tmp_path)
    assert AmrgConfig.from_pretrained(tmp_path).to_dict() == config.to_dict()
    assert AmrgConfig(_name_or_path="somewhere").name_or_path == "somewhere"
    assert AmrgHopfieldConfig(scaling=2, update_steps_eps=0).scaling == 2.0


# -- memory banks -----------------------------------------------------------------------------------------------------

def _bank(**change) -> dict:
    contents = {"embeddings": torch.randn(4, 32, generator=torch.Generator().manual_seed(0)),
                "disease_ids": [0, 3, 13, 5], "source_ids": ["a", "b", "c", "d"]}
    contents.update(change)
    return contents


BANK_REFUSALS = [
    ({"disease_ids": [0.5, 3, 13, 5]}, "`visual_bank.disease_ids` must be integer observation indices, got [0.5"),
    ({"disease_ids": np.array([0, 3, 12.7, 5])}, "`visual_bank.disease_ids` must be integer observation indices"),
    ({"disease_ids": [True, False, True, False]}, "`visual_bank.disease_ids` must be integer observation indices"),
    ({"disease_ids": [float("nan"), 3, 13, 5]}, "`visual_bank.disease_ids` must be integer observation indices"),
    ({"disease_ids": ["0", "3", "13", "5"]}, "`visual_bank.disease_ids` must be 4 observation indices, got list"),
    ({"embeddings": None}, "`visual_bank.embeddings` is missing"),
    ({"embeddings": "rows"}, "`visual_bank.embeddings` must be a float tensor of shape (rows, 32), got str"),
    ({"embeddings": torch.full((4, 32), 2e4)}, "`visual_bank.embeddings` holds values up to 2e+04 (row 0): rows must "
                                               "lie within +-10000"),
    ({"embeddings": torch.full((4, 32), 1e300, dtype=torch.float64)}, "holds values up to 1e+300"),
]


@pytest.mark.parametrize(("change", "message"), BANK_REFUSALS, ids=[repr(c[0])[:40] for c in BANK_REFUSALS])
def test_bank_refusals(change, message):
    with pytest.raises(ValueError) as error:
        AmrgMemoryBank.from_contents("visual_bank", _bank(**change), 32, 14)
    assert message in str(error.value)


def test_integral_float_ids_are_the_integers():
    bank = AmrgMemoryBank.from_contents("visual_bank", _bank(disease_ids=np.array([0.0, 3.0, 13.0, 5.0])), 32, 14)
    assert bank.disease_ids.dtype == torch.long and bank.disease_ids.tolist() == [0, 3, 13, 5]


def test_a_bank_that_overflows_in_the_projection_is_refused_and_changes_nothing():
    model, _ = build_tiny_model(seed=0)
    model.half()
    with torch.no_grad():
        model.visual_hopfield.key_proj.weight.fill_(100.0)  # fp16 ends at 65504: 1e4 x 100 x 32 overflows
    with pytest.raises(ValueError, match=r"`visual_bank.embeddings` overflow in the Hopfield projection "
                                         r"\(torch.float16\): values up to 1e\+04"):
        model.set_memory_banks(visual=_bank(embeddings=torch.full((4, 32), 1e4)), report=None)
    assert model.visual_bank.size == 0 and model.config.visual_bank["size"] == 0
