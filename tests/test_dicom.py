"""DICOM input: files built with pydicom read as the same picture saved as PNG, with the modality LUT, the window and
MONOCHROME1 applied; every file that cannot be read is refused naming it; the processor, a saved model folder (remote
code, in a fresh process) and `amrg data` accept `.dcm` files."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import BLOCK_REPOSITORY, random_banks, synthetic_radiograph
from PIL import Image
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space, get_decoder
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from transformers.dynamic_module_utils import get_imports

from amrg.app.report_html import write_report_html
from amrg.cli import main, train_main
from amrg.data.batching import Stage1Collator, Stage2Collator, make_loader
from amrg.data.loading import DataError, load_r2gen_dataset
from amrg.data.saved_dataset import load_saved_dataset
from amrg.hub.export import save_model_folder
from amrg.memory.banks import build_visual_bank
from amrg.memory.mining import read_regions
from modeling_amrg import AmrgForDiseaseClassification, image_processing_amrg, image_processing_amrg_dicom
from modeling_amrg.image_processing_amrg import load_grayscale
from modeling_amrg.image_processing_amrg_dicom import DicomDependencyError, check_dicom_file, read_dicom


def write_dicom(path, pixels: np.ndarray, photometric: str = "MONOCHROME2", frames: int | None = None,
                syntax=ExplicitVRLittleEndian, preamble: bool = True, **attributes) -> os.PathLike:
    """A DX image file (PS3.10, explicit VR little endian unless `syntax` says otherwise) holding `pixels`:
    (rows, columns), (frames, rows, columns) or (rows, columns, 3) for colour; `attributes` set on the data set
    (e.g. RescaleSlope, WindowCenter); `preamble=False` writes a bare data set (no preamble, no file meta)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    colour = photometric in ("RGB", "YBR_FULL")
    ds.Rows, ds.Columns = pixels.shape[:2] if colour else pixels.shape[-2:]
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = pixels.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(pixels.dtype.kind == "i")
    if frames is not None:
        ds.NumberOfFrames = frames
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.tobytes()
    if not preamble:
        bare = Dataset()
        bare.update(ds)
        bare.save_as(path, implicit_vr=False, little_endian=True)
        return path
    if syntax.is_compressed:
        # Fake encapsulated frames: a file of that transfer syntax whose data no decoder can decode.
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(60)])
        ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def picture(seed: int = 0, shape: tuple[int, int] = (40, 36), top: int = 255) -> np.ndarray:
    """A radiograph-like picture with values 0..top (both reached)."""
    image = synthetic_radiograph(seed, shape, np.float32)
    image = (image - image.min()) / (image.max() - image.min())
    return np.round(image * top)


def test_8_and_16_bit_monochrome2_read_as_the_same_picture_as_png(tmp_path):
    pixels = picture().astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "view.png")
    expected = load_grayscale(tmp_path / "view.png")
    np.testing.assert_array_equal(load_grayscale(write_dicom(tmp_path / "view8.dcm", pixels)), expected)
    deep = picture(top=4000).astype(np.uint16)  # 12-bit values in 16-bit words, as CR/DX detectors store them
    np.testing.assert_allclose(load_grayscale(write_dicom(tmp_path / "view16.dcm", deep, BitsStored=12, HighBit=11)),
                               deep / 4000.0, atol=1e-6)
    assert read_dicom(tmp_path / "view16.dcm").dtype == np.float32


def test_dicom_is_found_by_content_and_bare_data_sets_by_the_dcm_suffix(tmp_path):
    pixels = picture().astype(np.uint8)
    expected = pixels / 255.0
    # The "DICM" marker at byte 128 makes a file DICOM whatever its name.
    np.testing.assert_allclose(load_grayscale(write_dicom(tmp_path / "IM0001", pixels)), expected, atol=1e-6)
    # A bare data set (no preamble) is read when named .dcm, and only then.
    np.testing.assert_allclose(load_grayscale(write_dicom(tmp_path / "bare.DCM", pixels, preamble=False)), expected,
                               atol=1e-6)
    with pytest.raises(ValueError, match="cannot read image file"):
        load_grayscale(write_dicom(tmp_path / "bare.img", pixels, preamble=False))


