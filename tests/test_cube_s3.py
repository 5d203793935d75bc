"""A cube on object storage: the same commands and guarantees as on a local folder, against a real
S3-compatible server the tests start (moto's server mode: conditional writes with If-None-Match, as S3
has served them since 2024), reached through obstore like any S3 endpoint (AWS_ENDPOINT_URL)."""
from __future__ import annotations

import logging
import subprocess
import sys
import uuid

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

from redundancy.cli import app
from redundancy.cube import CubeStore, check_cube, make_cell, open_cube
from redundancy.errors import StoreError

from _kills import WRITER, kill_after, two_writers_keep_every_cell_once

pytest.importorskip("obstore")
moto_server = pytest.importorskip("moto.server")
runner = CliRunner()
FAST = ["-d", "math", "--samples", "4", "--seq-len", "32", "--batch-size", "4"]
SETTINGS = dict(n_samples=3, seq_len=8, seed=0, pool_factor=4, packing="p")


@pytest.fixture(scope="module")
def s3_server():
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = moto_server.ThreadedMotoServer(port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_server, monkeypatch):
    """A fresh bucket on the local server; the environment points obstore (and subprocesses) at it."""
    import boto3

    for key, value in dict(AWS_ENDPOINT_URL=s3_server, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
                           AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1").items():
        monkeypatch.setenv(key, value)
    name = f"cubes-{uuid.uuid4().hex[:8]}"
    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket=name)
    return client, name


def _cell(step, dataset="x", model="m"):
    rng = np.random.default_rng(step * 31 + len(dataset))  # the same cell from whichever writer
    return make_cell(rng.random((3, 4, 3, 1)), ["importance"], model=model, step=step, dataset=dataset,
                     tokens=step * 10.0, provenance={"fingerprint": f"{model}-{dataset}"})


@pytest.mark.slow  # scores a series twice, draws figures, orders
def test_score_check_figures_order_on_s3_give_the_local_cube(local_series, tmp_path, bucket):
    client, name = bucket
    url = f"s3://{name}/runs/cube.zarr"
    for out in (url, str(tmp_path / "local.zarr")):
        r = runner.invoke(app, ["score", f"local:{local_series}", "--out", out, *FAST])
        assert r.exit_code == 0 and "4 cells written" in r.output, r.output
    remote, local = open_cube(url), open_cube(tmp_path / "local.zarr")
    for var in ("importance", "fingerprint", "source", "calibration_source", "revision"):
        xr.testing.assert_equal(remote[var], local[var])  # labels and values
    r = runner.invoke(app, ["check", url])
    assert r.exit_code == 0 and "4 cells sound, 0 damaged" in r.output, r.output
    r = runner.invoke(app, ["figures", url, "--out", str(tmp_path / "figs")])
    assert r.exit_code == 0 and list((tmp_path / "figs").rglob("*.png")), r.output
    r = runner.invoke(app, ["order", f"local:{local_series}", "--out", url, "-d", "math", "--module", "attn"])
    assert r.exit_code == 0, r.output
    assert (open_cube(url).drop_order.sel(strategy="iterative", module="attn", dataset="math")
            .isel(model=0, step=-1) >= 0).all()
    r = runner.invoke(app, ["score", f"local:{local_series}", "--out", url, *FAST])  # resumed: nothing to do
    assert r.exit_code == 0 and "0 cells written" in r.output, r.output


@pytest.mark.slow
def test_a_changed_object_is_found_refused_and_rescored_on_s3(local_series, bucket):
    client, name = bucket
    url = f"s3://{name}/cube.zarr"
    assert runner.invoke(app, ["score", f"local:{local_series}", "--out", url, *FAST]).exit_code == 0
    before = open_cube(url).importance.values
    key = next(o["Key"] for o in client.list_objects_v2(Bucket=name, Prefix="cube.zarr/cells/")["Contents"]
               if o["Key"].endswith("step-000000000100/importance/c/0/0/0"))
    data = bytearray(client.get_object(Bucket=name, Key=key)["Body"].read())
    data[7] ^= 0x10
    client.put_object(Bucket=name, Key=key, Body=bytes(data))  # same size, one bit
    r = runner.invoke(app, ["check", url])
    assert r.exit_code == 1 and "changed since it was written" in r.output, r.output
    with pytest.raises(StoreError, match="not what was written"):
        open_cube(url).importance.values
    r = runner.invoke(app, ["score", f"local:{local_series}", "--out", url, *FAST])
    assert r.exit_code == 0 and "damaged cell" in r.output and "1 cells written" in r.output, r.output
    np.testing.assert_array_equal(open_cube(url).importance.values, before)


def test_two_writers_on_s3_keep_every_cell_once(bucket):
    """Two processes write overlapping cells at once: each cell is published by one of them (the
    conditional create of its claim), recorded, and reads back as written."""
    _, name = bucket
    two_writers_keep_every_cell_once(f"s3://{name}/c.zarr")


@pytest.mark.slow  # a writer killed at several instants
def test_kills_on_s3_leave_no_half_cell_read_and_the_next_writer_finishes(bucket):
    _, name = bucket
    url = f"s3://{name}/k.zarr"
    CubeStore.open(url, SETTINGS)
    for after, extra in ((1, 0.0), (3, 0.05), (5, 0.1), (8, 0.2)):  # cells written, then a little more
        kill_after(subprocess.Popen([sys.executable, "-c", WRITER, url, "0", "400"], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True), after, extra)
    store = CubeStore(url)
    recorded = sorted(k[2] for k in store.records(refresh=True))
    assert recorded, "no cell was written before the kills: lengthen the delays"
    cube = open_cube(url)
    for step in recorded:  # every recorded cell reads whole
        np.testing.assert_array_equal(cube.importance.sel(model="m", step=step, dataset="x").values,
                                      _cell(step).importance.values)
    report = check_cube(url)
    assert not report.damaged and not report.foreign, report
    n = max(recorded) + 3
    # the next run: a writer killed between publishing a cell and recording it left that cell unrecorded
    r = subprocess.run([sys.executable, "-c", WRITER, url, "0", str(n), "--prepare"], capture_output=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    cube = open_cube(url)
    assert list(cube.step.values) == list(range(n))
    report = check_cube(url)
    assert report.sound == n and not report.damaged and not report.notes, report


def test_a_bucket_of_other_objects_is_refused_untouched(bucket):
    client, name = bucket
    client.put_object(Bucket=name, Key="data/notes.txt", Body=b"mine")
    with pytest.raises(StoreError, match="holds objects but no cube"):
        CubeStore.open(f"s3://{name}/data", SETTINGS)
    assert [o["Key"] for o in client.list_objects_v2(Bucket=name)["Contents"]] == ["data/notes.txt"]
