import numpy as np
import pytest
import torch
from PIL import Image

from amrg.hub.loading import register_local_classes
from amrg.hub.tokenizer import train_report_tokenizer
from modeling_amrg import modeling_amrg, processing_amrg
from modeling_amrg.processing_amrg_reports import DATASET_NAMES, DATASET_REPORT_CLEANERS, REPORT_CLEANERS
from processing_amrg import AmrgImageProcessor, AmrgProcessor, clean_report_iu_xray, clean_report_mimic_cxr


@pytest.fixture
def image_files(tmp_path, radiograph):
    gray = radiograph(0, (120, 100))
    files = {
        "gray8.png": Image.fromarray(gray),
        "gray16.png": Image.fromarray(radiograph(1, (300, 260), np.uint16)),
        "rgb.jpg": Image.fromarray(np.stack([gray] * 3, axis=-1)),
        "rgba.png": Image.fromarray(np.dstack([gray] * 3 + [np.full_like(gray, 255)])),
        "palette.png": Image.fromarray(gray).convert("P"),
    }
    paths = {}
    for name, image in files.items():
        paths[name] = tmp_path / name
        image.save(paths[name])
    return paths


def test_every_input_kind_gives_the_same_layout(tiny, image_files, radiograph):
    processor = tiny[1]
    size = processor.image_processor.image_size
    inputs = [
        *[str(p) for p in image_files.values()],
        image_files["gray8.png"],  # pathlib.Path
        Image.open(image_files["gray16.png"]),
        Image.open(image_files["rgb.jpg"]),
        radiograph(2, (50, 70)),  # uint8 HW
        radiograph(3, (640, 512), np.uint16),  # uint16 HW, larger than the model input
        radiograph(4, (33, 41), np.float32),  # float HW, odd size
        np.stack([radiograph(5)] * 3, axis=-1),  # HWC
        torch.from_numpy(radiograph(6)).float(),  # tensor
    ]
    out = processor.image_processor(inputs)
    assert out["pixel_values"].shape == (len(inputs), 1, 3, size, size)
    assert out["pixel_values"].dtype == torch.float32 and torch.isfinite(out["pixel_values"]).all()
    assert out["view_mask"].tolist() == [[1]] * len(inputs)


def test_8_and_16_bit_versions_of_one_image_match(tmp_path, radiograph):
    processor = AmrgImageProcessor(image_size=32)
    base = radiograph(7, (64, 64)).astype(np.float64) / 255
    eight = processor.preprocess_view((base * 255).round().astype(np.uint8))
    sixteen = processor.preprocess_view((base * 65535).round().astype(np.uint16))
    torch.testing.assert_close(eight, sixteen, rtol=1e-3, atol=1e-3)
    # grayscale is replicated, then normalised per channel with the ImageNet statistics
    std, mean = torch.tensor(processor.image_std).view(3, 1, 1), torch.tensor(processor.image_mean).view(3, 1, 1)
    unnormalised = eight * std + mean
    torch.testing.assert_close(unnormalised[0], unnormalised[2], rtol=1e-5, atol=1e-5)
    assert float(unnormalised.min()) >= -1e-5 and float(unnormalised.max()) <= 1 + 1e-5


def test_studies_with_one_or_two_views(tiny, radiograph):
    processor = tiny[1]
    single = processor.format_and_preprocess_report_input(radiograph(0))
    pair = processor.format_and_preprocess_report_input(radiograph(0), lateral=radiograph(1))
    assert single["pixel_values"].shape[:2] == (1, 1) and pair["pixel_values"].shape[:2] == (1, 2)
    mixed = processor(images=[[radiograph(0), radiograph(1)], [radiograph(2)]])
    assert mixed["view_mask"].tolist() == [[1, 1], [1, 0]]
    assert torch.equal(mixed["pixel_values"][1, 1], torch.zeros_like(mixed["pixel_values"][1, 1]))
    with pytest.raises(ValueError, match="study 0 has 3 views"):
        processor(images=[[radiograph(0)] * 3])


def test_bad_files_raise_errors_that_name_them(tmp_path, image_files):
    processor = AmrgImageProcessor(image_size=32)
    empty = tmp_path / "empty.png"
    empty.touch()
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(image_files["gray16.png"].read_bytes()[:200])
    for path, message in [
        (tmp_path / "missing.png", "not found"),
        (empty, "empty"),
        (text, "cannot read"),
        (truncated, "cannot read"),
    ]:
        with pytest.raises((FileNotFoundError, ValueError), match=message) as error:
            processor([str(path)])
        assert str(path) in str(error.value)
    with pytest.raises(ValueError, match="NaN"):
        processor(np.full((8, 8), np.nan))
    with pytest.raises(ValueError, match="shape"):
        processor(np.zeros((2, 8, 8, 3)))
    with pytest.raises(TypeError, match="file path, PIL image"):
        processor([12])


