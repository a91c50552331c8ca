# Two entry points (see README): `make book` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: book test lint venv clean

venv: $(STAMP)

# torch is installed FIRST and alone, pinned: an unpinned torch pulls several GB of CUDA wheels.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[book,dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# The main job: synthetic default data -> every chapter executed with papermill -> HTML book.
book: $(STAMP)
	$(BIN)/semalign3d book build

test: $(STAMP)
	$(BIN)/ruff check semalign3d tests bench book/tools book/_ext
	$(BIN)/python -m pytest -q

clean:
	rm -rf book/_build book/_executed book/_static_vendor
