# The two commands of the README. Both set everything up first (scripts/setup.sh is quick
# when nothing changed).
REFERENCES ?= ../shared/data/references
OUT ?= runs/default

.PHONY: setup demo test
setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/iconicity run --images-dir $(REFERENCES) --out $(OUT)

test: setup
	.venv/bin/python -m pytest
