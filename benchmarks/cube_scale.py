"""How the cube's costs grow with its cell count: write, open, a heatmap query, check.

Format 1 (the layout before: each cell opened through xarray and combined on labels) beside format 2
(opened from the index; each dask chunk reads its cells' metric files when computed), on a local
folder, and format 2 on a local S3-compatible server (moto's server mode, in its own process) in the
same run. Cells are shaped as a Pythia history's: 24 layers x 3 modules x 64 samples x 4 metrics,
4 calibration sets, up to 154 steps per model, as many models as the count needs.

    python benchmarks/cube_scale.py                                   # 100, 1,000, 10,000 cells
    python benchmarks/cube_scale.py --sizes 100 1000 10000 50000 --old-sizes 100 --s3-sizes 100

Figures are wall-clock seconds on this machine (noisy when shared: `uptime` is printed); per-cell
costs are the totals divided by the cell count. "open" is `open_cube` (the median of 3 for format 2);
"query" computes one (model, dataset, module) heatmap, mean over samples (median of 3); "check" is
`check_cube` (every byte of every cell read and hashed).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from redundancy.cube import CubeStore, check_cube, make_cell, open_cube
from redundancy.cube._open import _finish, _from_cells

SETTINGS = dict(n_samples=64, seq_len=2048, seed=0, pool_factor=4, packing="p")
METRICS = ["importance", "angular_distance", "loss_delta", "kl"]
DATASETS = ["c4", "code", "math", "prose"]
STEPS = 154


def labels(n: int) -> list[tuple[str, int, str]]:
    """n (model, step, dataset) cells of Pythia-like histories."""
    per_model = STEPS * len(DATASETS)
    out = []
    for i in range(n):
        model, rest = divmod(i, per_model)
        step, d = divmod(rest, len(DATASETS))
        out.append((f"EleutherAI/pythia-{model}", step * 1000, DATASETS[d]))
    return out


def cell(model: str, step: int, dataset: str, rng: np.random.Generator):
    return make_cell(rng.random((64, 24, 3, len(METRICS)), dtype=np.float32), METRICS, model=model, step=step,
                     dataset=dataset, tokens=step * 2.097e6,
                     provenance={"fingerprint": f"{dataset}-fp", "dtype": "float16", "device": "cuda",
                                 "revision": f"step{step}", "source": "hub:" + "0" * 40,
                                 "calibration_source": f"registry:{dataset}", "package_version": "0.1.0",
                                 "scored_at": "2026-11-30T00:00:00+00:00"})


def write_format_1(path: Path, cells: list) -> float:
    """The writer before format 2 (cube/_store.py at d44d0aa): Dataset.to_zarr per cell into a
    temporary folder renamed into place, `.complete.json` of sizes; seconds in all."""
    from redundancy._atomic import atomic_dir
    from redundancy.cube._store import _key

    path.mkdir(parents=True)
    (path / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {
        "format": "redundancy-cube/1", "settings": SETTINGS}}))
    t = time.perf_counter()
    for c in cells:
        m, s, d = c["model"].item(), int(c["step"]), c["dataset"].item()
        final = path / "cells" / _key(m) / _key(d) / f"step-{s:012d}"
        with atomic_dir(final) as tmp:
            c.to_zarr(str(tmp), mode="w", zarr_format=3, consolidated=False)
            sizes = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
            (tmp / ".complete.json").write_text(json.dumps(sizes))
    return time.perf_counter() - t


def write_format_2(location: str, cells: list) -> float:
    store = CubeStore.open(location, SETTINGS)
    t = time.perf_counter()
    for c in cells:
        store.write_cell(c)
    store.compact()  # what a run does at its end
    return time.perf_counter() - t


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(layout: str, location, n: int, write_s: float, repeat: int, do_check: bool) -> dict:
    model, dataset = labels(1)[0][0], DATASETS[0]
    if layout == "format 1":
        def opener():
            store = CubeStore(location)
            return _finish(*_from_cells(store), store)
    else:
        def opener():
            return open_cube(location)
    open_s = median_time(opener, repeat)
    cube = opener()
    query_s = median_time(lambda: cube.importance.sel(model=model, dataset=dataset, module="block")
                          .mean("sample").values, repeat)
    check_s = median_time(lambda: check_cube(location), 1) if do_check else float("nan")
    return dict(layout=layout, n=n, write=write_s / n, open=open_s, query=query_s, check=check_s)


def index_only(source: Path, path: Path, n: int, repeat: int) -> dict:
    """open_cube on an index of n records (the source cube's, repeated under other model names)."""
    import io

    import pandas as pd

    from redundancy.cube import _index

    frame = CubeStore(source).records().frame
    copies = [frame.assign(model=frame["model"] + f"-copy{c}") for c in range(-(-n // len(frame)))]
    frame = pd.concat(copies, ignore_index=True).iloc[:n]
    (path / "index").mkdir(parents=True)
    (path / "zarr.json").write_bytes((source / "zarr.json").read_bytes())
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    _index._put(CubeStore(path).backend, "base", "parquet", buffer.getvalue())
    assert _index.read_frame(CubeStore(path).backend).shape[0] == n
    open_s = median_time(lambda: open_cube(path), repeat)
    nan = float("nan")
    return dict(layout="format 2, index only", n=n, write=nan, open=open_s, query=nan, check=nan)


def moto_server() -> tuple[subprocess.Popen, str]:
    """moto's S3 server in its own process, on a free port; returns (process, endpoint)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_REGION="us-east-1")
    return proc, endpoint


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000], help="format 2, local")
    p.add_argument("--old-sizes", type=int, nargs="*", default=[100, 1000], help="format 1, local")
    p.add_argument("--s3-sizes", type=int, nargs="*", default=[100, 1000], help="format 2 on the S3 server")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-check-above", type=int, default=20000, help="skip check beyond this many cells")
    p.add_argument("--index-only", type=int, nargs="*", default=[50000],
                   help="open alone on an index of this many records, copied from the largest cube's with "
                        "other model names (their cells are not written: only open is measured)")
    args = p.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        for n in sorted(set(args.sizes) | set(args.old_sizes)):
            rng = np.random.default_rng(n)
            cells = [cell(*lab, rng) for lab in labels(n)]
            if n in args.old_sizes:
                path = root / f"old-{n}.zarr"
                rows.append(measure("format 1", path, n, write_format_1(path, cells), 1, n <= 1000))
                print(row(rows[-1]), flush=True)
            if n in args.sizes:
                path = root / f"new-{n}.zarr"
                rows.append(measure("format 2", path, n, write_format_2(str(path), cells), args.repeat,
                                    n <= args.no_check_above))
                print(row(rows[-1]), flush=True)
            del cells
        largest = root / f"new-{max(args.sizes)}.zarr"
        for n in args.index_only:
            rows.append(index_only(largest, root / f"index-{n}.zarr", n, args.repeat))
            print(row(rows[-1]), flush=True)
        if args.s3_sizes:
            import boto3

            proc, endpoint = moto_server()
            try:
                boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
                for n in args.s3_sizes:
                    rng = np.random.default_rng(n)
                    cells = [cell(*lab, rng) for lab in labels(n)]
                    url = f"s3://bench/cube-{n}.zarr"
                    write_s = write_format_2(url, cells)
                    rows.append(measure("format 2, S3", url, n, write_s, args.repeat, True))
                    print(row(rows[-1]), flush=True)
            finally:
                proc.kill()
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    print("| layout | cells | write per cell | open | open per cell | heatmap query | check "
          "| check per cell |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(row(r))


def row(r: dict) -> str:
    ms = lambda s: "-" if s != s else f"{s * 1e3:.2f} ms"  # noqa: E731 - NaN: not measured
    sec = lambda s: "-" if s != s else f"{s:.2f} s"  # noqa: E731
    return (f"| {r['layout']} | {r['n']:,} | {ms(r['write'])} | {sec(r['open'])} | "
            f"{ms(r['open'] / r['n'])} | "
            f"{sec(r['query'])} | {sec(r['check'])} | {ms(r['check'] / r['n'])} |")


if __name__ == "__main__":
    main()
