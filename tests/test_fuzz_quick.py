"""The loader fuzzer (benchmarks/fuzz_loader.py) on a CI budget, run as a user types it: every mutated file, of
format version 1, 2 or 3, must end in success with verified checksums or a FormatError, quickly and within its
memory bound; the package and the numpy reference reader must agree on it (on accepting it, and then on the
weight bits and the decoded leftovers, version 3's q8 rows included), and a file with one known fault must
get the outcome the spec gives it. Its seeds must be the committed vectors, and with a bug planted in the
package reader (tests/support/buggy_fuzz.py runs the script as ``python benchmarks/fuzz_loader.py ARGS`` does,
three times in one interpreter, the last two with the bug) it must report the bug."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, run_script

CASES = 1500
# a case is "slow" (an unexpected outcome) past this many seconds: generous, so that only a runaway
# case (a decode that scales with a claimed size, a hang) fails it, never a busy CI machine
SLOW_CASE_SECONDS = 30.0
VALID = REPO / "formats" / "vectors" / "valid"
VALID_V2 = REPO / "formats" / "vectors" / "v2" / "valid"
VALID_V3 = REPO / "formats" / "vectors" / "v3" / "valid"


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    """(exit codes, the quick run's --report JSON, the folder of every run's outputs). One interpreter runs
    the script three times (tests/support/buggy_fuzz.py): the quick run, as it is; then, with a bug planted in
    the package reader, cases 0 to 59 of another fuzz seed, and cases 30 to 59 alone."""
    folder = tmp_path_factory.mktemp("fuzz")
    quick = ["--cases", CASES, "--seed", 20240601, "--memory-every", 25, "--slow", SLOW_CASE_SECONDS, "--report",
             folder / "report.json", "--crash-dir", folder / "crashes", "--write-seeds", folder / "seeds"]
    buggy = ["--seed", 4, "--load-fraction", 0, "--slow", 0.25]  # cases 0 to 59 hit each kind of bug often
    runs = [quick, ["--cases", 60, *buggy, "--crash-dir", folder / "bug", "--report", folder / "bug.json"],
            ["--cases", 30, "--start", 30, *buggy, "--crash-dir", folder / "half", "--report", folder / "half.json"]]
    result = run_script("tests/support/buggy_fuzz.py", folder / "seeds", "--clean-runs", 1,
                        *[x for run in runs for x in ("--", *run)], env={"PYTHONPATH": str(REPO)})
    assert (folder / "report.json").exists(), result.stderr[-3000:]
    codes = result.stderr.strip().splitlines()[-1]
    return codes, json.loads((folder / "report.json").read_text()), folder


def test_no_unexpected_outcome(fuzz):
    codes, stats, _ = fuzz
    assert stats["cases"] == CASES
    assert not stats["unexpected"], (stats["unexpected"], stats["examples"][:5])
    assert not stats["reference_unexpected"], stats["reference_unexpected"]
    assert stats["memory_samples"] >= CASES // 25 and stats["memory_peak_ratio"] < 1  # slow cases count as unexpected
    assert codes.startswith("exit codes: [0,")


def test_readers_agree(fuzz):
    stats = fuzz[1]
    assert stats["accept_refuse_disagreements"] == 0, stats["examples"][:5]
    assert stats["bit_disagreements"] == 0, stats["examples"][:5]
    assert stats["dense_disagreements"] == 0, stats["examples"][:5]
    assert stats["reference_skipped"] == 0  # the reference reader reads version 2: every case is cross-checked
    assert stats["agree"] == CASES
    # every file both accept has its leftovers compared bit for bit, a good share of them with q8 rows decoded
    assert stats["dense_compared"] == stats["package"]["accepted"]
    assert stats["q8_compared"] >= 0.03 * CASES


def test_one_fault_cases_get_the_spec_outcome(fuzz):
    """The version 2 and 3 mutators (and derived keys removed from version 1 files) know the outcome of a file
    with only their fault: accepted, or refused with the class formats/pemn-v2.md or pemn-v3.md names."""
    stats = fuzz[1]
    assert stats["expectations_checked"] >= 0.03 * CASES
    assert stats["expectations_by_mutator"]["m_v3_q8"] >= 0.015 * CASES  # the int8 leftovers' rules
    assert all(stats["expectations_by_version"][version] >= 0.01 * CASES for version in ("1", "2", "3"))
    assert not stats["expectation_mismatches"], (stats["expectation_mismatches"], stats["examples"][:5])


def test_mutations_reach_every_stage(fuzz):
    """The fuzzer is only worth its cases if they get past the checksums to the deep checks."""
    stats = fuzz[1]
    assert {"read: container", "read: header", "read: header hash", "masks", "accepted"} <= set(stats["stage"])
    refused = {k.split(":")[1] for k in stats["package"] if k.startswith("refused")}
    assert {"ContainerError", "HeaderError", "ShapeError", "ChecksumError", "LimitError", "VersionError"} <= refused
    assert stats["family_accepted"]["semantic"] > 0.5 * stats["family"]["semantic"]  # re-signed edits: bits compared
    assert stats["load"] and sum(stats["load"].values()) >= 0.01 * CASES
    assert {"m_v2_header_bytes", "m_v2_header_tensor", "m_v2_derived", "m_version_swap",
            "m_v3_q8"} <= set(stats["mutators"])
    for version in ("1", "2", "3"):  # a third of the cases for each version, and each reaches acceptance
        assert stats["versions"][version] > 0.25 * CASES and stats["version_accepted"][version] > 0.06 * CASES


def test_seeds_are_the_committed_vectors_in_every_version(fuzz):
    """The fuzzer's seeds are the valid vectors as committed, and each re-laid out as version 2 by its own file
    model (zlib, json, hashlib): byte for byte the committed version 2 vector, which the package writer gives
    (formats/vectors/v2), so its version 2 seeds are the files users have; and the version 3 vectors
    (formats/vectors/v3/valid: int8 leftovers) as committed."""
    seeds = fuzz[2] / "seeds"
    v1 = sorted(p.name for p in seeds.glob("*.pemn"))
    assert v1 == sorted(p.name for p in VALID.glob("*.pemn"))
    assert sorted(p.name for p in (seeds / "v2").glob("*.pemn")) == v1
    for name in v1:
        assert (seeds / name).read_bytes() == (VALID / name).read_bytes(), name
    v3 = sorted(p.name for p in (seeds / "v3").glob("*.pemn"))
    assert v3 and v3 == sorted(p.name for p in VALID_V3.glob("*.pemn"))
    for name in v3:
        assert (seeds / "v3" / name).read_bytes() == (VALID_V3 / name).read_bytes(), name
    pinned = {version: json.loads((folder / "expected.json").read_text())["vectors"]
              for version, folder in ((1, VALID), (2, VALID_V2))}
    writers = [n for n in v1 if n in pinned[2] and all(pinned[v][n].get("canonical", True) for v in (1, 2))]
    assert len(writers) >= 15  # the vectors the writer gives in both versions (the others are hand-edited)
    for name in writers:
        assert (seeds / "v2" / name).read_bytes() == (VALID_V2 / name).read_bytes(), name


def test_the_harness_catches_what_it_is_for(fuzz):
    """A reader bug (a bare exception), a reader disagreement and a slow case are each reported (and saved); a
    run that starts halfway gives its cases the same mutations and outcomes (any case replays alone)."""
    codes, _, folder = fuzz
    assert codes == "exit codes: [0, 1, 1]"
    stats = json.loads((folder / "bug.json").read_text())
    assert stats["unexpected"]["unexpected:KeyError"] > 0 and stats["unexpected"]["unexpected:slow"] > 0
    assert stats["accept_refuse_disagreements"] > 0
    for kind in ("unexpected_KeyError", "unexpected_slow", "disagreement_accept_refuse"):
        saved = list((folder / "bug" / kind).glob("case*.bin"))
        assert saved and all(p.with_suffix(".json").exists() for p in saved), kind
    whole = {e["case"]: (e["mutations"], e["bytes"], e["package"]) for e in stats["examples"]}
    half = {e["case"]: (e["mutations"], e["bytes"], e["package"])
            for e in json.loads((folder / "half.json").read_text())["examples"]}
    assert half and min(half) >= 30 and all(whole.get(case) == found for case, found in half.items())
