"""The MFU denominator: this machine's measured dense matmul rate (and the rated peak on GPU/TPU)."""

from bench import common
from rlp import metrics


def run():
  out = {"bench": "peak", **common.device_info()}
  for dtype in ("float32", "bfloat16"):
    out[f"measured_{dtype}_flops"] = metrics.measured_peak_flops(dtype)
  rated, src = metrics.device_peak_flops("bfloat16")
  if not src.startswith("measured"):
    out["rated_bfloat16_flops"] = rated
  out["peak_flops"] = out["measured_float32_flops"]
  out["peak_source"] = metrics.device_peak_flops("float32")[1]
  return out
