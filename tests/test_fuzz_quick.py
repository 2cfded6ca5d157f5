"""The loader fuzzer (benchmarks/fuzz_loader.py) on a CI budget: every mutated file, of format version 1
or 2, must end in success with verified checksums or a FormatError, quickly and within its memory bound;
the package and the numpy reference reader must agree on it, and a file with one known fault must get
the outcome the spec gives it."""

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
    # files labelled version 2 are left out only while the reference reader cannot read version 2
    assert stats.reference_skipped == 0 or not fuzz_loader.reference_reads_v2()
    assert stats.agree + stats.reference_skipped == CASES


def test_one_fault_cases_get_the_spec_outcome(stats):
    """The version 2 mutators (and derived keys removed from version 1 files) know the outcome of a file
    with only their fault: accepted, or refused with the class formats/pemn-v2.md names."""
    assert stats.expectations_checked >= 0.03 * CASES
    assert not stats.expectation_mismatches, (dict(stats.expectation_mismatches), stats.examples[:5])


def test_mutations_reach_every_stage(stats):
    """The fuzzer is only worth its cases if they get past the checksums to the deep checks."""
    stages = set(stats.stage)
    assert {"read: container", "read: header", "read: header hash", "masks", "accepted"} <= stages, stats.stage
    assert {"ContainerError", "HeaderError", "ShapeError", "ChecksumError", "LimitError"} <= {
        k.split(":")[1] for k in stats.package if k.startswith("refused")}
    assert stats.family_accepted["semantic"] > 0.5 * stats.family["semantic"]  # re-signed edits decode: bits compared
    assert stats.load and sum(stats.load.values()) >= 0.01 * CASES
    assert set(stats.mutators) == set(fuzz_loader.MUTATORS)
    for version in (1, 2):  # half the seeds of each version, and each reaches acceptance
        assert stats.versions[version] > 0.35 * CASES and stats.version_accepted[version] > 0.1 * CASES
    assert "VersionError" in {k.split(":")[1] for k in stats.package if k.startswith("refused")}


def test_seeds_of_both_versions():
    seeds = fuzz_loader.load_seeds()
    by_version = {v: [s for s in seeds if s.version == v] for v in (1, 2)}
    assert len(by_version[1]) == len(by_version[2]) > 10
    for seed in by_version[2]:
        assert seed.metadata["pemn.version"] == "2" and "pemn.header" not in seed.metadata
        assert "generator" not in seed.header and "banks" not in seed.header and "generator" in seed.full_header


def test_v2_file_model_matches_the_writer(monkeypatch):
    """The fuzzer re-lays a version 1 vector out as version 2 with its own code (zlib, json, hashlib):
    byte for byte what the package writer gives for the same model (derived keys, deflate settings,
    layout, metadata, data checksum), so its version 2 seeds are the files users have."""
    mv = load_benchmark("hostile_files").make_vectors()
    to_bytes = mv.to_bytes
    monkeypatch.setattr(mv, "to_bytes", lambda model, **kwargs: to_bytes(model, **{**kwargs, "format_version": 2}))
    for name in ("seq_mp_paper_signed", "seq_rp_copy", "cm_dense_rice_d10", "seq_onelayer_rice_d90_fp16"):
        v1 = (fuzz_loader.VECTORS / "valid" / f"{name}.pemn").read_bytes()
        assert fuzz_loader.to_version(v1, 2) == mv.build_valid(name), name


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
