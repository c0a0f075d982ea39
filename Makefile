# The two commands of the README. Both set everything up first (scripts/setup.sh is quick
# when nothing changed).
REFERENCES ?= ../shared/data/references

.PHONY: setup demo test
setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/iconicity probe --references $(REFERENCES)

test: setup
	.venv/bin/python -m pytest
