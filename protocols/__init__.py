"""Protocols (installed as ``splitfed.protocols``): the maths of a step and a round.

Each file is one algorithm; each exposes ``SPEC``, registered in pyproject.toml under
the ``splitfed.protocols`` entry-point group. Protocols import splitfed, never the reverse.
"""
