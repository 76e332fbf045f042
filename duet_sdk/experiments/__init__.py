"""Experiments that reproduce the DUET paper's analyses on our data."""
