"""Linear probes on cached activations, and probe directions as steering vectors.

This follows arXiv 2506.10225 ("Fine-Grained Control over Music Generation with Activation
Steering"): one activation vector per example and layer (decoder layer output, conditional CFG
branch, last generation step), rows L2-normalised, a linear probe trained on them, and the unit
probe row for the target class used as the steering vector. In the authors' code the probe is
a bias-free ``nn.Linear(d_model, n_classes)`` (or ``-> 1`` for a binary ±1 target) trained
full-batch with Adam (lr 5e-3, 250 epochs) on an MSE loss, evaluated on a stratified 15%
held-out split. ``LinearProbe.paper()`` is that probe trained to convergence (a stated stopping
criterion instead of 250 epochs); `held_out_split` is the split.

- :class:`LinearProbe` (`estimator`) is a scikit-learn estimator (``clone``,
  ``cross_val_score`` and ``GridSearchCV`` work) with two back ends: ``method="sklearn"``
  (``LogisticRegression`` / ``Ridge``) and ``method="torch"`` (the paper's MSE probe).
  :meth:`LinearProbe.direction` returns the steering direction in the model's residual basis;
  :meth:`LinearProbe.save` / :meth:`LinearProbe.load` use safetensors (no pickle) with a
  checksum verified on load.
- :func:`probe_sweep` (`sweeps`) cross-validates one probe per hook (or per head) and returns a
  :class:`SweepResult` with a table, ``best()`` and a plot of the metric against layer.
"""

from musicgen_lens.probes.estimator import PRESETS, LinearProbe
from musicgen_lens.probes.sweeps import SweepResult, held_out_split, probe_sweep

__all__ = ["LinearProbe", "PRESETS", "SweepResult", "held_out_split", "probe_sweep"]