def test_monochrome1_reads_as_the_inverted_monochrome2_image(tmp_path):
    for dtype, top in ((np.uint8, 255), (np.uint16, 4000)):
        pixels = picture(1, top=top).astype(dtype)
        mono2 = load_grayscale(write_dicom(tmp_path / "mono2.dcm", pixels, "MONOCHROME2"))
        mono1 = load_grayscale(write_dicom(tmp_path / "mono1.dcm", pixels, "MONOCHROME1"))
        np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)
        assert not np.allclose(mono1, mono2)


def test_rescale_slope_and_intercept_are_applied_before_the_window(tmp_path):
    # Modality values 2 * stored - 1000 in [-1000, 1000]; the window [-250, 250] is in modality units, so reading
    # it against the stored values (rescale ignored) gives another picture.
    stored = picture(2, top=1000).astype(np.uint16)
    window = {"WindowCenter": 0, "WindowWidth": 500}
    rescaled = load_grayscale(write_dicom(tmp_path / "rescaled.dcm", stored, RescaleSlope=2, RescaleIntercept=-1000,
                                          RescaleType="US", **window))
    prescaled = (2 * stored.astype(np.int16) - 1000).astype(np.int16)
    expected = load_grayscale(write_dicom(tmp_path / "prescaled.dcm", prescaled, **window))
    np.testing.assert_allclose(rescaled, expected, atol=1e-6)
    ignoring_rescale = load_grayscale(write_dicom(tmp_path / "ignored.dcm", stored, **window))
    assert np.abs(rescaled - ignoring_rescale).max() > 0.5
    # Without a window, the modality values keep the picture (min-max scaling undoes a linear rescale).
    np.testing.assert_allclose(
        load_grayscale(write_dicom(tmp_path / "plain.dcm", stored, RescaleSlope=2, RescaleIntercept=-1000)),
        stored / 1000.0, atol=1e-6)


def test_the_first_window_is_applied_and_values_outside_it_saturate(tmp_path):
    ramp = np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (20, 1))  # 20 x 256, 12-bit values
    first = {"WindowCenter": 2048, "WindowWidth": 1024}
    read = load_grayscale(write_dicom(tmp_path / "window.dcm", ramp, BitsStored=12, HighBit=11, **first))
    # pydicom's LINEAR window (PS3.3 C.11.2.1.2.1): 0 up to c - 0.5 - (w - 1) / 2, 1 above c - 0.5 + (w - 1) / 2.
    below, above = ramp <= 1536, ramp > 2559
    assert below.any() and above.any()
    assert (read[below] == 0).all() and (read[above] == 1).all()
    inside = read[~below & ~above]
    assert 0 < inside.min() and inside.max() < 1 and (np.diff(read[0]) >= 0).all()
    np.testing.assert_allclose(read[0][~below[0] & ~above[0]], (ramp[0][~below[0] & ~above[0]] - 1536) / 1023,
                               atol=1e-5)
    # Several windows: the first is the file's recommendation.
    several = load_grayscale(write_dicom(tmp_path / "windows.dcm", ramp, BitsStored=12, HighBit=11,
                                         WindowCenter=[2048, 500], WindowWidth=[1024, 200]))
    np.testing.assert_array_equal(several, read)


def test_colour_is_read_as_luminance_like_an_rgb_png(tmp_path):
    gray = picture(3).astype(np.uint8)
    rgb = np.stack([gray, np.roll(gray, 3, axis=1), 255 - gray], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    expected = load_grayscale(tmp_path / "rgb.png")
    np.testing.assert_array_equal(load_grayscale(write_dicom(tmp_path / "rgb.dcm", rgb, "RGB")), expected)
    # YBR_FULL (as JPEG-compressed colour is stored): pydicom converts it to RGB first (8-bit rounding both ways).
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    np.testing.assert_allclose(load_grayscale(write_dicom(tmp_path / "ybr.dcm", ybr, "YBR_FULL")), expected,
                               atol=2 / 255)


def _no_pixel_data(path):
    write_dicom(path, picture().astype(np.uint8))
    from pydicom import dcmread

    ds = dcmread(path)
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)


