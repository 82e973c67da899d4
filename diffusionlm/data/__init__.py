"""Text in, token batches out: sources, tokenization, packing, shuffling, exact resume, shards."""

from diffusionlm.data.build import build_stream, iter_texts, open_source
from diffusionlm.data.errors import DataError
from diffusionlm.data.stream import TokenStream

__all__ = ["DataError", "TokenStream", "build_stream", "iter_texts", "open_source"]
