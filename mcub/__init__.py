"""mcub: the evaluation harness for MCUB and the auxiliary tasks of Model Composition for MLLMs."""

__version__ = "0.1.0"