def _truncated(path):
    write_dicom(path, picture().astype(np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[:-200])


REFUSED = {
    "multi-frame": (lambda p: write_dicom(p, np.stack([picture(0), picture(1)]).astype(np.uint8), frames=2),
                    r"has 2 frames; one frame per view is expected"),
    "compressed, no decoder": (lambda p: write_dicom(p, picture().astype(np.uint8), syntax=JPEGLosslessSV1),
                               r"compressed with JPEG Lossless.*\(transfer syntax 1\.2\.840\.10008\.1\.2\.4\.70\) and "
                               r"no decoder plugin .*pylibjpeg.*gdcm"),
    "compressed, undecodable": (lambda p: write_dicom(p, picture().astype(np.uint8), syntax=JPEG2000Lossless),
                                r"cannot decode its pixel data \(JPEG 2000 .*transfer syntax "
                                r"1\.2\.840\.10008\.1\.2\.4\.90\)"),
    "text named .dcm": (lambda p: p.write_text("patient list, not an image\n" * 20),
                        r"not a DICOM file: no 'DICM' marker at byte 128"),
    "png named .dcm": (lambda p: Image.fromarray(picture().astype(np.uint8)).save(p, format="PNG"),
                       r"not a (readable )?DICOM file"),
    "no pixel data": (_no_pixel_data, r"holds no pixel data"),
    "palette colour": (lambda p: write_dicom(p, picture().astype(np.uint8), "PALETTE COLOR"),
                       r"photometric interpretation 'PALETTE COLOR' is not supported"),
    "truncated": (_truncated, r"pixel data is truncated"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_unreadable_dicom_files_are_refused_naming_the_file(tmp_path, case):
    make, reason = REFUSED[case]
    if case == "compressed, no decoder" and get_decoder(JPEGLosslessSV1).is_available:
        pytest.skip("a JPEG Lossless decoder plugin is installed here")
    if case == "compressed, undecodable" and not get_decoder(JPEG2000Lossless).is_available:
        pytest.skip("no JPEG 2000 decoder (Pillow with OpenJPEG, pylibjpeg, GDCM) is installed here")
    path = tmp_path / "view.dcm"
    make(path)
    with pytest.raises(ValueError, match=reason) as raised:
        load_grayscale(path)
    assert str(raised.value).startswith(f"{path}: ")
    # The same refusal from the header alone (what `amrg data` checks), except where only decoding can tell.
    if case != "compressed, undecodable":
        assert str(raised.value) == f"{path}: {check_dicom_file(path)}"
    else:
        assert check_dicom_file(path) is None


def test_without_pydicom_only_dicom_files_need_it(tmp_path, monkeypatch):
    pixels = picture().astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "view.png")
    dcm = write_dicom(tmp_path / "view.dcm", pixels)
    for name in [name for name in sys.modules if name == "pydicom" or name.startswith("pydicom.")]:
        monkeypatch.setitem(sys.modules, name, None)  # `import pydicom` now raises ImportError
    assert load_grayscale(tmp_path / "view.png").shape == pixels.shape
    with pytest.raises(DicomDependencyError, match="pip install pydicom") as raised:
        load_grayscale(dcm)
    assert str(raised.value).startswith(str(dcm))
    assert isinstance(raised.value, ImportError) and isinstance(raised.value, ValueError)
    # transformers refuses to load remote code whose imports are missing: pydicom must not count as one.
    for module in (image_processing_amrg, image_processing_amrg_dicom):
        assert "pydicom" not in get_imports(module.__file__)


def test_the_processor_reads_a_dicom_study_as_the_same_study_in_png(tiny, tmp_path):
    processor = tiny[1]
    frontal, lateral = picture(4, (120, 100)).astype(np.uint8), picture(5, (90, 110)).astype(np.uint8)
    pngs = []
    for name, pixels in (("frontal", frontal), ("lateral", lateral)):
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")
        write_dicom(tmp_path / f"{name}.dcm", pixels)
        pngs.append(str(tmp_path / f"{name}.png"))
    dicoms = [str(tmp_path / "frontal.dcm"), str(tmp_path / "lateral.dcm")]
    from_dicom, from_png = processor(images=[dicoms, dicoms[:1]]), processor(images=[pngs, pngs[:1]])
    torch.testing.assert_close(from_dicom["pixel_values"], from_png["pixel_values"], atol=1e-6, rtol=0)
    assert torch.equal(from_dicom["view_mask"], from_png["view_mask"])
    assert torch.equal(from_dicom["input_ids"], from_png["input_ids"])
    with pytest.raises(ValueError, match="frames"):
        processor.image_processor([write_dicom(tmp_path / "cine.dcm", np.stack([frontal] * 3), frames=3)])


LOADER = BLOCK_REPOSITORY + textwrap.dedent(
    """
    import numpy as np
    from transformers import AutoImageProcessor

    folder, dicom, output = sys.argv[1], sys.argv[2], sys.argv[3]
    image_processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    np.save(output, image_processor([dicom])["pixel_values"].numpy())
    """
)


def test_a_saved_model_folder_ships_the_dicom_reader_and_generates_from_dicom(tiny, tmp_path, capsys):
    model, processor = tiny
    folder = save_model_folder(model, processor, tmp_path / "model")
    assert {"image_processing_amrg.py", "image_processing_amrg_dicom.py"} <= set(os.listdir(folder))
    # `amrg generate`: a study in DICOM gets the report and probabilities of the same study in PNG.
    capsys.readouterr()
    outputs = []
    for suffix in ("png", "dcm"):
        views = []
        for name, seed in (("frontal", 8), ("lateral", 9)):
            pixels, path = picture(seed, (90, 110)).astype(np.uint8), tmp_path / f"{name}.{suffix}"
            write_dicom(path, pixels) if suffix == "dcm" else Image.fromarray(pixels).save(path)
            views.append(str(path))
        assert main(["generate", "--model", str(folder), *views, "--json", "--max-new-tokens", "4"]) == 0
        out = capsys.readouterr().out
        outputs.append(json.loads(out[out.index("{"):]))  # after any notice a library printed on first use
    assert outputs[0] == outputs[1]
    cine = write_dicom(tmp_path / "cine.dcm", np.stack([picture(0), picture(1)]).astype(np.uint8), frames=2)
    assert main(["generate", "--model", str(folder), str(cine)]) == 2
    error = capsys.readouterr().err.strip()
    assert f"{cine}: the DICOM file has 2 frames" in error and len(error.splitlines()) == 1
    dicom = write_dicom(tmp_path / "view.dcm", picture(6, (64, 60), top=4000).astype(np.uint16),
                        "MONOCHROME1", RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=2000, WindowWidth=6000)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run([sys.executable, "-c", LOADER, str(folder), str(dicom), str(tmp_path / "pixels.npy")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = processor.image_processor([str(dicom)])["pixel_values"].numpy()
    np.testing.assert_array_equal(np.load(tmp_path / "pixels.npy"), expected)


def _dicom_corpus(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    reports = {"s1": "The heart is enlarged. No pneumothorax.", "s2": "Lungs are clear.", "s3": "Small effusion."}
    annotation = {"train": [], "val": [], "test": []}
    for index, (study, split) in enumerate(zip(reports, ("train", "train", "val"))):
        for view in (0, 1):
            write_dicom(root / f"{study}_{view}.dcm", picture(index * 2 + view).astype(np.uint8))
        annotation[split].append({"id": study, "report": reports[study],
                                  "image_path": [f"{study}_0.dcm", f"{study}_1.dcm"]})
    (tmp_path / "annotation.json").write_text(json.dumps(annotation))
    return root, tmp_path / "annotation.json"


def test_the_data_command_accepts_dicom_studies_and_refuses_bad_ones(tmp_path, capsys):
    root, annotation = _dicom_corpus(tmp_path)
    output = tmp_path / "saved"
    assert main(["data", "--annotation", str(annotation), "--image-root", str(root), "--labels", "none",
                 "--output", str(output)]) == 0
    loaded = load_saved_dataset(output)
    assert loaded["train"]["image_paths"][0] == [str(root / "s1_0.dcm"), str(root / "s1_1.dcm")]
    assert len(loaded["val"]) == 1
    np.testing.assert_array_equal(load_grayscale(loaded["val"]["image_paths"][0][1]), picture(5) / 255.0)

    write_dicom(root / "s2_1.dcm", np.stack([picture(0), picture(1)]).astype(np.uint8), frames=2)
    with pytest.raises(DataError) as raised:
        load_r2gen_dataset(annotation, root, labels=None, cache_dir=tmp_path / "cache")
    assert f"{root / 's2_1.dcm'} (the DICOM file has 2 frames" in str(raised.value)
    capsys.readouterr()
    assert main(["data", "--annotation", str(annotation), "--image-root", str(root), "--labels", "none",
                 "--output", str(tmp_path / "bad")]) == 2
    error = capsys.readouterr().err
    assert "image files of split 'train' cannot be read" in error and "s2_1.dcm (the DICOM file has 2 frames" in error



# -- training from DICOM: the steps read `image_paths` with the processor, never the PIL-decoded `images` ------------

TWIN_REPORTS = {
    "t1": "There is a small right pleural effusion.", "t2": "The heart is enlarged. Cardiomegaly.",
    "t3": "Lungs are clear. No pneumothorax.", "t4": "Mild pulmonary edema.",
    "t5": "Right lower lobe consolidation.", "v1": "Cardiomegaly with a left pleural effusion.",
    "v2": "No acute cardiopulmonary process.", "x1": "Small left apical pneumothorax.",
}


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """Eight studies (5 train, 2 val, 1 test; two views, 8- and 16-bit) written both as PNG and as DICOM holding the
    same pixels, with one R2Gen annotation per format: `(folder, {"png": annotation, "dcm": annotation})`."""
    folder = tmp_path_factory.mktemp("twins")
    root = folder / "images"
    root.mkdir()
    annotations = {suffix: {"train": [], "val": [], "test": []} for suffix in ("png", "dcm")}
    for index, (study, report) in enumerate(TWIN_REPORTS.items()):
        split = {"t": "train", "v": "val", "x": "test"}[study[0]]
        for view in (0, 1):
            deep = view == 1  # the lateral as 12-bit values in 16-bit words, the frontal as 8 bits
            pixels = picture(10 + 2 * index + view, (48 + 4 * view, 44), top=4000 if deep else 255)
            pixels = pixels.astype(np.uint16 if deep else np.uint8)
            Image.fromarray(pixels).save(root / f"{study}_{view}.png")
            write_dicom(root / f"{study}_{view}.dcm", pixels)
        for suffix, annotation in annotations.items():
            annotation[split].append({"id": study, "report": report,
                                      "image_path": [f"{study}_0.{suffix}", f"{study}_1.{suffix}"]})
    paths = {}
    for suffix, annotation in annotations.items():
        paths[suffix] = folder / f"annotation_{suffix}.json"
        paths[suffix].write_text(json.dumps(annotation))
    return folder, paths


def _stage1_losses(output) -> list[float]:
    records = [json.loads(line) for line in (output / "stage1_log.jsonl").read_text().splitlines()]
    return [record["loss"] for record in records if "loss" in record]


def test_a_dicom_dataset_trains_stage1_as_the_same_pictures_in_png(twins, tmp_path, monkeypatch):
    folder, annotations = twins
    common = ["--preset", "tiny", "--epochs", "1", "--batch-size", "4", "--seed", "0"]
    losses = {}
    for suffix in ("png", "dcm"):
        output = tmp_path / f"stage1_{suffix}"
        assert train_main(["stage1", "--annotation", str(annotations[suffix]), "--image-root",
                           str(folder / "images"), "--output-dir", str(output), *common]) == 0
        losses[suffix] = _stage1_losses(output)
        assert (output / "best" / "model.safetensors").is_file()
    assert len(losses["dcm"]) == 2 and all(np.isfinite(losses["dcm"]))  # 5 studies in batches of 4
    assert losses["dcm"] == losses["png"]  # the same pixels: the same losses, bit for bit
    # A dataset saved by `amrg data`, its images moved and their new root given relative to the working directory:
    # the loaded `image_paths` are absolute, and training gives the same losses again.
    assert main(["data", "--annotation", str(annotations["dcm"]), "--image-root", str(folder / "images"),
                 "--output", str(tmp_path / "saved")]) == 0
    shutil.copytree(folder / "images", tmp_path / "moved")
    monkeypatch.chdir(tmp_path)
    loaded = load_saved_dataset("saved", image_root="moved")
    first = loaded["train"]["image_paths"][0]
    assert first == [str(tmp_path.resolve() / "moved" / f"t1_{view}.dcm") for view in (0, 1)]
    assert train_main(["stage1", "--dataset-dir", "saved", "--image-root", "moved", "--output-dir",
                       str(tmp_path / "stage1_saved"), *common]) == 0
    assert _stage1_losses(tmp_path / "stage1_saved") == losses["dcm"]


def test_mining_the_visual_bank_and_the_report_page_read_dicom_views(twins, tiny, tmp_path):
    folder, annotations = twins
    torch.manual_seed(0)
    stage1 = AmrgForDiseaseClassification(tiny[0].config).eval()
    stage1.save_pretrained(tmp_path / "stage1")
    regions = {}
    for suffix in ("png", "dcm"):
        output = tmp_path / f"regions_{suffix}.jsonl"
        assert train_main(["mine", "--stage1", str(tmp_path / "stage1"), "--annotation", str(annotations[suffix]),
                           "--image-root", str(folder / "images"), "--tau", "0", "--top-k", "2", "--patch-size",
                           "8", "--device", "cpu", "--output", str(output)]) == 0
        regions[suffix] = read_regions(output)[0]
    assert regions["dcm"] and regions["dcm"] == regions["png"]
    model = copy.deepcopy(tiny[0])
    model.set_memory_banks(**random_banks(model.config))
    banks, pages = {}, {}
    for suffix in ("png", "dcm"):
        dataset = load_r2gen_dataset(annotations[suffix], folder / "images", cache_dir=tmp_path / f"cache_{suffix}")
        banks[suffix] = build_visual_bank(stage1, dataset["train"], regions["dcm"], patch_size=8,
                                          max_rows_per_disease=3)
        predictions = tmp_path / f"predictions_{suffix}.jsonl"
        predictions.write_text("".join(json.dumps({"id": study, "prediction": "no effusion."}) + "\n"
                                       for study in dataset["val"]["id"]))
        pages[suffix] = write_report_html(tmp_path / f"report_{suffix}.html", model, tiny[1], stage1,
                                          dataset["val"], {}, predictions, n_studies=2).read_text()
    assert banks["dcm"]["source_ids"] == banks["png"]["source_ids"] and banks["dcm"]["source_ids"]
    assert torch.equal(banks["dcm"]["embeddings"], banks["png"]["embeddings"])
    assert pages["dcm"].count("<section>") == 2 and pages["dcm"] == pages["png"]


def test_batches_from_image_paths_equal_batches_from_the_decoded_images(tiny, tmp_path):
    """What the training steps read changed from the `images` column (PIL images decoded by `datasets`) to the
    `image_paths` column: for PNG and JPEG studies both give the same batches, bit for bit."""
    root = tmp_path / "images"
    root.mkdir()
    gray = picture(20, (50, 46)).astype(np.uint8)
    views = {  # 8-bit, 16-bit, colour, colour with alpha, palette, grey with alpha, JPEG
        "gray.png": Image.fromarray(gray),
        "deep.png": Image.fromarray(picture(21, (40, 52), top=60000).astype(np.uint16)),
        "rgb.png": Image.fromarray(np.stack([gray, np.roll(gray, 5, axis=0), 255 - gray], axis=-1)),
        "rgba.png": Image.fromarray(np.stack([gray, gray // 2, gray, np.full_like(gray, 200)], axis=-1)),
        "palette.png": Image.fromarray(gray).convert("P"),
        "la.png": Image.fromarray(gray).convert("LA"),
        "photo.jpg": Image.fromarray(picture(22, (64, 60)).astype(np.uint8)),
    }
    for name, image in views.items():
        image.save(root / name)
    names = list(views)
    annotation = {"train": [{"id": f"p{i}", "report": "The lungs are clear.",
                             "image_path": [names[i], names[(i + 3) % len(names)]][: 1 + i % 2]}
                            for i in range(len(names))], "val": [], "test": []}
    (tmp_path / "annotation.json").write_text(json.dumps(annotation))
    rows = load_r2gen_dataset(tmp_path / "annotation.json", root, cache_dir=tmp_path / "cache")["train"]
    decoded = [row["images"] for row in rows]  # the PIL images `datasets` decodes
    assert {image.mode for study in decoded for image in study} >= {"L", "RGB", "RGBA", "P", "LA"}
    _, processor = tiny
    for collate, reference in (
            (Stage1Collator(processor.image_processor), processor.image_processor(decoded)),
            (Stage2Collator(processor, 40), processor(images=decoded, reports=list(rows["report_clean"]),
                                                      max_report_tokens=40))):
        loader, _ = make_loader(rows, collate, batch_size=len(rows), seed=0, shuffle=False)
        (batch,) = list(loader)
        for key in ("pixel_values", "view_mask") + (("input_ids", "labels") if "input_ids" in batch else ()):
            assert torch.equal(batch[key], reference[key]), key
    # A dataset without file paths is refused, naming the column the steps read.
    with pytest.raises(ValueError, match="no `image_paths` column"):
        make_loader(rows.remove_columns("image_paths"), Stage1Collator(processor.image_processor), 2, 0, False)


@pytest.mark.parametrize("kind, suffix, save", [
    ("PNG", ".png", lambda image, path: image.save(path, format="PNG")),
    ("JPEG", ".jpg", lambda image, path: image.save(path, format="JPEG")),
    ("TIFF", ".tif", lambda image, path: image.save(path, format="TIFF")),
])
def test_an_image_named_dcm_is_refused_saying_what_it_is_and_what_to_rename_it_to(tmp_path, kind, suffix, save):
    path = tmp_path / "chest.dcm"
    save(Image.fromarray(picture().astype(np.uint8)), path)
    with pytest.raises(ValueError) as raised:
        load_grayscale(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: not a DICOM file: it is a {kind} image"), message
    assert f"rename it to '{suffix}'" in message
    # `amrg data` checks the header with the same words; renamed as told, the file reads.
    assert message == f"{path}: {check_dicom_file(path)}"
    renamed = path.rename(tmp_path / f"chest{suffix}")
    assert load_grayscale(renamed).shape == picture().shape


def test_a_decoder_failure_names_the_file_not_an_in_memory_buffer(tmp_path):
    if not get_decoder(JPEGBaseline8Bit).is_available:
        pytest.skip("no JPEG Baseline decoder is installed here")
    from pydicom import dcmread

    # JPEG Baseline, which Pillow decodes, holding a frame Pillow cannot identify: its error names the BytesIO it
    # was handed ("cannot identify image file <_io.BytesIO object at 0x...>").
    path = write_dicom(tmp_path / "view.dcm", picture().astype(np.uint8), syntax=JPEGBaseline8Bit)
    dataset = dcmread(path)
    dataset.PixelData = encapsulate([b"\xff\xd8" + bytes(100)])
    dataset.save_as(path, enforce_file_format=True)
    with pytest.raises(ValueError, match=r"cannot decode its pixel data \(JPEG Baseline") as raised:
        read_dicom(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: ") and "cannot identify image file the frame's data" in message, message
    assert " object at 0x" not in message
