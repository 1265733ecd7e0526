# The two commands a new user needs: `make demo` and `make test` (see README.md).
# The virtual environment lives outside the clone, keyed on pyproject.toml, so a changed
# dependency list always builds a fresh one and an unchanged one is reused across clones.
PYTHON ?= python3
DEPS_HASH := $(shell cat pyproject.toml | sha256sum | cut -c1-16)
VENV ?= $(HOME)/.cache/geosam/venv-$(DEPS_HASH)
BIN := $(VENV)/bin
DEMO_DIR ?= demo

.PHONY: venv install lint test demo clean

$(BIN)/.deps-installed: pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/.deps-installed

# Re-point the editable install at this clone (the venv may have been built by another one).
install: venv
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .

lint: install
	$(BIN)/ruff check geosam tests scripts

test: lint
	$(BIN)/pytest -q

demo: install
	$(BIN)/geosam synth -o $(DEMO_DIR)/scene --size 2048 --seed 0
	$(BIN)/geosam tile $(DEMO_DIR)/scene/scene.tif --labels $(DEMO_DIR)/scene/parcels.gpkg \
		--id-field parcel_id -o $(DEMO_DIR)/tiles --tile-size 512 --overlap 64 --overwrite --quiet
	$(BIN)/geosam train --quiet --overwrite --config-file configs/tiny.yaml \
		DATASETS.TRAIN $(DEMO_DIR)/tiles OUTPUT_DIR $(DEMO_DIR)/run SOLVER.MAX_EPOCHS 10
	$(BIN)/geosam evaluate --quiet --run $(DEMO_DIR)/run --dataset $(DEMO_DIR)/tiles
	@echo "demo: scene $(DEMO_DIR)/scene, tiles $(DEMO_DIR)/tiles (preview.png, footprints.gpkg),"
	@echo "      run $(DEMO_DIR)/run, evaluation $(DEMO_DIR)/run/eval-tiles-val (metrics.md, examples.png)"

clean:
	rm -rf $(DEMO_DIR) build dist *.egg-info
