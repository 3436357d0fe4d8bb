"""Dataset runs: sharded outputs, reader, resume after a crash, corrupt images, torchrun-style ranks (gloo)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SmallCNN
from PIL import Image
from torch.utils.data import Dataset

import pycam_fast
from pycam_fast import Explainer
from pycam_fast.cli import main
from pycam_fast.dataset import explain_dataset, open_results
from pycam_fast.dataset.distributed import env_ranks, rank_shards, shard_ranges
from pycam_fast.dataset.writer import index_format, read_index_file, read_safetensors, write_safetensors

pytestmark = pytest.mark.usefixtures("one_thread")

NUM_IMAGES, CORRUPT, SIZE = 13, 5, 24  # odd count; shard_size 4 -> shards of 4, 4, 4, 1
METHODS = ["gradcam", "layercam", "cam"]
TESTS = Path(__file__).parent
FMT = index_format("auto")  # parquet with pyarrow, else jsonl (the fallback)


def _cli_args(images: Path, model: Path, out: Path) -> list[str]:
    args = ["explain-dataset", str(images), "--model", str(model), "--out", str(out), "--size", str(SIZE)]
    args += ["--batch-size", "3", "--shard-size", "4", "--workers", "0", "--layer", "features.5", "--progress", "off"]
    return args + [a for m in METHODS for a in ("--method", m)]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """13 PNGs of 20 x 24 (one corrupt), a pickled SmallCNN and the single-process CLI run of them (reference)."""
    root = tmp_path_factory.mktemp("dataset")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(NUM_IMAGES):
        path = images / f"img_{i:02d}.png"
        if i == CORRUPT:
            path.write_bytes(b"\x89PNG not really")
        else:
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(path)
    torch.manual_seed(0)
    model = root / "model.pt"
    torch.save(SmallCNN().eval(), model)
    reference = root / "reference"
    assert main([*_cli_args(images, model, reference), "--strict"]) == 1  # 1: one image failed
    return {"root": root, "images": images, "model": model, "reference": reference}


def _same_results(out: Path, reference: Path) -> None:
    """The shard files are byte-identical and the merged indexes hold the same records."""
    names = sorted(p.name for p in (reference / "shards").iterdir())
    assert sorted(p.name for p in (out / "shards").iterdir()) == names  # no temporary or extra files
    for name in names:
        assert (out / "shards" / name).read_bytes() == (reference / "shards" / name).read_bytes(), name
    assert read_index_file(out / f"index.{FMT}") == read_index_file(reference / f"index.{FMT}")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["config"] | {"model": None} == json.loads((reference / "manifest.json").read_text())["config"] | {
        "model": None
    }


def test_reference_run_and_reader(data: dict[str, Path]) -> None:
    results = open_results(data["reference"])
    assert len(results) == NUM_IMAGES and results.complete
    assert results.sample_ids.tolist() == list(range(NUM_IMAGES))  # every sample once, in order
    assert list(results.errors) == [CORRUPT] and "UnidentifiedImageError" in results.errors[CORRUPT]
    bad = results[CORRUPT]
    assert bad.maps == {} and bad.offset == -1 and bad.predicted is None and bad.source.endswith("img_05.png")

    # the maps equal the Explainer's on the same inputs (decoded the same way)
    model = torch.load(data["model"], weights_only=False)
    ds = pycam_fast.dataset.ImageFiles(sorted(data["images"].iterdir()), SIZE)
    good = [i for i in range(NUM_IMAGES) if i != CORRUPT]
    x = torch.stack([ds[i] for i in good])
    expected = Explainer(model, methods=METHODS, target_layer="features.5")(x)
    logits = model(x).detach()
    for row, sid in enumerate(good):
        sample = results[sid]
        assert sample.sample_id == sid and sample.error is None
        assert sample.predicted == sample.target == int(logits[row].argmax())
        assert sample.score == pytest.approx(float(logits[row, sample.target]), abs=1e-5)
        assert sample.probability == pytest.approx(float(torch.softmax(logits[row], 0)[sample.target]), abs=1e-6)
        assert sample.shard == sid // 4
        for name in METHODS:
            assert isinstance(sample.maps[name], np.memmap) and sample.maps[name].shape == (SIZE, SIZE)
            np.testing.assert_allclose(sample.maps[name], expected[name][row].numpy(), rtol=0, atol=1e-5)
    with pytest.raises(KeyError):
        results[NUM_IMAGES]
    assert [s.sample_id for s in results] == list(range(NUM_IMAGES))


def test_shards_are_standard_safetensors(data: dict[str, Path]) -> None:
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    results = open_results(data["reference"])
    for shard in range(4):
        path = data["reference"] / "shards" / f"shard-{shard:05d}.safetensors"
        loaded = safetensors_numpy.load_file(path)
        ids = [i for i in shard_ranges(NUM_IMAGES, 4)[shard] if i != CORRUPT]
        assert loaded["sample_id"].tolist() == ids
        for name in METHODS:
            assert loaded[name].dtype == np.float32 and loaded[name].shape == (len(ids), SIZE, SIZE)
            np.testing.assert_array_equal(loaded[name], results.shard_maps(shard)[name])


def test_crash_then_two_ranks_resume_bit_identical(data: dict[str, Path]) -> None:
    """A run killed after 2 shards, resumed by 2 gloo ranks started as torchrun does: the reference, byte for byte."""
    out = data["root"] / "crash_resume"
    with pytest.raises(RuntimeError, match="test hook"):
        _api_run(data, out, fail_after_shards=2)
    done = sorted(p.name for p in (out / "shards").iterdir())
    assert done == [f"shard-0000{k}.{ext}" for k in (0, 1) for ext in (f"index.{FMT}", "safetensors")]
    partial = open_results(out)
    assert not partial.complete and partial.sample_ids.tolist() == list(range(8))

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = []
    for rank in range(2):
        env = os.environ | {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "WORLD_SIZE": "2",
            "LOCAL_RANK": str(rank),
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        }
        cmd = [sys.executable, "-m", "pycam_fast", *_cli_args(data["images"], data["model"], out)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs  # the corrupt image is recorded, not fatal
    assert "2 rank(s)" in logs[0] and "2 shard(s) already done" in logs[0]
    _same_results(out, data["reference"])
    results = open_results(out)
    assert len(results) == NUM_IMAGES and list(results.errors) == [CORRUPT]


def _api_run(data: dict[str, Path], out: Path, **kwargs: object) -> object:
    """The reference run through the Python API (same configuration as the CLI's)."""
    model = torch.load(data["model"], weights_only=False)
    return explain_dataset(
        data["images"],
        model,
        METHODS,
        out,
        target_layer="features.5",
        image_size=SIZE,
        batch_size=3,
        shard_size=4,
        model_name=str(data["model"]),
        **kwargs,
    )


def test_single_process_resume_and_rerun(data: dict[str, Path]) -> None:
    out = data["root"] / "resume"
    with pytest.raises(RuntimeError, match="test hook"):
        _api_run(data, out, fail_after_shards=3)
    summary = _api_run(data, out)
    assert summary.skipped_shards == 3 and summary.explained == 1 and summary.errors == 1
    _same_results(out, data["reference"])
    again = _api_run(data, out)  # a finished run: nothing to do, same files
    assert again.explained == 0 and again.skipped_shards == 4
    _same_results(out, data["reference"])


def test_other_configuration_refused(data: dict[str, Path]) -> None:
    out = data["root"] / "refuse"
    with pytest.raises(RuntimeError):
        _api_run(data, out, fail_after_shards=1)
    with pytest.raises(ValueError, match="another configuration"):
        _api_run(data, out, map_dtype="fp16")
    args = [*_cli_args(data["images"], data["model"], out), "--dtype", "uint8"]
    assert main(args) == 2


class _Items(Dataset):
    """A map-style dataset of ``(x, label)`` pairs whose item 4 raises."""

    def __init__(self, n: int, shape: tuple[int, ...]) -> None:
        self.x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(3))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if i == 4:
            raise OSError("disk error")
        return self.x[i], i % 3


