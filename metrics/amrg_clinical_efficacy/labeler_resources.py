# Copied by scripts/vendor_metric_code.py from amrg/data/resources/
# (the phrase lists, as text).
# Do not edit here: edit the source and run `python scripts/vendor_metric_code.py`
# (tests/test_metric_modules.py fails while a copy differs from what its source gives).
"""The phrase lists that `labeler.ReportLabeler` reads, keyed by their path under `resources/`.

`evaluate` copies only the Python files a metric script imports into its module cache, never data files,
so the lists travel inside this module; `resources/` beside it holds the same files for reading.

`chexpert_labeler/phrases/` is copied byte-for-byte from stanfordmlgroup/chexpert-labeler, under this
licence (`labeler_extensions/` are this project's own):

    MIT License

    Copyright (c) 2018 Stanford Machine Learning Group

    Permission is hereby granted, free of charge, to any person obtaining a copy
    of this software and associated documentation files (the "Software"), to deal
    in the Software without restriction, including without limitation the rights
    to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
    copies of the Software, and to permit persons to whom the Software is
    furnished to do so, subject to the following conditions:

    The above copyright notice and this permission notice shall be included in all
    copies or substantial portions of the Software.

    THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
    IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
    FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
    AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
    LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
    OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
    SOFTWARE.
"""


PHRASE_FILES: dict[str, str] = {
    'chexpert_labeler/phrases/mention/atelectasis.txt': (
        'atelecta\n'
        'collapse\n'
    ),
    'chexpert_labeler/phrases/mention/cardiomegaly.txt': (
        'cardiomegaly\n'
        'the heart\n'
        'heart size\n'
        'cardiac enlargement\n'
        'cardiac size\n'
        'cardiac shadow\n'
        'cardiac contour\n'
        'cardiac silhouette\n'
        'enlarged heart'
    ),
    'chexpert_labeler/phrases/mention/consolidation.txt': (
        'consolidat'
    ),
    'chexpert_labeler/phrases/mention/edema.txt': (
        'edema\n'
        'heart failure\n'
        'chf\n'
        'vascular congestion\n'
        'pulmonary congestion\n'
        'indistinctness\n'
        'vascular prominence'
    ),
    'chexpert_labeler/phrases/mention/enlarged_cardiomediastinum.txt': (
        '_mediastinum\n'
        'cardiomediastinum\n'
        'contour\n'
        'mediastinal configuration\n'
        'mediastinal silhouette\n'
        'pericardial silhouette\n'
        'cardiac silhouette and vascularity\n'
    ),
    'chexpert_labeler/phrases/mention/fracture.txt': (
        'fracture\n'
    ),
    'chexpert_labeler/phrases/mention/lung_lesion.txt': (
        'mass\n'
        'nodular density\n'
        'nodular densities\n'
        'nodular opacity\n'
        'nodular opacities\n'
        'nodular opacification\n'
        'nodule\n'
        'lump\n'
        'cavitary lesion\n'
        'carcinoma\n'
        'neoplasm\n'
        'tumor\n'
    ),
    'chexpert_labeler/phrases/mention/lung_opacity.txt': (
        'opaci\n'
        'decreased translucency\n'
        'increased density\n'
        'airspace disease\n'
        'air-space disease\n'
        'air space disease\n'
        'infiltrate\n'
        'infiltration\n'
        'interstitial marking\n'
        'interstitial pattern\n'
        'interstitial lung\n'
        'reticular pattern\n'
        'reticular marking\n'
        'reticulation\n'
        'parenchymal scarring\n'
        'peribronchial thickening\n'
        'wall thickening\n'
        'scar\n'
    ),
    'chexpert_labeler/phrases/mention/no_finding.txt': (
        'emphysema\n'
        'blunt\n'
        'density\n'
        'elevation\n'
        'eventration\n'
        'scoliosis\n'
        'degenera\n'
        'calcifi\n'
        'hyperinflation\n'
        'bronchospasm\n'
        'asthma\n'
        'hernia\n'
        'copd\n'
        'interstitial markings\n'
        'plaque\n'
        'osteophytosis\n'
        'aortic disease\n'
        'bronchiolitis\n'
        'airways disease\n'
        'thickening\n'
        'cephalization\n'
        'aspiration\n'
        'bullae\n'
        'hyperinflat\n'
        'contusion\n'
        'atherosclero\n'
        'osteopenia\n'
        'metastasis\n'
        'granuloma\n'
        'pneumomediastinum\n'
        'pneumoperitoneum\n'
        'osteodystrophy\n'
        'cuffing\n'
        'irregular lucency\n'
        'inflam\n'
        'fissure\n'
        'hypertension\n'
        'prominen\n'
        'kyphosis\n'
        'defib\n'
        'hyperexpansion\n'
        'bullet\n'
        'reticula\n'
        'thoracentesis\n'
        'bronchitis\n'
        'volume loss\n'
        'deformity\n'
        'hemorrhage\n'
        'hematoma\n'
        'radiopaque\n'
        'aerophagia\n'
        'arthropathy\n'
        'tracheostomy\n'
    ),
    'chexpert_labeler/phrases/mention/pleural_effusion.txt': (
        'pleural fluid\n'
        'effusion'
    ),
    'chexpert_labeler/phrases/mention/pleural_other.txt': (
        'pleural thickening\n'
        'fibrosis\n'
        'fibrothorax\n'
        'pleural scar\n'
        'pleural parenchymal scar\n'
        'pleuro-parenchymal scar\n'
        'pleuro-pericardial scar\n'
    ),
    'chexpert_labeler/phrases/mention/pneumonia.txt': (
        'pneumonia\n'
        'infection\n'
        'infectious process\n'
        'infectious'
    ),
    'chexpert_labeler/phrases/mention/pneumothorax.txt': (
        'pneumothorax\n'
        'pneumothoraces'
    ),
    'chexpert_labeler/phrases/mention/support_devices.txt': (
        'pacer\n'
        '_line_\n'
        'lines\n'
        'picc\n'
        'tube\n'
        'valve\n'
        'catheter\n'
        'pacemaker\n'
        'hardware\n'
        'arthroplast\n'
        'marker\n'
        'icd\n'
        'defib\n'
        'device\n'
        'drain_\n'
        'plate\n'
        'screw\n'
        'cannula\n'
        'apparatus\n'
        'coil\n'
        'support\n'
        'equipment\n'
        'mediport\n'
    ),
    'chexpert_labeler/phrases/unmention/lung_lesion.txt': (
        'calcified nodul\n'
        'massive\n'
        'massengale'
    ),
    'chexpert_labeler/phrases/unmention/lung_opacity.txt': (
        'pleural scar\n'
    ),
    'chexpert_labeler/phrases/unmention/pleural_effusion.txt': (
        'pericardial effusion'
    ),
    'labeler_extensions/mention/support_devices.txt': (
        '\\bclip\n'
        '\\bwire\n'
        '\\bstent\n'
        'sternotomy\n'
    ),
    'labeler_extensions/unmention/support_devices.txt': (
        'endplate\n'
        'end plate\n'
        'tubercul\n'
    ),
}
