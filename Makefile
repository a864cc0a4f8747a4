# Two commands do everything on a fresh clone (with ../shared beside it):
#   make book   papermill executes every notebook at the ci profile (JOBS at a time) into
#               _build/executed/, then the book is built from them into _build/html
#   make test   run the tests (unit tests, papermill, the book build, a headless browser)
#   make rerun PAGE=mtt-cifar10 PROFILE=quick [PARAMS="-p draw quick"]
#               execute one page's notebook at a profile (papermill) into _build/executed/;
#   make html   then renders the book again, showing that rerun (no notebook is executed)
# Each creates the environment (.venv, pinned requirements, lib/ editable) when it is missing.
# `make html` rebuilds every page (--all): Sphinx would otherwise skip unchanged pages.

PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PROFILE ?= ci
JOBS    ?= 2

export TQDM_DISABLE = 1

.PHONY: book html test env clean rerun

env: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	@touch $(STAMP)

book: $(STAMP)
	$(BIN)/python -m ddbook notebook --all --profile $(PROFILE) --jobs $(JOBS)
	$(MAKE) html

html: $(STAMP)
	DDBOOK_PROFILE=$(PROFILE) $(BIN)/jupyter-book build . -W --keep-going --all

test: $(STAMP)
	$(BIN)/python -m pytest

rerun: $(STAMP)
	@test -n "$(PAGE)" || { echo "usage: make rerun PAGE=<figure or notebook name> [PROFILE=ci|quick|gpu|paper] [PARAMS='-p NAME VALUE ...']; pages: python -m ddbook notebook --help" >&2; exit 2; }
	$(BIN)/python -m ddbook notebook $(PAGE) --profile $(PROFILE) $(PARAMS)

clean:
	rm -rf _build