@pytest.mark.parametrize(
    ("map_dtype", "resolution", "index", "batch"), [("uint8", "feature", "jsonl", 1), ("fp16", "input", "auto", 4)]
)
def test_map_style_dataset(tmp_path: Path, map_dtype: str, resolution: str, index: str, batch: int) -> None:
    torch.manual_seed(0)
    model = SmallCNN().eval()
    ds = _Items(7, (3, 9, 11))
    summary = explain_dataset(
        ds,
        model,
        ["gradcampp", "xgradcam"],
        tmp_path,
        class_idx=2,
        batch_size=batch,
        shard_size=3,
        map_dtype=map_dtype,
        resolution=resolution,
        index=index,
        target_layer="features.5",
    )
    assert summary.num_samples == 7 and summary.errors == 1
    fmt = "jsonl" if index == "jsonl" else FMT
    assert (tmp_path / f"index.{fmt}").is_file()
    results = open_results(tmp_path)
    assert results.errors == {4: "OSError: disk error"}
    good = [i for i in range(7) if i != 4]
    x = torch.stack([ds.x[i] for i in good])
    size = "input" if resolution == "input" else None
    expected = Explainer(model, methods=["gradcampp", "xgradcam"], target_layer="features.5", output_size=size)(
        x, class_idx=2
    )
    for row, sid in enumerate(good):
        sample = results[sid]
        assert sample.target == 2
        for name, maps in expected.items():
            got = sample.maps[name]
            if map_dtype == "uint8":
                assert got.dtype == np.uint8 and got.shape == (5, 6)
                np.testing.assert_allclose(got.astype(np.float32), maps[row].numpy() * 255, atol=0.51)
            else:
                assert got.dtype == np.float16 and got.shape == (9, 11)
                np.testing.assert_allclose(got.astype(np.float32), maps[row].numpy(), atol=1e-3)