def test_prompt_layout_labels_and_padding(tiny, radiograph):
    processor = tiny[1]
    tokenizer = processor.tokenizer
    n = processor.num_image_tokens
    generation = processor(images=[radiograph(0), radiograph(1)], text=["short.", "a much longer instruction here."])
    ids = generation["input_ids"]
    assert ((ids == processor.image_token_id).sum(dim=1) == n).all()
    assert "labels" not in generation
    assert generation["attention_mask"][0, 0] == 0 and generation["attention_mask"][0, -1] == 1  # left padding
    reports = ["the heart is normal.", "there is a small left pleural effusion and mild edema."]
    training = processor(images=[radiograph(0), radiograph(1)], reports=reports)
    ids, labels, mask = training["input_ids"], training["labels"], training["attention_mask"]
    assert mask[0, 0] == 1 and mask[0, -1] == 0  # right padding
    for row, report in enumerate(reports):
        target = tokenizer(report, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        kept = labels[row][labels[row] != -100].tolist()
        assert kept == target
        prompt_length = len(processor.prompt_ids())
        assert (labels[row, :prompt_length] == -100).all()
        assert ids[row, 0] == tokenizer.bos_token_id
    truncated = processor(images=[radiograph(0)], reports=[reports[1]], max_report_tokens=3)
    assert int((truncated["labels"] != -100).sum()) == 4
    with pytest.raises(ValueError, match="one string per study"):
        processor(images=[radiograph(0), radiograph(1)], reports=["only one"])
    with pytest.raises(ValueError, match="at least one of"):
        processor()


def test_decoding_strips_prompt_and_special_tokens(tiny, radiograph):
    processor = tiny[1]
    tokenizer = processor.tokenizer
    inputs = processor(images=[radiograph(0)])
    new = tokenizer("the heart is normal.", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    sequences = torch.cat([inputs["input_ids"], torch.tensor([new])], dim=1)
    text = processor.post_process_report_generation(sequences, inputs["input_ids"].shape[1])
    assert text == ["the heart is normal."]
    assert processor.post_process_report_generation(sequences, inputs["input_ids"].shape[1], clean="iu_xray") == [
        "the heart is normal ."
    ]


def test_processor_save_and_load(tmp_path, tiny):
    processor = tiny[1]
    processor.save_pretrained(tmp_path)
    register_local_classes()
    loaded = AmrgProcessor.from_pretrained(tmp_path, trust_remote_code=False)
    assert loaded.num_image_tokens == processor.num_image_tokens
    assert loaded.prompt_template == processor.prompt_template
    assert loaded.image_processor.to_dict() == processor.image_processor.to_dict()
    assert loaded.prompt_ids() == processor.prompt_ids()


def test_chat_template_renders_the_prompt_template(tmp_path, tiny):
    processor = tiny[1]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the film."}]}]
    expected = processor.prompt_template.format(image=processor.image_token, prompt="Describe the film.")
    assert processor.apply_chat_template(messages, tokenize=False) == expected
    # The ids are the template's text around the placeholders, each side tokenized on its own.
    before, after = processor.prompt_template.format(image="\0", prompt="Describe the film.").split("\0")
    encode = lambda text: processor.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert processor.prompt_ids("Describe the film.") == ([processor.tokenizer.bos_token_id] + encode(before)
                                                          + [processor.image_token_id] * processor.num_image_tokens
                                                          + encode(after))
    # The template travels with the processor; a user's own template changes the prompt.
    processor.save_pretrained(tmp_path)
    register_local_classes()
    assert AmrgProcessor.from_pretrained(tmp_path).chat_template == processor.chat_template
    custom = AmrgProcessor(processor.image_processor, processor.tokenizer, processor.num_image_tokens,
                           chat_template="{{ messages[0]['content'][1]['text'] }} <image> Report:")
    assert custom.render_prompt("Look.") == "Look. <image> Report:"
    assert custom.prompt_ids("Look.").count(custom.image_token_id) == custom.num_image_tokens
    no_image = AmrgProcessor(processor.image_processor, processor.tokenizer, processor.num_image_tokens,
                             chat_template="{{ messages[0]['content'][1]['text'] }}")
    with pytest.raises(ValueError, match="image token"):
        no_image.prompt_ids()


def test_processor_rejects_a_tokenizer_without_image_token(tiny):
    tokenizer = train_report_tokenizer(["the lungs are clear."] * 10, vocab_size=300)
    tokenizer_without = type(tokenizer)(tokenizer_object=tokenizer.backend_tokenizer, unk_token="<unk>")
    with pytest.raises(ValueError, match="image token"):
        AmrgProcessor(tiny[1].image_processor, tokenizer_without, num_image_tokens=4, image_token="<img>")


def test_processor_needs_the_models_num_image_tokens(tiny):
    # No default fits every model; a saved processor carries the value in processor_config.json, so
    # `from_pretrained` needs no argument (test_processor_save_and_load, test_remote_code).
    processor = tiny[1]
    with pytest.raises(ValueError, match=r"`num_image_tokens` is required: .*`config.num_image_tokens`"):
        AmrgProcessor(processor.image_processor, processor.tokenizer)
    with pytest.raises(ValueError, match="`num_image_tokens` must be a positive integer"):
        AmrgProcessor(processor.image_processor, processor.tokenizer, num_image_tokens=0)


def test_dataset_names_and_their_cleaners():
    assert DATASET_NAMES == ("iu_xray", "mimic_cxr", "chexpert_plus")
    assert set(DATASET_REPORT_CLEANERS.values()) <= set(REPORT_CLEANERS)
    assert DATASET_REPORT_CLEANERS["chexpert_plus"] == "mimic_cxr"


def test_ignore_index_is_defined_once():
    assert processing_amrg.IGNORE_INDEX == -100
    assert modeling_amrg.IGNORE_INDEX is processing_amrg.IGNORE_INDEX


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("The heart is normal. No effusion!", "the heart is normal . no effusion ."),
        ("1. No acute disease. 2. Heart size normal..  ", "no acute disease . heart size normal ."),
        ("Lungs are clear, no pneumothorax.\nXXXX is seen (T12).",
         "lungs are clear no pneumothorax . xxxx is seen t12 ."),
        ("Heart size normal; lungs clear: no edema/effusion.", "heart size normal lungs clear no edemaeffusion ."),
        ("", ""),
        ("...", ""),
        ("No x-ray evidence of fracture", "no x-ray evidence of fracture ."),
    ],
)
def test_iu_xray_cleaning_is_pinned(raw, clean):
    assert clean_report_iu_xray(raw) == clean


