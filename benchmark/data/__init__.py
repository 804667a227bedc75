"""Data sets and labels, before any image is decoded (pandas only; no TensorFlow).

- `formats`: the table of data set formats (the one place to add one) and where their label files lie;
- `table`: the common table every loader returns, and the checks loaders share;
- `chexpert`, `nih`, `generic`: the loaders;
- `load`: a Config (or a label file) to a split `Dataset`;
- `labels`, `policies`, `splits`: label sets, uncertainty policies, patient-wise splits;
- `inspect`: `data inspect`; `label_stats`: the aggregates the phantom (benchmark/phantom/) samples from.
"""
