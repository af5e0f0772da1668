"""Data pipeline speed: decode strategies, clips/s through a DataLoader, and what training consumes.

    python benchmarks/bench_data.py [--quick]      -> benchmarks/results/bench_data.json

1. Key-frame spacing: reading 8 segment-sampled frames of a 640x360, 30 fps, 10 s H.264 file with
   sparse (x264's default 250) and dense (30) key frames: naive per-frame seeking, decoding
   through, and the reader's automatic plan.
2. Clips/s at grids (8, 224), (16, 224), (24, 168) from the sparse file, 1 and 2 DataLoader
   workers, decode only vs the full pipeline (decode + random resized crop + flip + normalise).
3. The demo's case: the Flux pipeline on 112x112 16-frame clips (the synthetic benchmark's files)
   against the clips/s that training FluxViT-nano at the demo configuration consumes.
4. ``fluxvit prepare --short-side 320 --keyframe-interval 16``: ms to read an 8-frame segment-sampled
   clip of four 640x360, 30 fps, 10 s files with x264's sparse key frames (250) before and after
   re-encoding, and the re-encoding's own cost (``--prepare-only``: this part alone, to
   benchmarks/results/bench_data_prepare.json).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import measure as training_rate  # noqa: E402
from common import write_result  # noqa: E402

from fluxvit.data.annotations import VideoRecord, read_annotations  # noqa: E402
from fluxvit.data.batches import BatchPlan, batch_loader  # noqa: E402
from fluxvit.data.encode import write_video  # noqa: E402
from fluxvit.data.prepare import PrepareOptions, prepare_dataset  # noqa: E402
from fluxvit.data.sampling import segment_indices  # noqa: E402
from fluxvit.data.sources import VideoFileSource  # noqa: E402
from fluxvit.data.transforms import TrainTransform  # noqa: E402
from fluxvit.data.video import PyAVReader  # noqa: E402
from fluxvit.demo import DemoSettings  # noqa: E402
from fluxvit.flux.grid import FluxGrid, Grid  # noqa: E402

GRIDS = [Grid(8, 224), Grid(16, 224), Grid(24, 168)]
# the demo's Flux recipe (fluxvit.demo.DemoSettings): its grid family, batch and smallest head budget
DEMO = DemoSettings()
DEMO_FLUX = FluxGrid(frames=DEMO.flux_frames, sizes=DEMO.flux_sizes, min_tokens=DEMO.flux_tokens[0],
                     max_tokens=DEMO.flux_tokens[1])
DEMO_BATCH = DEMO.batch_size


def moving_scene(frames: int, height: int, width: int) -> np.ndarray:
    """(T, H, W, 3) uint8: textured gradients and a moving bar, so the encoder does real work."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        out[t, ..., 0] = (127 + 100 * np.sin((x + 3 * t) / 23.0) * np.cos(y / 17.0)).astype(np.uint8)
        out[t, ..., 1] = ((x + y + 2 * t) % 256).astype(np.uint8)
        out[t, ..., 2] = (127 + 120 * np.sin((x - y - 5 * t) / 31.0)).astype(np.uint8)
        bar = (7 * t) % width
        out[t, :, bar:bar + 12] = 255
    return out


class DecodeOnly:
    """A "transform" that keeps the decoded uint8 frames (T, H, W, 3): times the decoder alone."""

    def __call__(self, frames: torch.Tensor, size, generator: torch.Generator) -> torch.Tensor:
        return frames


def bench_strategies(files: dict[str, Path], reads: int) -> dict:
    """Median ms to read 8 segment-sampled frames, per file and strategy."""
    out = {}
    for name, path in files.items():
        n = PyAVReader().num_frames(path)
        index_sets = [segment_indices(n, 8, torch.Generator().manual_seed(s)).tolist() for s in range(reads)]
        row = {"keyframe_interval": PyAVReader().probe(path).keyframe_interval}
        for strategy in ("seek", "sequential", "auto"):
            reader = PyAVReader(strategy)
            reader.read(path, index_sets[0])  # warm: index cached, file in page cache
            times = []
            for idx in index_sets:
                start = time.perf_counter()
                reader.read(path, idx)
                times.append(time.perf_counter() - start)
            row[f"{strategy}_ms"] = round(1000 * float(np.median(times)), 1)
        row["auto_speedup_vs_seek"] = round(row["seek_ms"] / row["auto_ms"], 2)
        row["auto_speedup_vs_sequential"] = round(row["sequential_ms"] / row["auto_ms"], 2)
        out[name] = row
    return out


