# The two set-up commands are `make book` and `make test`; both start from nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# One environment for executing notebooks, testing them and building the site.
export JAX_PLATFORMS := cpu
export PYTHONHASHSEED := 0
export PYDEVD_DISABLE_FILE_VALIDATION := 1

# System packages the tests need (Debian names): g++ for expnorm's compiled kernels (built by
# the install step, or on first use), headless Chromium for the browser tests,
# TeX Live + latexmk + xindy for the PDF, poppler-utils (pdftotext, pdfinfo) to check it.
SYSTEM_PACKAGES := g++ chromium poppler-utils latexmk xindy texlive-latex-recommended \
    texlive-latex-extra texlive-fonts-recommended texlive-xetex fonts-freefont-otf
# The browser the tests drive (tests/test_browser.py reads CHROMIUM too).
export CHROMIUM ?= /usr/bin/chromium
# One command (or file) per package above, to tell whether it is installed.
SYSTEM_CHECKS := g++ $(CHROMIUM) pdftotext pdfinfo latexmk xindy xelatex \
    /usr/share/fonts/opentype/freefont/FreeSerif.otf

.PHONY: all install sysdeps book pdf test bench notebooks lab clean

all: book

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@# compile the float32 CPU kernels now; without g++ they are compiled on first use later
	$(BIN)/python -m expnorm._native || echo "note: expnorm's kernels not built (no g++?)"
	touch $(STAMP)

install: $(STAMP)

# Installs the system packages when they are missing and it can (root with apt-get, as in
# CI); otherwise fails and says how to install them.
sysdeps:
	@missing=""; for c in $(SYSTEM_CHECKS); do \
	    if [[ $$c == /* ]]; then [ -e "$$c" ] || missing="$$missing $$c"; \
	    else command -v "$$c" >/dev/null 2>&1 || missing="$$missing $$c"; fi; done; \
	if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	        echo "Installing system packages (missing:$$missing)"; \
	        export DEBIAN_FRONTEND=noninteractive; \
	        apt-get update -qq && apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null \
	        || { echo "error: apt-get install $(SYSTEM_PACKAGES) failed" >&2; exit 1; }; \
	    else \
	        echo "error: missing system packages (not found:$$missing)." >&2; \
	        echo "Install them with:  sudo apt-get install $(SYSTEM_PACKAGES)" >&2; \
	        echo "(the browser tests need /usr/bin/chromium; the PDF needs TeX Live)" >&2; \
	        exit 1; \
	    fi; \
	fi

# The site; its build (book/_ext/why_softmax_portable.py) also puts expnorm's wheel and sdist
# into _build/html/_static/dist/, from where the chapters' set-up cells install expnorm.
book: $(STAMP)
	$(BIN)/jupyter-book build . -W -n --keep-going
	@echo "The site is at $(CURDIR)/_build/html/index.html"
	@echo "expnorm's wheel: $$(cat _build/html/_static/dist/latest.txt)"

# The whole book as one PDF (XeLaTeX via latexmk), and one PDF handout per page in _build/pdf/
# (also copied into the site's pdf/ folder when the site is built: chapter pages link there).
HANDOUTS := _build/handouts
# The two builds run side by side (LaTeX keeps one core busy each); the handouts' log is
# printed when they fail.
pdf: $(STAMP) sysdeps
	rm -rf $(HANDOUTS) _build/pdf
	mkdir -p $(HANDOUTS)
	$(BIN)/jupyter-book build . --builder pdflatex --individualpages -W -n --keep-going \
	    --path-output $(HANDOUTS) > $(HANDOUTS)/build.log 2>&1 & handouts=$$!; \
	$(BIN)/jupyter-book build . --builder pdflatex -W -n --keep-going; book=$$?; \
	wait $$handouts || { tail -n 60 $(HANDOUTS)/build.log; exit 1; }; exit $$book
	mkdir -p _build/pdf
	cp $(HANDOUTS)/_build/latex/*.pdf _build/pdf/
	if [ -d _build/html ]; then mkdir -p _build/html/pdf && cp _build/pdf/*.pdf _build/html/pdf/; fi
	@echo "The PDF is at $(CURDIR)/_build/latex/why-softmax.pdf; one per chapter in _build/pdf/"

# tests/ includes the site build, the browser tests (every page in headless Chromium), the
# link check, the citation metadata, the PDF, and the downloadable notebooks run top to bottom.
test: $(STAMP) sysdeps
	$(BIN)/python -m pytest --nbval --nbval-current-env \
	    --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider tests book

# Speed and memory benchmarks (print tables; write benchmarks/results.json, attention_train_memory.json, inplace.json); not part of test.
bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py
	$(BIN)/python benchmarks/attention_train_memory.py
	$(BIN)/python benchmarks/inplace.py --rows 1024 --reps 11
	$(BIN)/python benchmarks/inplace.py --rows 4096 --reps 7

notebooks: $(STAMP)
	$(BIN)/python tests/execute_notebooks.py book

# As root (containers, these machines), Jupyter refuses to start without --allow-root.
lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=book $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

clean:
	rm -rf _build
