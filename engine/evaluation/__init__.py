"""Knowing the answer: the ground-truth simulator and scoring with the field's definitions."""
