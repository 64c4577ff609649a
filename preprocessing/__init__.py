"""Preprocessing (installed as ``splitfed.preprocessing``): raw photos -> processed datasets.

It meets training only through the manifest contract in DESIGN.md: a folder of images
plus ``manifest.csv`` with ``path,label,subject,source`` and whatever else it knows.
"""
