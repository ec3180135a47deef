"""An autotrain forecast exported to ONNX, run by onnxruntime: the model
passes onnx's checker and predicts what autotrain predicted on the same
rows (the CSV `autotrain fit gbdt --predictions` writes) to 1e-6.

    python3 tests/interop/onnx_check.py MODEL.onnx PREDICTIONS.csv

Prints one JSON line: rows, max absolute difference, ok."""

import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd


def main(model_path: str, predictions_path: str) -> int:
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    columns = meta["columns"].split(",")
    # round_trip: the exact doubles autotrain wrote (the default parser can
    # be an ulp off, and a value on a split threshold then takes the other side).
    table = pd.read_csv(predictions_path, float_precision="round_trip")
    x = table[columns].to_numpy(dtype=np.float64)  # empty cells: NaN
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"X": x})
    diff = np.abs(y.reshape(-1).astype(np.float64) - table["prediction"].to_numpy())
    worst = float(diff.max()) if len(diff) else 0.0
    ok = len(diff) > 0 and worst <= 1e-6
    print(json.dumps({"rows": len(diff), "max_abs_diff": worst, "ok": ok,
                      "onnxruntime": ort.__version__, "target": meta.get("target")}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
