"""The GCC floor: EdgeFormer-S exported with the global circular convolutions' spatial path removed.

    python scripts/export_gcc_floor.py --format tflite [--int8] [--imgsz 256] [--target armv7|aarch64|x86_64] \
        [--output exports/floor] [--weights ../shared/fixtures/official/edgeformer_s.pt]

Every ``LoweredGCCBlock`` computes ``out = x (+ its constant bias map)`` instead of ``x + GCC(x)``; all the rest
(FFN, channel attention, the MobileNetV2 and stem layers) is the real lowered model. It is a lower bound on what
any GCC formulation can cost, not a model: its outputs are wrong by design, so it is exported with
``--no-verify`` and written as ``edgeformer_s_floor_<imgsz>[_<target>][_int8].tflite``. Compare it with the real artifact:

    edgeformer-bench exports/edgeformer_s_256.tflite exports/floor/edgeformer_s_floor_256.tflite --emulate armv7
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgeformer_deploy.export import cli, lowering
from edgeformer_deploy.export.formats import tflite_target


def floor_forward(self, x):
    out = x if self.bias_map is None else x + self.bias_map
    y = self.ffn(out)
    return out + y * self.ca_fc(self.ca_pool(y))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--format", default="tflite", choices=("onnx", "tflite"))
    parser.add_argument("--imgsz", default="256")
    parser.add_argument("--int8", action="store_true")
    parser.add_argument("--target", help="TFLite CPU class: the floor of that target's recipe (its other op forms)")
    parser.add_argument("--weights", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "official" / "edgeformer_s.pt")
    parser.add_argument("--output", type=Path, default=Path("exports/floor"))
    args = parser.parse_args()
    lowering.LoweredGCCBlock.forward = floor_forward  # this process only
    argv = ["--model", "edgeformer_s", "--weights", str(args.weights), "--format", args.format, "--imgsz", args.imgsz,
            "--output", str(args.output), "--no-verify"] + (["--int8"] if args.int8 else [])
    argv += ["--target", args.target] if args.target else []
    try:
        cli.main(argv, standalone_mode=False)
    except SystemExit as exc:
        if exc.code:
            return int(exc.code)
    target = f"_{tflite_target(args.target).name}" if args.target else ""
    suffix = f"{target}{'_int8' if args.int8 else ''}.{args.format}"
    built = args.output / f"edgeformer_s_{args.imgsz}{suffix}"
    floor = args.output / f"edgeformer_s_floor_{args.imgsz}{suffix}"
    manifest = json.loads(Path(f"{built}.json").read_text())
    manifest["file"] = floor.name
    manifest["note"] = "GCC floor: the GCC spatial path removed (scripts/export_gcc_floor.py); not a model"
    Path(f"{floor}.json").write_text(json.dumps(manifest, indent=2))
    built.replace(floor)
    Path(f"{built}.json").unlink()
    print(f"wrote {floor} (GCC spatial path removed: a cost bound, not a model)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
