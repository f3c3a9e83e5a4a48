"""Corpora: readers for local text, JSON Lines, Parquet and saved datasets; tokenize once into a cached
token file; `pulse data prepare` / `inspect` and `pulse tokenizer train` call into here."""

from pulse.data.corpus import Corpus, open_corpus
from pulse.data.readers import CorpusFile, corpus_files

__all__ = ["Corpus", "CorpusFile", "corpus_files", "open_corpus"]