def test_loader_workers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = SmallCNN().eval()
    ds = _Items(6, (3, 8, 8))
    explain_dataset(ds, model, "gradcam", tmp_path / "w0", batch_size=2, shard_size=4)
    explain_dataset(ds, model, "gradcam", tmp_path / "w2", batch_size=2, shard_size=4, num_workers=2)
    for k in range(2):
        name = f"shards/shard-{k:05d}.safetensors"
        assert (tmp_path / "w0" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes()


def test_index_falls_back_to_jsonl(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pyarrow.parquet")
    assert index_format("auto") == "parquet"
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert index_format("auto") == "jsonl"
    with pytest.raises(ValueError, match="pyarrow"):
        index_format("parquet")


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.uint8, np.int64])
def test_safetensors_roundtrip(tmp_path: Path, dtype: type) -> None:
    rng = np.random.default_rng(1)
    tensors = {"b": (rng.random((3, 5, 7)) * 200).astype(dtype), "a": np.zeros((0, 4), dtype), "c": np.arange(3)}
    path = tmp_path / "x.safetensors"
    write_safetensors(path, tensors, {"k": "v"})
    for mmap in (True, False):
        back, meta = read_safetensors(path, mmap=mmap)
        assert meta == {"k": "v"} and set(back) == set(tensors)
        for name, arr in tensors.items():
            assert back[name].dtype == arr.dtype and back[name].shape == arr.shape
            np.testing.assert_array_equal(back[name], arr)
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    for name, arr in safetensors_numpy.load_file(path).items():
        np.testing.assert_array_equal(arr, tensors[name])


@pytest.mark.parametrize(("n", "size", "world"), [(13, 4, 2), (1, 4, 3), (9, 2, 4), (0, 3, 2)])
def test_rank_shards_disjoint_and_complete(n: int, size: int, world: int) -> None:
    ranges = shard_ranges(n, size)
    per_rank = [rank_shards(len(ranges), r, world) for r in range(world)]
    samples = [i for shards in per_rank for k in shards for i in ranges[k]]
    assert sorted(samples) == list(range(n))  # every sample once, no padding


def test_env_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert env_ranks() == (0, 1, 0)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert env_ranks() == (3, 4, 1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK"):
        env_ranks()
