# The two commands of the README. Each sets up .venv on first use (Python >= 3.10 is all it needs).
#   make demo   - set up and run the demo on the built-in simulator
#   make test   - set up and run the test suite (what CI runs)
# GPU machines: `make setup TORCH="torch"` (or install your CUDA torch into .venv first).

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN     = $(VENV)/bin

.PHONY: setup demo test lint clean docs

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

# the viewer's Debian libraries where we can install them (root or sudo); else the demo says
# which are missing and runs headless
demo: setup
	-bash .ci/qt-deps.sh
	$(BIN)/neuralign demo $(ARGS)

lint: setup
	$(BIN)/ruff check .

test: setup lint
	$(BIN)/python -m pytest $(ARGS)

# the documentation site (docs/_build/html); the gallery's examples run during the build
docs: $(VENV)/.docs-installed
	LSLAPICFG=$(CURDIR)/neuralign/lsl_api.cfg QT_QPA_PLATFORM=offscreen MPLBACKEND=Agg \
	    $(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html $(SPHINXOPTS)

$(VENV)/.docs-installed: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[dev,docs]"
	touch $@

clean:
	rm -rf $(VENV) .neuralign-cache build *.egg-info
