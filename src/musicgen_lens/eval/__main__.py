"""`python -m musicgen_lens.eval` (see `musicgen_lens.eval.cli`)."""

from musicgen_lens.eval.cli import main

raise SystemExit(main())
