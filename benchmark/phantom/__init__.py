"""The phantom: a SYNTHETIC chest-radiograph data set written in the CheXpert layout, so that the real CheXpert code
path runs on it and the whole tool runs in minutes without a download.

- `labels`: raw labels sampled at CheXpert's rates (a Gaussian copula of the real frequencies and correlations),
  and what is really drawn in each image (sign strengths, the panel's labels);
- `anatomy`: one patient's anatomy and the drawing primitives;
- `frontal`: the frontal view, one small function per anatomical part and per finding;
- `render`: the lateral view and the exposure (blur, scatter, noise, 8-bit);
- `writer`: planning patients, studies and views, rendering in parallel, writing the files.

docs/phantom.md describes how each finding is drawn and why. Nothing here is a real patient: every output made from
it must say it is synthetic.
"""

from benchmark.phantom.writer import FOLDER, make_phantom, phantom_is_complete

__all__ = ["FOLDER", "make_phantom", "phantom_is_complete"]
