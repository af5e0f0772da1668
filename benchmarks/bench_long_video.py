"""Long videos window by window: peak memory and wall time of ``fluxvit predict --window 2 --stride 2``.

    python benchmarks/bench_long_video.py [--minutes 10,60] [--size 112] [--fps 25] [--quick]
        -> benchmarks/results/bench_long_video.json

For each length a low-resolution H.264 video is generated into a temporary folder (a textured
scene drifting under a moving bar, x264's default key-frame spacing; deleted afterwards), then
the command classifies it with a random FluxViT-nano at grid 8x112 (one view per window) in a
child process, whose peak resident memory (``ru_maxrss`` from ``wait4``) and wall time are
recorded with the windows it wrote. One sequential decoding pass and a bounded window buffer
should make the peak the same for every length, and the time proportional to it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

import fluxvit  # noqa: E402
from fluxvit.data.encode import video_writer  # noqa: E402


def write_long_video(path: Path, minutes: float, size: int, fps: int) -> float:
    """Encode ``minutes`` of ``size`` x ``size`` video at ``fps`` one frame at a time (memory stays
    one frame); returns the seconds it took."""
    start = time.perf_counter()
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    base = np.stack([127 + 100 * np.sin(x / 9.0) * np.cos(y / 7.0), (x + y) % 256, 127 + 120 * np.sin((x - y) / 13.0)],
                    -1).astype(np.uint8)
    with video_writer(path, size, size, fps=fps, reproducible=False, durable=False) as write:
        for t in range(round(minutes * 60 * fps)):
            frame = np.roll(base, (t // 3, t), axis=(0, 1))
            bar = (5 * t) % size
            frame[:, bar:bar + 6] = 255
            write(frame)
    return time.perf_counter() - start


def measure(video: Path, checkpoint: Path, out: Path, window: float, stride: float) -> dict:
    """Run ``fluxvit predict VIDEO --window W --stride S`` in a child; its peak RSS and wall time."""
    command = [sys.executable, "-m", "fluxvit", "predict", str(video), "--checkpoint", str(checkpoint), "--window",
               str(window), "--stride", str(stride), "--json", "--out", str(out), "--device", "cpu"]
    log = out.with_suffix(".stderr")
    with log.open("wb") as stderr:  # a file, not a pipe: nothing to drain while waiting
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage
        wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({child.returncode}): {log.read_text().strip()}")
    windows = sum(1 for _ in out.open())
    return {"command": " ".join(command[1:]), "wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "windows": windows, "windows_per_s": round(windows / wall, 1)}


def main(minutes: list[float], size: int = 112, fps: int = 25, window: float = 2.0, stride: float = 2.0) -> dict:
    rows = []
    with tempfile.TemporaryDirectory(prefix="fluxvit-long-") as folder:
        root = Path(folder)
        model = fluxvit.create_model("fluxvit_nano_patch14", num_classes=10, default_grid=(8, size))
        checkpoint = fluxvit.save_checkpoint(model, root / "nano.safetensors")
        for length in minutes:
            video = root / f"long_{length:g}min.mp4"
            encode_s = write_long_video(video, length, size, fps)
            row = {"minutes": length, "frames": round(length * 60 * fps), "size": size, "fps": fps,
                   "file_mb": round(video.stat().st_size / 2**20, 1), "encode_s": round(encode_s, 1),
                   **measure(video, checkpoint, root / f"timeline_{length:g}.jsonl", window, stride)}
            video.unlink()
            rows.append(row)
            print(row, flush=True)
    result = {"window_s": window, "stride_s": stride, "model": "fluxvit_nano_patch14", "grid": f"8x{size}",
              "rows": rows}
    path = write_result("bench_long_video", result)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", default="10,60", help="video lengths, comma-separated (default 10,60)")
    parser.add_argument("--size", type=int, default=112, help="frame height = width (default 112)")
    parser.add_argument("--fps", type=int, default=25, help="frame rate (default 25)")
    parser.add_argument("--quick", action="store_true", help="1 and 3 minutes instead")
    args = parser.parse_args()
    lengths = [1.0, 3.0] if args.quick else [float(v) for v in args.minutes.split(",") if v.strip()]
    main(lengths, args.size, args.fps)
