"""Curation: the merge/split/label model with its journal, and what curators look at (metrics, features, embedding)."""
