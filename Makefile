# The two commands a new user needs: `make demo` and `make test` (see README.md).
# The virtual environment lives outside the clone, keyed on pyproject.toml, so a changed
# dependency list always builds a fresh one and an unchanged one is reused across clones.
PYTHON ?= python3
DEPS_HASH := $(shell cat pyproject.toml | sha256sum | cut -c1-16)
VENV ?= $(HOME)/.cache/geosam/venv-$(DEPS_HASH)
BIN := $(VENV)/bin
DEMO_DIR ?= demo

.PHONY: venv install lint test test-qgis qgis-tests demo clean

# Keyed by pyproject.toml's content (the venv's name), not its date: a fresh clone's
# pyproject.toml is newer than any stamp, which rebuilt the venv on every clone.
$(BIN)/.deps-installed:
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
	$(BIN)/ruff check geosam tests scripts qgis_plugin

test: lint test-qgis
	$(BIN)/pytest -q

# The QGIS plugin's tests run in QGIS's own Python (Debian's python3-qgis; .ci/run installs
# it), in a venv outside the clone that sees QGIS's packages and adds onnxruntime and
# pytest-qgis; numpy stays QGIS's 1.x, which its GDAL is built on. Where QGIS is absent they
# are skipped with one line, except under CI=true, where that is a failure.
QGIS_PYTHON ?= /usr/bin/python3
QGIS_REQUIREMENTS := "numpy<2" onnxruntime pytest pytest-qgis
QGIS_VENV ?= $(HOME)/.cache/geosam/qgis-venv-$(shell echo '$(QGIS_REQUIREMENTS)' | sha256sum | cut -c1-16)
QGIS_FIXTURES := build/qgis-fixtures

test-qgis:
	@if $(QGIS_PYTHON) -c 'import qgis.core' 2>/dev/null; then \
		$(MAKE) --no-print-directory qgis-tests; \
	elif [ "$$CI" = true ]; then \
		echo "QGIS plugin tests: $(QGIS_PYTHON) cannot import qgis.core (apt-get install python3-qgis qgis-providers)" >&2; \
		exit 1; \
	else \
		echo "skipping QGIS plugin tests: install python3-qgis (see README)"; \
	fi

$(QGIS_VENV)/.deps-installed:
	rm -rf $(QGIS_VENV)
	$(QGIS_PYTHON) -m venv --system-site-packages $(QGIS_VENV)
	$(QGIS_VENV)/bin/pip install -q $(QGIS_REQUIREMENTS)
	touch $@

# A model tuned from the stand-in geosam ships (MODEL.CHECKPOINT standin) on another synthetic
# scene than the tests' (seed 3), decoder only, BCE + Dice as the stand-in was pretrained, and
# exported with its tuned automatic-mode thresholds: its masks are parcels, so the plugin tests
# can assert shapes. Made with the main venv (QGIS has no torch).
TUNE := $(QGIS_FIXTURES)/tune
TILE_TUNE := --id-field parcel_id --tile-size 256 --overlap 32 --split-block 1 --quiet --overwrite
TRAIN_TUNE := --config-file configs/tiny.yaml --quiet --overwrite MODEL.CHECKPOINT standin \
	LOSS.FOCAL_WEIGHT 1.0 LOSS.FOCAL_ALPHA -1.0 LOSS.FOCAL_GAMMA 0.0
$(QGIS_FIXTURES)/model/manifest.json: configs/tiny.yaml geosam/weights/standin.pth $(wildcard geosam/export/*.py) $(wildcard geosam/modeling/*.py) | install
	$(BIN)/geosam synth -o $(TUNE)/scene --size 768 --seed 3
	$(BIN)/geosam tile $(TUNE)/scene/scene.tif --labels $(TUNE)/scene/parcels.gpkg $(TILE_TUNE) \
		-o $(TUNE)/tiles
	$(BIN)/geosam train $(TRAIN_TUNE) DATASETS.TRAIN $(TUNE)/tiles OUTPUT_DIR $(TUNE)/run \
		SOLVER.MAX_EPOCHS 4
	$(BIN)/geosam export-onnx --run $(TUNE)/run -o $(QGIS_FIXTURES)/model --overwrite

# The same, tuned on that scene's parcels shrunk 12 m inside their edges (as if carelessly
# drawn): its masks stop short of the fields' edges, so it is weak on the tests' scene, and the
# improve tests, correcting it with the true parcels, can assert a real gain. Its run folder
# stays, so that improving continues it.
WEAK := $(QGIS_FIXTURES)/weak
$(QGIS_FIXTURES)/weak_model/manifest.json: $(QGIS_FIXTURES)/model/manifest.json scripts/shrink_parcels.py | install
	$(BIN)/python scripts/shrink_parcels.py $(TUNE)/scene/parcels.gpkg $(WEAK)/parcels.gpkg --metres 12
	$(BIN)/geosam tile $(TUNE)/scene/scene.tif --labels $(WEAK)/parcels.gpkg $(TILE_TUNE) \
		-o $(WEAK)/tiles
	$(BIN)/geosam train $(TRAIN_TUNE) DATASETS.TRAIN $(WEAK)/tiles OUTPUT_DIR $(WEAK)/run \
		SOLVER.MAX_EPOCHS 8
	$(BIN)/geosam export-onnx --run $(WEAK)/run --weights final -o $(QGIS_FIXTURES)/weak_model \
		--overwrite --no-calibration

$(QGIS_FIXTURES)/scene/scene.tif: | install
	$(BIN)/geosam synth -o $(QGIS_FIXTURES)/scene --size 512 --seed 0

# The CLI's masks on the scene (rasterio reader), which the plugin's parity test compares its
# own (GDAL reader) with: QGIS's Python has no rasterio.
$(QGIS_FIXTURES)/parity.npz: scripts/parity_fixture.py $(QGIS_FIXTURES)/model/manifest.json $(QGIS_FIXTURES)/scene/scene.tif $(wildcard geosam/runtime/*.py) geosam/segment/reader.py | install
	$(BIN)/python scripts/parity_fixture.py $(QGIS_FIXTURES)

qgis-tests: $(QGIS_VENV)/.deps-installed $(QGIS_FIXTURES)/model/manifest.json $(QGIS_FIXTURES)/weak_model/manifest.json $(QGIS_FIXTURES)/scene/scene.tif $(QGIS_FIXTURES)/parity.npz
	$(QGIS_PYTHON) scripts/build_plugin.py
	mkdir -p build/qgis-pytest
	GEOSAM_CLI=$(BIN)/geosam QT_QPA_PLATFORM=offscreen $(QGIS_VENV)/bin/python -m pytest -q \
		--rootdir build/qgis-pytest qgis_plugin/tests

demo: install
	$(BIN)/geosam demo -o $(DEMO_DIR) --overwrite

clean:
	rm -rf $(DEMO_DIR) build dist *.egg-info
