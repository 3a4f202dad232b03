# Every target creates .venv on first use; nothing else needs installing by hand.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A plain "torch" would pull the newest CUDA build (several GB); this pin resolves to the CPU wheel here.
TORCH_SPEC ?= torch==2.13.0
DEMO_OUT ?= demo_out

.PHONY: demo test bench train eval clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

# 8 seeds of trumpet -> violin at the stored recommended setting, judged with the verdict (20-110 s on 2 shared cores).
demo: $(VENV)/.installed
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 $(PY) -m musicgen_lens.demo --out $(DEMO_OUT)

test: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

bench: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_forward.py
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_generate.py --bf16
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_activations.py

# Rebuild the embedded toy model from scratch (about an hour on 2 CPU cores; resumable).
train: $(VENV)/.installed
	$(PY) training/train_codec.py --data runs/world --run runs/codec
	$(PY) training/train_codec.py --data runs/world --run runs/codec_ft --decoder-only-from runs/codec --steps 1200 --lr 5e-4 --vq-warmup 0
	$(PY) training/train_lm.py --data runs/world --codec runs/codec/encodec --final-codec runs/codec_ft/encodec --run runs/lm --steps 1800
	$(PY) training/ship.py --export runs/lm/export

# The toy model's measurements reported in the README: codec, prompts, the trumpet -> violin steering
# sweep and the demos, 16 seeds per setting (about 1.5 h on 2 shared cores; resumes from eval_results.json
# after every setting). Writes the README's tables (eval_results.md) and the recipes' stored defaults.
eval: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m musicgen_lens.eval codec prompts sweep demos --out eval_results.json \
		--markdown eval_results.md --figure eval_sweep.png --defaults src/musicgen_lens/assets/toy/steering_defaults.json

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
