"""Experiments: the value-add experiment (plasmid vs base vs placebos) and the monolithic comparison."""