def loader_rate(path: Path, grids, workers: int, transform, clips: int, batch: int = 2) -> float:
    """Clips/s through the training loader (the batch planner over a video-file source) over copies
    of ``path``, timed from the first request to the last batch (worker start-up included:
    conservative, and free of the bias of batches prefetched meanwhile)."""
    records = [VideoRecord(path, 0, f"bench:{i}") for i in range(max(clips, 8))]
    source = VideoFileSource(records, transform, PyAVReader())
    grids = grids.grids if isinstance(grids, FluxGrid) else (grids,)
    plan = BatchPlan(len(records), batch, grids, seed=0)
    start = time.perf_counter()
    seen = sum(b.video.shape[0] for b in batch_loader(source, plan, 0, len(records) // batch, workers))
    return seen / (time.perf_counter() - start)


def bench_pipeline(path: Path, clips: int) -> list[dict]:
    rows = []
    for grid in GRIDS:
        for workers in (1, 2):
            for mode, tf in (("decode_only", DecodeOnly()), ("full", TrainTransform())):
                rate = loader_rate(path, grid, workers, tf, clips)
                rows.append({"grid": str(grid), "workers": workers, "mode": mode, "clips_per_s": round(rate, 2)})
    return rows


def clip_read_ms(paths, reads: int) -> list[float]:
    """Median ms per file to read 8 segment-sampled frames (a fresh draw each read) with the
    reader's automatic plan, the index cached and the file in the page cache (as from the second
    epoch on)."""
    out = []
    for path in paths:
        reader = PyAVReader()
        n = reader.num_frames(path)
        draws = [segment_indices(n, 8, torch.Generator().manual_seed(s)).tolist() for s in range(reads + 1)]
        reader.read(path, draws[0])  # warm
        times = []
        for idx in draws[1:]:
            start = time.perf_counter()
            reader.read(path, idx)
            times.append(time.perf_counter() - start)
        out.append(1000 * float(np.median(times)))
    return out


def bench_prepare(tmp: Path, reads: int, workers: int = 2) -> dict:
    """Decode time of an 8-frame training clip before and after ``fluxvit prepare --short-side 320
    --keyframe-interval 16`` on four 640x360, 30 fps, 10 s files with key frames every 250 frames
    (x264's default), in a folder dataset of two classes."""
    scene = moving_scene(300, 360, 640)
    src = tmp / "prepare_src"
    files = [write_video(src / f"class_{k % 2}" / f"clip{k}.mp4", np.roll(scene, 37 * k, axis=2), fps=30, gop=250,
                         reproducible=False) for k in range(4)]
    start = time.perf_counter()
    result = prepare_dataset(src, tmp / "prepare_out", PrepareOptions(short_side=320, keyframe_interval=16,
                                                                      val_fraction=0.5), workers=workers)
    seconds = time.perf_counter() - start
    copies = [r.path for split in ("train", "val") for r in read_annotations(tmp / "prepare_out" / f"{split}.csv")]
    before, after = clip_read_ms(files, reads), clip_read_ms(copies, reads)
    info = [PyAVReader().probe(p) for p in (files[0], copies[0])]
    return {
        "files": len(files), "source": f"{info[0].width}x{info[0].height}, {info[0].num_frames} frames, key frame "
                                       f"every {info[0].keyframe_interval:g}",
        "prepared": f"{info[1].width}x{info[1].height}, {info[1].num_frames} frames, key frame every "
                    f"{info[1].keyframe_interval:g}, {result.summary['reencoded']['codec']}",
        "clip_ms_before": [round(v, 1) for v in before], "clip_ms_after": [round(v, 1) for v in after],
        "median_clip_ms_before": round(float(np.median(before)), 1),
        "median_clip_ms_after": round(float(np.median(after)), 1),
        "speedup": round(float(np.median(before)) / float(np.median(after)), 2),
        "prepare_s_per_video": round(seconds / len(files), 2), "prepare_workers": workers,
        "bytes_before": sum(p.stat().st_size for p in files), "bytes_after": sum(p.stat().st_size for p in copies),
    }


def main(quick: bool = False) -> dict:
    clips = 6 if quick else 20
    with tempfile.TemporaryDirectory() as tmp:
        scene = moving_scene(300, 360, 640)
        files = {
            "sparse_keyframes_250": write_video(Path(tmp) / "sparse.mp4", scene, fps=30, gop=250),
            "dense_keyframes_30": write_video(Path(tmp) / "dense.mp4", scene, fps=30, gop=30),
        }
        demo_file = write_video(Path(tmp) / "demo.mp4", moving_scene(16, 112, 112), fps=8)
        strategies = bench_strategies(files, reads=5 if quick else 15)
        pipeline = bench_pipeline(files["sparse_keyframes_250"], clips)
        demo_rates = {
            f"{w}_workers": round(loader_rate(demo_file, DEMO_FLUX, w, TrainTransform(flip=0.0), 6 * clips,
                                              batch=DEMO_BATCH), 1)
            for w in (1, 2)
        }
        consumed = {objective: training_rate("fluxvit_nano_patch14", objective == "flux_multi", 6 if quick else 10,
                                             Path(tmp))["clips_per_s"] for objective in ("fixed", "flux_multi")}
        prepared = bench_prepare(Path(tmp), reads=5 if quick else 15)
    result = {
        "decode_strategies_8_frames": strategies,
        "pipeline_640x360_sparse": pipeline,
        "demo": {
            "pipeline_clips_per_s": demo_rates,
            "nano_training_clips_per_s": consumed,
            "torch_threads_for_training": torch.get_num_threads(),
            "note": f"demo recipe: FluxViT-nano, batch {DEMO_BATCH}, Flux grids T {DEMO.flux_frames}, "
                    f"R {DEMO.flux_sizes}, {DEMO.flux_tokens} tokens; 112x112 16-frame H.264 clips like the "
                    "synthetic benchmark's; training rates from bench_train.py (in-memory clips)",
        },
        "prepare_reencode_8_frame_clip": prepared,
    }
    write_result("bench_data", result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer clips and reads (a smoke run)")
    parser.add_argument("--prepare-only", action="store_true", help="only part 4 (fluxvit prepare's re-encoding)")
    import json

    args = parser.parse_args()
    if args.prepare_only:
        with tempfile.TemporaryDirectory() as tmp:
            payload = {"prepare_reencode_8_frame_clip": bench_prepare(Path(tmp), reads=5 if args.quick else 15)}
        write_result("bench_data_prepare", payload)
        print(json.dumps(payload, indent=2))
    else:
        print(json.dumps(main(args.quick), indent=2))
