"""Throughput and cost benchmarks (`python -m benchmark perf ...`): speed is measured here, not in timed tests, and
the figures go in BENCHMARKS.md.

- `pipeline`: the input pipeline against ImageDataGenerator and the decode limit;
- `train`: training images/s fed by the pipeline and by in-memory tensors, on any Keras backend, beside PyTorch;
- `report`: the report's time and memory on a fabricated sweep of many runs.
"""


def format_result(r: dict) -> str:
    if r["benchmark"] == "report":
        return (f"report of {r['runs']} runs ({r['pairs']} pairs, {r['comparisons']} comparisons) on {r['images']} "
                f"test images of {r['patients']} patients, {r['labels']} labels, {r['resamples']} resamples: "
                f"{r['seconds']:.1f} s, peak {r['peak_mb']:.0f} MB")
    if r["benchmark"] == "pipeline":
        return (f"{r['images']} images at {r['image_size']} px, {r['cpu_count']} cores, median of {r['repeats']} "
                f"(images/s):\n"
                f"  first pass (decode once + 1 epoch) {r['first_pass']:9.1f}  "
                f"({100 * r['first_pass_vs_decode_limit']:.0f}% of the decode limit, "
                f"{r['first_pass_vs_image_data_generator']:.1f}x ImageDataGenerator)\n"
                f"  cache build alone (decode+store) {r['cache_build']:9.1f}\n"
                f"  cached epochs                      {r['cached']:9.1f}  ({r['cached_vs_first_pass']:.1f}x the first pass)\n"
                f"  ImageDataGenerator                 {r['image_data_generator']:9.1f}\n"
                f"  decode limit (OpenCV, all cores)   {r['decode_limit']:9.1f}")
    text = (f"{r['backbone']} at {r['image_size']} px, batch {r['batch_size']}, {r.get('precision', 'float32')}, on "
            f"{r.get('engine', 'tensorflow')}: training images/s fed by the pipeline {r['pipeline']:.1f}, by in-memory "
            f"tensors {r['in_memory']:.1f} ({100 * r['pipeline_vs_in_memory']:.0f}%)")
    ref = r.get("reference")
    if ref:
        if ref["images_per_s"]:
            text += (f"\n  PyTorch reference ({ref['source']}, {ref['device']}): {ref['images_per_s']:.1f} images/s; "
                     f"ours in memory / reference = {r['in_memory_vs_reference']:.2f}")
        else:
            text += f"\n  {ref['note']}"
    return text
