"""The loader fuzzer (benchmarks/fuzz_loader.py) on a CI budget: every mutated file must end in success
with verified checksums or a PemnError, quickly and within its memory bound, and the package and the
numpy reference reader must agree on it."""

from __future__ import annotations

import pytest
from conftest import load_benchmark

fuzz_loader = load_benchmark("fuzz_loader")

CASES = 1500
# a case is "slow" (an unexpected outcome) past this many seconds: generous, so that only a runaway
# case (a decode that scales with a claimed size, a hang) fails it, never a busy CI machine
SLOW_CASE_SECONDS = 30.0


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def stats(tmp_path_factory):
    return fuzz_loader.run_fuzz(CASES, seed=20240601, crash_dir=tmp_path_factory.mktemp("crashes"), memory_every=25,
                                slow=SLOW_CASE_SECONDS)


def test_no_unexpected_outcome(stats):
    assert stats.cases == CASES
    assert not stats.unexpected, (dict(stats.unexpected), stats.examples[:5])
    assert not stats.reference_unexpected, dict(stats.reference_unexpected)
    assert stats.memory_samples >= CASES // 25 and stats.memory_peak_ratio < 1  # slow cases count as unexpected


def test_readers_agree(stats):
    assert stats.accept_refuse_disagreements == 0, stats.examples[:5]
    assert stats.bit_disagreements == 0, stats.examples[:5]
    assert stats.agree == CASES


def test_mutations_reach_every_stage(stats):
    """The fuzzer is only worth its cases if they get past the checksums to the deep checks."""
    stages = set(stats.stage)
    assert {"read: container", "read: header", "read: header hash", "masks", "accepted"} <= stages, stats.stage
    assert {"ContainerError", "HeaderError", "ShapeError", "ChecksumError", "LimitError"} <= {
        k.split(":")[1] for k in stats.package if k.startswith("refused")}
    assert stats.family_accepted["semantic"] > 0.5 * stats.family["semantic"]  # re-signed edits decode: bits compared
    assert stats.load and sum(stats.load.values()) >= 0.01 * CASES
    assert set(stats.mutators) == set(fuzz_loader.MUTATORS)


def test_cases_are_reproducible():
    seeds = fuzz_loader.load_seeds()
    a = fuzz_loader.make_case(seeds, 7, 123)
    b = fuzz_loader.make_case(seeds, 7, 123)
    assert a.blob == b.blob and a.labels == b.labels
    assert fuzz_loader.make_case(seeds, 7, 124).blob != a.blob


def test_the_harness_catches_what_it_is_for(monkeypatch, tmp_path):
    """A reader bug (a bare exception), a reader disagreement and a slow case are each reported (and saved)."""
    from pemn_compress.errors import ChecksumError

    real = fuzz_loader.decode_masks
    seed_sizes = {len(seed.blob) for seed in fuzz_loader.load_seeds()}

    def buggy(error):
        def decode_masks(pf):  # a bug that the golden vectors themselves do not trigger
            if pf.file_size not in seed_sizes:
                raise error("bug")
            return real(pf)

        return decode_masks

    monkeypatch.setattr(fuzz_loader, "decode_masks", buggy(KeyError))
    stats = fuzz_loader.run_fuzz(60, seed=3, crash_dir=tmp_path, load_fraction=0)
    assert stats.unexpected["unexpected:KeyError"] > 0
    saved = list((tmp_path / "unexpected_KeyError").glob("case*.bin"))
    assert saved and all(p.with_suffix(".json").exists() for p in saved)
    monkeypatch.setattr(fuzz_loader, "decode_masks", buggy(ChecksumError))  # refuses what the reference accepts
    stats = fuzz_loader.run_fuzz(60, seed=3, crash_dir=tmp_path, load_fraction=0)
    assert not stats.unexpected and stats.accept_refuse_disagreements > 0
    assert list((tmp_path / "disagreement_accept_refuse").glob("case*.bin"))
    monkeypatch.setattr(fuzz_loader, "decode_masks", real)
    slow = fuzz_loader.run_fuzz(5, seed=3, load_fraction=0, slow=0.0)
    assert slow.unexpected["unexpected:slow"] == 5
