# All set-up is here: `make demo` and `make test` create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install browser test test-launchers demo demo-iu-xray experiments clean

# torch/torchvision first and pinned: PyPI's torchvision does not import beside other torch builds, and a later
# unpinned install would silently replace torch (DESIGN.md section 5).
$(VENV)/.installed: requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -e .
	touch $@

install: $(VENV)/.installed

# The web demo's test drives a real headless Chromium: Debian's package (apt, as root, as on CI and this machine);
# playwright's own browser download is never used.
browser:
	@command -v chromium >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

test: install browser
	$(PY) -m pytest -q -p no:cacheprovider -m "not launcher" tests

# Training through the real launchers (torchrun, accelerate launch, DeepSpeed ZeRO-2) on 2 processes: about 5 min on
# 2 cores, so not in `make test`; CI runs both.
test-launchers: install
	$(PY) -m pytest -q -p no:cacheprovider -m launcher tests

demo: install
	bash scripts/demo.sh

# The demo's pipeline on real IU X-ray reports paired with phantoms (reads ../shared/data/iu_xray; 35 min measured
# on the 2-core machine shared with other work).
demo-iu-xray: install
	bash scripts/iu_xray_demo.sh

# The paper's analysis tables on the demo's phantoms, reusing its stage 1 (run `make demo` first; resumable).
experiments: install
	$(PY) train.py experiments --output runs/experiments --annotation runs/demo/data/annotation.json \
		--image-root runs/demo/data/images --stage1 runs/demo/stage1/best

clean:
	rm -rf runs/demo