def test_mimic_cxr_cleaning_is_pinned():
    raw = "FINDINGS:\n PA and lateral views of the chest. ___ is seen.\n1. No pneumonia.\r\n2. Small effusion."
    expected = "findings pa and lateral views of the chest . is seen . no pneumonia . small effusion ."
    assert clean_report_mimic_cxr(raw) == expected
    with pytest.raises(TypeError, match="report"):
        clean_report_mimic_cxr(None)


def test_normalisation_comes_from_timms_data_config():
    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg

    from amrg.hub.presets import vision_normalisation

    # A checkpoint normalised with other statistics than ImageNet's: its processor must use them.
    clip = resolve_data_config(pretrained_cfg=get_pretrained_cfg("vit_base_patch16_clip_224").to_dict())
    assert clip["mean"] != (0.485, 0.456, 0.406)
    assert vision_normalisation("vit_base_patch16_clip_224") == {"image_mean": clip["mean"], "image_std": clip["std"]}
    assert vision_normalisation("swin_base_patch4_window7_224")["image_mean"] == (0.485, 0.456, 0.406)
    assert vision_normalisation("not_a_timm_architecture") == {}


def test_a_jpegs_exif_orientation_is_applied_as_datasets_does(tmp_path, radiograph):
    import datasets

    from modeling_amrg.image_processing_amrg import load_grayscale

    picture = Image.fromarray(radiograph(5, (40, 30)))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    picture.save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    read = load_grayscale(tmp_path / "rotated.jpg")
    assert read.shape == (30, 40)
    decoded = datasets.Dataset.from_dict({"image": [str(tmp_path / "rotated.jpg")]}).cast_column(
        "image", datasets.Image())[0]["image"]
    np.testing.assert_array_equal(read, load_grayscale(decoded))


def test_apply_chat_template_tokenizes_to_the_processors_prompt(tiny, radiograph, tmp_path):
    processor = tiny[1]
    Image.fromarray(radiograph(0)).save(tmp_path / "frontal.png")
    chat = [{"role": "user", "content": [{"type": "image", "path": str(tmp_path / "frontal.png")},
                                         {"type": "text", "text": "Describe the film."}]}]
    inputs = processor.apply_chat_template(chat, tokenize=True, return_dict=True)
    expected = processor(images=[str(tmp_path / "frontal.png")], text="Describe the film.")
    assert inputs["input_ids"].tolist() == expected["input_ids"].tolist()
    assert torch.equal(inputs["pixel_values"], expected["pixel_values"])
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the film."}]}]
    rendered = processor.apply_chat_template(messages, tokenize=False)
    # transformers' tokenize=True path renders, then calls the processor with the rendered text as `text`.
    assert processor(images=[radiograph(0)], text=rendered)["input_ids"].tolist() == \
        processor(images=[radiograph(0)], text="Describe the film.")["input_ids"].tolist()
    with pytest.raises(Exception, match="needs a user message"):
        processor.apply_chat_template([{"role": "assistant", "content": "x"}], tokenize=False)


def test_multi_frame_images_are_refused_and_a_bare_dicom_name_is_hinted(tmp_path, radiograph):
    from modeling_amrg.image_processing_amrg import load_grayscale

    pages = [Image.fromarray(radiograph(seed, (40, 30))) for seed in (1, 2)]
    pages[0].save(tmp_path / "two.tiff", save_all=True, append_images=pages[1:])
    with pytest.raises(ValueError, match=r"two\.tiff: the image has 2 frames"):
        load_grayscale(tmp_path / "two.tiff")
    (tmp_path / "scan").write_bytes(b"\x08\x00\x05\x00CS\x00\x00" + b"\x00" * 64)
    with pytest.raises(ValueError, match=r"scan: .*only when its name ends in \.dcm"):
        load_grayscale(tmp_path / "scan")
