# Two commands do everything on a fresh clone (with ../shared beside it):
#   make book   build the book into _build/html, executing every notebook at the ci profile
#   make test   run the tests (unit tests, the book build, papermill, a headless browser)
#   make rerun PAGE=mtt-cifar10 PROFILE=quick [PARAMS="-p draw quick"]
#               execute one page's notebook at a profile (papermill) into _build/rerun/
# Both create the environment (.venv, pinned requirements, lib/ editable) when it is missing.
# `make book` rebuilds every page (--all): Sphinx would otherwise skip unchanged pages and keep
# outputs computed by an older lib/.

PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PROFILE ?= ci

export TQDM_DISABLE = 1

.PHONY: book test env clean rerun

env: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	@touch $(STAMP)

book: $(STAMP)
	DDBOOK_PROFILE=$(PROFILE) $(BIN)/jupyter-book build . -W --keep-going --all

test: $(STAMP)
	$(BIN)/python -m pytest

rerun: $(STAMP)
	@test -n "$(PAGE)" || { echo "usage: make rerun PAGE=<figure or notebook name> [PROFILE=ci|quick|gpu|paper] [PARAMS='-p NAME VALUE ...']; pages: python -m ddbook notebook --help" >&2; exit 2; }
	$(BIN)/python -m ddbook notebook $(PAGE) --profile $(PROFILE) $(PARAMS)

clean:
	rm -rf _build
