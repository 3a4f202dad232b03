# Every target creates .venv on first use; nothing else needs installing by hand.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A plain "torch" would pull the newest CUDA build (several GB); this pin resolves to the CPU wheel here.
TORCH_SPEC ?= torch==2.13.0
DEMO_OUT ?= demo_out
# SoundFont renderer for the SynTheory sets. Installed with --no-deps: its wheel requires pyaudio,
# which only live playback uses and which is a C build (PortAudio headers) on Linux; see
# pyproject's "soundfont" extra.
TINYSOUNDFONT_SPEC ?= tinysoundfont>=0.3.7,<0.4

.PHONY: demo test bench train eval clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps "$(TINYSOUNDFONT_SPEC)"
	touch $@

# Three of make eval's demos (tabla from a flute clip, violin from second 5, the classical -> electronic -> rock chain), each at its stored
# setting on the held-out seeds 16-31, judged with the verdict and toward_target (50-70 s on 2 cores).
demo: $(VENV)/.installed
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 $(PY) -m musicgen_lens.demo --out $(DEMO_OUT)

test: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

# Every speed measurement as a ratio to Hugging Face, in one run (sized for < 10 min on 2 idle cores):
# forward at 250/500/1000/1500 positions (+ run_with_cache on every hook), generate batch 1/4 with
# fp32/hooked/bf16/int8 and the memory bound, narrow-model host overhead, int8 accuracy.
# The GPU set is separate: benchmarks/gpu_bench.py on a CUDA machine.
BENCH_ROUNDS ?= 2
bench: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_forward.py --rounds $(BENCH_ROUNDS)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_forward.py --rounds $(BENCH_ROUNDS) --pos 250 --keep-freed-memory
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_generate.py --steps 30 --rounds $(BENCH_ROUNDS) --batches 1 4 --bf16 --int8
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_host.py --steps 60 --rounds 3
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_int8.py --steps 50

# Rebuild the embedded toy model from scratch (about 3 hours on 2 CPU cores; resumable): the codec,
# its decoder-only fine-tune, the decoder + T5 (1800 steps), then 3000 more decoder steps at lr 6e-4
# from that checkpoint (test loss 3.89 -> 3.46 nats; prompted-instrument accuracy 0.59 -> 0.73),
# then 4000 more at lr 5e-4 (3.46 -> 3.25; 16 seeds per prompt: 0.74 -> 0.81), then 6000 more on
# the first 12000 clips of the same world (3.25 -> 3.04; classical, codec judge: 0.31 -> 0.62).
train: $(VENV)/.installed
	$(PY) training/train_codec.py --data runs/world --run runs/codec
	$(PY) training/train_codec.py --data runs/world --run runs/codec_ft --decoder-only-from runs/codec --steps 1200 --lr 5e-4 --vq-warmup 0
	$(PY) training/train_lm.py --data runs/world --codec runs/codec/encodec --final-codec runs/codec_ft/encodec --run runs/lm --steps 1800
	$(PY) training/train_lm.py --data runs/world --init-from runs/lm/export --run runs/lm2 --steps 3000 --lr 6e-4
	$(PY) training/train_lm.py --data runs/world --init-from runs/lm2/export --run runs/lm3 --steps 4000 --lr 5e-4
	$(PY) training/train_lm.py --data runs/world12k --n-clips 12000 --init-from runs/lm3/export --run runs/lm4 --steps 6000 --lr 5e-4
	$(PY) training/ship.py --export runs/lm4/export

# The toy model's measurements reported in the README: codec, prompts, the trumpet -> violin steering
# sweep and the demos, 16 seeds per setting (about 30 min on 2 idle cores, 58 sweep settings and 12 demos; resumes from eval_results.json
# after every setting). Writes the README's tables (eval_results.md) and the recipes' stored defaults.
eval: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m musicgen_lens.eval codec prompts sweep demos --out eval_results.json \
		--markdown eval_results.md --figure eval_sweep.png --defaults src/musicgen_lens/assets/toy/steering_defaults.json

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
