"""Training the embedded toy MusicGen: a residual VQ for EnCodec, the codec, and the decoder.

The scripts in the repository's `training/` folder call into these modules; they live in the
package so the pieces (RVQ, losses, data) are importable and tested.
"""
