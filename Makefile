# Every target creates .venv on first use; nothing else needs installing by hand.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A plain "torch" would pull the newest CUDA build (several GB); this pin resolves to the CPU wheel here.
TORCH_SPEC ?= torch==2.13.0
DEMO_OUT ?= demo_out

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m musicgen_lens.demo --out $(DEMO_OUT)

test: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

bench: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_forward.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_generate.py --bf16
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_activations.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
