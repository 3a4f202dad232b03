"""arXiv 2506.10225's protocol on real MusicGen, end to end.

- `judges`: real-audio judges through `transformers` (AST AudioSet tagger, CLAP, FAD, quality guard);
- `probes`: probe comparison (MSE one-hot / the authors' ordinal MSE / CE / logistic, same metrics),
  and the loader for the authors' probe state dicts with the layer mapping made explicit;
- `data`: labelled audio (GTZAN layout, folder + labels.csv, a `datasets` dataset) -> 10 s segments;
- `protocol.reproduce`: `reproduce(...)`, stage by stage and resumable (`musicgen-lens reproduce`);
- `report`: report.md with tables, plots and audio.
"""

from musicgen_lens.paper.judges import CONCEPT_LABELS, AudioTagger, ClapJudge, audioset_label, fad, quality_guard

__all__ = ["CONCEPT_LABELS", "AudioTagger", "ClapJudge", "audioset_label", "fad", "quality_guard", "reproduce"]


def __getattr__(name: str):  # reproduce pulls in more: import it on first use
    if name == "reproduce":
        from musicgen_lens.paper.protocol.reproduce import reproduce

        return reproduce
    raise AttributeError(name)
