# make test: install into .venv and run the test suite (what .ci/run does).
# make demo: install into .venv and run the whole job on the offline digits dataset (CPU, minutes).
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
DEMO ?= runs/demo

.PHONY: install test demo clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

test: install
	$(BIN)/python -m pytest -q tests

demo: install
	$(BIN)/python train_baseline.py --dataset digits --width 32 --lr 1e-3 --batch_size 64 \
		--epochs 15 --out_dir $(DEMO) --overwrite

clean:
	rm -rf $(VENV) runs .pytest_cache
