"""The model-format conformance suite: every format plugin subclasses :class:`FormatConformance`.

A plugin's test class provides four fixtures and inherits every test::

    class TestOnnxFormat(FormatConformance):
        format_name = "onnx"

        @pytest.fixture
        def artefact(self, tmp_path) -> Path: ...          # a model file or folder
        @pytest.fixture
        def features(self) -> tuple[str, ...]: ...         # --features to push with ((): none)
        @pytest.fixture
        def rows(self) -> list[dict[str, Feature]]: ...    # at least 3 rows to score
        @pytest.fixture
        def expected(self) -> list[Output]: ...            # the reference outputs for rows
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from eventml import events as ev
from eventml.config import Settings
from eventml.errors import ModelRejected, SchemaMismatch
from eventml.log import open_log
from eventml.models import formats
from eventml.models._rows import EncodedRows
from eventml.models.base import normalize
from eventml.models.registry import Registry, load_model, push_model

TOLERANCE = 1e-6


def assert_outputs_close(got: Sequence[ev.Output], want: Sequence[ev.Output], tol: float) -> None:
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert set(g) == set(w), f"row {i}: {g} vs {w}"
        for key, wv in w.items():
            gv: Any = g[key]
            if key == "value":
                assert math.isclose(gv, wv, rel_tol=0, abs_tol=tol), f"row {i}: {gv} vs {wv}"
            elif key == "probabilities":
                assert set(gv) == set(wv), f"row {i}: classes {set(gv)} vs {set(wv)}"
                for c in wv:
                    assert math.isclose(gv[c], wv[c], rel_tol=0, abs_tol=tol), f"row {i} {c}"
            else:
                assert gv == wv, f"row {i} {key}: {gv} vs {wv}"


class FormatConformance:
    """Behaviour every model-format plugin must show."""

    format_name: str
    tolerance: float = TOLERANCE

    def test_detects_its_own_artefact(self, artefact: Path) -> None:
        assert formats.detect(artefact) == self.format_name

    def test_packing_is_deterministic(self, artefact: Path) -> None:
        plugin = formats.get(self.format_name)
        assert plugin.pack(artefact) == plugin.pack(artefact)

    def test_push_load_and_score_like_the_reference(
        self,
        artefact: Path,
        features: tuple[str, ...],
        rows: list[dict[str, ev.Feature]],
        expected: list[ev.Output],
    ) -> None:
        with open_log("memory://", Settings()) as log:
            pushed = push_model(log, artefact, "m", features=features)
            assert pushed.created
            d = pushed.descriptor
            assert (d.name, d.version, d.format, d.payload) == ("m", 1, self.format_name, None)
            assert len(d.digest) == 64
            assert d.size > 0
            registry = Registry.from_log(log)
            model = load_model(registry.descriptor_with_payload(log, "m", 1))
        assert [s.name for s in d.inputs] == list(model.feature_names)
        assert model.kind in ("regression", "classification", "other")
        assert_outputs_close(model.predict_batch(rows), expected, self.tolerance)
        assert model.predict_batch([]) == []
        model.close()

    def test_same_bytes_same_version(self, artefact: Path, features: tuple[str, ...]) -> None:
        with open_log("memory://", Settings()) as log:
            first = push_model(log, artefact, "m", features=features)
            again = push_model(log, artefact, "m", features=features)
            assert (first.created, again.created) == (True, False)
            assert again.descriptor.version == 1
            assert log.end_offsets("models") == [1]
            other = push_model(log, artefact, "other", features=features)
            assert (other.created, other.descriptor.version) == (True, 1)

    def test_records_map_to_inputs_by_normalized_name(
        self,
        artefact: Path,
        features: tuple[str, ...],
        rows: list[dict[str, ev.Feature]],
        expected: list[ev.Output],
    ) -> None:
        with open_log("memory://", Settings()) as log:
            push_model(log, artefact, "m", features=features)
            model = load_model(Registry.from_log(log).descriptor_with_payload(log, "m", 1))
        renamed = [{normalize(k).upper(): v for k, v in r.items()} for r in rows]
        assert_outputs_close(model.predict_batch(renamed), expected, self.tolerance)

    def test_every_way_to_pass_rows_scores_the_same(
        self, artefact: Path, features: tuple[str, ...], rows: list[dict[str, ev.Feature]]
    ) -> None:
        """A list of dicts and encoded records (the batch fast paths) equal the row loop."""
        with open_log("memory://", Settings()) as log:
            push_model(log, artefact, "m", features=features)
            model = load_model(Registry.from_log(log).descriptor_with_payload(log, "m", 1))
        batch = (rows * (40 // len(rows) + 1))[: max(40, len(rows))]
        by_row = list(model.predict_batch(tuple(batch)))  # not a list: row by row
        assert list(model.predict_batch(batch)) == by_row
        encoded = EncodedRows([msgspec.msgpack.encode(r) for r in batch])
        assert list(model.predict_batch(encoded)) == by_row
        model.close()

    def test_a_row_without_a_feature_is_a_schema_mismatch(
        self, artefact: Path, features: tuple[str, ...], rows: list[dict[str, ev.Feature]]
    ) -> None:
        with open_log("memory://", Settings()) as log:
            push_model(log, artefact, "m", features=features)
            model = load_model(Registry.from_log(log).descriptor_with_payload(log, "m", 1))
        first = model.feature_names[0]
        broken = [
            dict(rows[0]),
            {k: v for k, v in rows[1].items() if normalize(k) != normalize(first)},
        ]
        with pytest.raises(SchemaMismatch, match=f"expected features \\['{first}'\\]"):
            model.predict_batch(broken)

    def test_garbage_bytes_are_rejected(self) -> None:
        plugin = formats.get(self.format_name)
        draft = ev.ModelDescriptor(
            name="bad", version=1, digest="0", format=self.format_name, size=5,
            created_at=ev.now(),
        )  # fmt: skip
        with pytest.raises(ModelRejected):
            plugin.load(b"\x00garbage\xff" * 10, draft)
