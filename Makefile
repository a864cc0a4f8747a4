# Two commands do everything on a fresh clone (with ../shared beside it):
#   make book   build the book into _build/html, executing every notebook at the ci profile
#   make test   run the tests (unit tests, the book build, papermill, a headless browser)
# Both create the environment (.venv, pinned requirements, lib/ editable) when it is missing.
# `make book` rebuilds every page (--all): Sphinx would otherwise skip unchanged pages and keep
# outputs computed by an older lib/.

PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PROFILE ?= ci

export TQDM_DISABLE = 1

.PHONY: book test env clean

env: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	@touch $(STAMP)

book: $(STAMP)
	DDBOOK_PROFILE=$(PROFILE) $(BIN)/jupyter-book build . -W --keep-going --all

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf _build
