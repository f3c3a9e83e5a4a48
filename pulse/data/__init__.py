"""Corpora: readers for local text, JSON Lines, Parquet and saved datasets; tokenize once (corpus) into a
cached token file (cache: its format); the tokenizers, and the one place a recipe's tokenizer is resolved
(tokenizer.tokenizer_of); `pulse data prepare` / `inspect` and `pulse tokenizer train` call into here."""

from pulse.data.cache import Corpus
from pulse.data.corpus import open_corpus
from pulse.data.readers import CorpusFile, corpus_files

__all__ = ["Corpus", "CorpusFile", "corpus_files", "open_corpus"]
