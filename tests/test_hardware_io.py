"""Readers of the hardware model: SCALE-Sim topology CSVs and accelerator YAMLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluators.hardware import (
    accelerator_yaml_problems,
    evaluate_network,
    load_accelerator_yaml,
    read_layers_csv,
)
from evaluators.specs import AcceleratorSpec, ConvLayer, InputError

ROOT = Path(__file__).resolve().parents[1]
HEADER = (
    "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
    "Num Filter, Strides,\n"
)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# --------------------------------------------------------------------------- layers CSV


def test_bundled_resnet18_conv2_csv() -> None:
    layers = read_layers_csv(ROOT / "experiments/layers/resnet18_conv2.csv")
    assert layers == [ConvLayer("conv2_1", 58, 58, 3, 3, 64, 64, 1)]
    assert layers[0].padding == 0 and layers[0].batch == 1
    assert (layers[0].weight_bits, layers[0].input_bits, layers[0].output_bits) == (8, 8, 8)


def test_csv_trailing_comma_whitespace_blank_lines_and_extra_columns(tmp_path: Path) -> None:
    text = (
        HEADER
        + "\n"
        + "  conv1 ,224,224, 7, 7, 3, 64, 2,\n"
        + "   \n"
        + ",,,,,,,,\n"
        + "conv2,56,56,3,3,64,64,1\n"  # no trailing comma
        + "fc, 1, 1, 1, 1, 512, 1000, 1, extra, columns, 7,\n"
    )
    layers = read_layers_csv(_write(tmp_path, "t.csv", text))
    assert [layer.name for layer in layers] == ["conv1", "conv2", "fc"]
    assert layers[0] == ConvLayer("conv1", 224, 224, 7, 7, 3, 64, 2)
    assert layers[2].channels == 512 and layers[2].num_filters == 1000


def test_csv_optional_density_columns(tmp_path: Path) -> None:
    """``Input Density`` / ``Weight Density`` after the SCALE-Sim columns, in any order and
    spelling; other extra columns stay ignored; without them every layer is dense."""
    text = (HEADER.rstrip(",\n") + ", note, weight_density, INPUT DENSITY,\n"
            + "a, 8, 8, 3, 3, 4, 4, 1, x, 0.5, 0.25,\n"
            + "b, 8, 8, 3, 3, 4, 4, 1, y, 1, 1.0\n")
    a, b = read_layers_csv(_write(tmp_path, "d.csv", text))
    assert (a.input_density, a.weight_density) == (0.25, 0.5)
    assert (b.input_density, b.weight_density) == (1.0, 1.0)
    plain = read_layers_csv(_write(tmp_path, "p.csv", HEADER + "a, 8, 8, 3, 3, 4, 4, 1,\n"))
    assert (plain[0].input_density, plain[0].weight_density) == (1.0, 1.0)


@pytest.mark.parametrize(("cell", "got"), [("0", "got '0'"), ("1.5", "got '1.5'"),
                                           ("half", "got 'half'"), ("", "missing value"),
                                           ("nan", "got 'nan'")])
def test_csv_bad_density_names_row_and_column(tmp_path: Path, cell: str, got: str) -> None:
    text = HEADER.rstrip(",\n") + ", Input Density\n" + f"a, 8, 8, 3, 3, 4, 4, 1, {cell}\n"
    p = _write(tmp_path, "d.csv", text)
    with pytest.raises(InputError) as info:
        read_layers_csv(p)
    assert info.value.key == "row 2: Input Density"
    assert info.value.message == f"must be a number in (0, 1], {got}"


def test_csv_density_column_named_twice(tmp_path: Path) -> None:
    text = HEADER.rstrip(",\n") + ", Input Density, input_density\na, 8, 8, 3, 3, 4, 4, 1, 1, 1\n"
    with pytest.raises(InputError) as info:
        read_layers_csv(_write(tmp_path, "d.csv", text))
    assert (info.value.key, info.value.message) == (
        "row 1: input_density", "a density column named twice in the header")


def test_csv_crlf_line_endings(tmp_path: Path) -> None:
    p = tmp_path / "crlf.csv"
    p.write_bytes((HEADER + "c, 8, 8, 3, 3, 4, 4, 1,\n").replace("\n", "\r\n").encode())
    assert read_layers_csv(p)[0].ifmap_h == 8


def test_csv_layers_run_through_the_model(tmp_path: Path) -> None:
    p = _write(
        tmp_path, "t.csv", HEADER + "a, 16, 16, 3, 3, 8, 8, 1,\nb, 14, 14, 1, 1, 8, 4, 1,\n"
    )
    report = evaluate_network(read_layers_csv(p), AcceleratorSpec())
    assert len(report.layers) == 2


def test_csv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        read_layers_csv(tmp_path / "nope.csv")
    assert (info.value.key, info.value.message) == ("file", "not found")
    assert str(info.value) == f"{tmp_path / 'nope.csv'}: file: not found"


@pytest.mark.parametrize(
    ("row", "key", "message"),
    [
        ("c, 8, 8, 3, 3, 4, 4", "row 2: Strides", "missing value"),
        ("c, 8, 8, 3, 3", "row 2: Channels", "missing value"),
        ("c, 8, 8, 3, 3, , 4, 1,", "row 2: Channels", "missing value"),
        ("c, 8, 8, 3, 3, four, 4, 1,", "row 2: Channels", "'four'"),
        ("c, 8, 8.5, 3, 3, 4, 4, 1,", "row 2: IFMAP Width", "'8.5'"),
        ("c, 8, 8, 3, 3, 4, 0, 1,", "row 2: Num Filter", "got 0"),
        ("c, -8, 8, 3, 3, 4, 4, 1,", "row 2: IFMAP Height", "got -8"),
        ("c, 8, 8, 3, 3, 4, 4, 0,", "row 2: Strides", "got 0"),
        ("c, 2, 8, 3, 3, 4, 4, 1,", "row 2: Filter Height", "filter height 3 exceeds"),
        ("c, 8, 2, 3, 3, 4, 4, 1,", "row 2: Filter Width", "filter width 3 exceeds"),
        (" , 8, 8, 3, 3, 4, 4, 1,", "row 2: Layer name", "missing value"),
    ],
)
def test_csv_bad_rows(tmp_path: Path, row: str, key: str, message: str) -> None:
    p = _write(tmp_path, "bad.csv", HEADER + row + "\n")
    with pytest.raises(InputError) as info:
        read_layers_csv(p)
    assert info.value.key == key
    assert message in info.value.message
    assert info.value.path == str(p)


def test_csv_row_numbers_are_file_lines(tmp_path: Path) -> None:
    text = HEADER + "a, 8, 8, 3, 3, 4, 4, 1,\n\nb, 8, 8, 3, 3, x, 4, 1,\n"
    with pytest.raises(InputError, match="row 4: Channels"):
        read_layers_csv(_write(tmp_path, "t.csv", text))


def test_csv_column_names_come_from_the_header(tmp_path: Path) -> None:
    text = "name,h,w,fh,fw,chan,k,s\nc, 8, 8, 3, 3, x, 4, 1\n"
    with pytest.raises(InputError, match="row 2: chan"):
        read_layers_csv(_write(tmp_path, "t.csv", text))


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("", "file", "empty"),
        ("\n  \n", "file", "empty"),
        (HEADER, "file", "no layers"),
        ("c, 8, 8, 3, 3, 4, 4, 1,\n", "row 1", "header"),
    ],
)
def test_csv_bad_files(tmp_path: Path, text: str, key: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        read_layers_csv(_write(tmp_path, "t.csv", text))
    assert info.value.key == key
    assert message in info.value.message


def test_csv_binary_file(tmp_path: Path) -> None:
    p = tmp_path / "bin.csv"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match="UTF-8"):
        read_layers_csv(p)


# --------------------------------------------------------------------------- accelerator YAML


def test_minimal_yaml_takes_defaults(tmp_path: Path) -> None:
    p = _write(tmp_path, "a.yaml", "{template: systolic, dataflow: ws, pe_rows: 32, pe_cols: 32}")
    assert load_accelerator_yaml(p) == AcceleratorSpec(pe_rows=32, pe_cols=32)


def test_bundled_accelerators_load() -> None:
    edge = load_accelerator_yaml(ROOT / "experiments/accelerators/edge_systolic.yaml")
    assert (edge.pe_rows, edge.pe_cols, edge.glb_kib, edge.dram_type) == (16, 16, 64.0, "lpddr4")
    tpu = load_accelerator_yaml(ROOT / "experiments/accelerators/tpu_v1_like.yaml")
    assert (tpu.pe_rows, tpu.pe_cols, tpu.dataflow) == (256, 256, "ws")
    assert (tpu.glb_kib, tpu.freq_mhz, tpu.dram_gbps, tpu.dram_type) == (
        24576.0,
        700.0,
        34.0,
        "ddr3",
    )


def test_yaml_ints_are_accepted_for_float_fields(tmp_path: Path) -> None:
    spec = load_accelerator_yaml(_write(tmp_path, "a.yaml", "glb_kib: 128\nfreq_mhz: 1.0e+3\n"))
    assert spec.glb_kib == 128.0 and isinstance(spec.glb_kib, float)
    assert spec.freq_mhz == 1000.0
    # YAML 1.1 reads 1e3 (no dot) as a string: rejected, with a hint.
    with pytest.raises(InputError, match=r"write it with a dot, e\.g\. 1000\.0"):
        load_accelerator_yaml(_write(tmp_path, "b.yaml", "freq_mhz: 1e3\n"))


def test_yaml_unknown_key_lists_known_keys(tmp_path: Path) -> None:
    p = _write(tmp_path, "a.yaml", "pe_rows: 32\npe_colums: 32\n")
    with pytest.raises(InputError) as info:
        load_accelerator_yaml(p)
    assert info.value.key == "pe_colums"
    assert "unknown key" in info.value.message
    for known in ("pe_cols", "glb_kib", "dram_gbps", "weight_compression"):
        assert known in info.value.message


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("pe_rows: '32'", "pe_rows", "got '32' (string)"),
        ("pe_rows: 32.0", "pe_rows", "got 32.0 (number)"),
        ("pe_rows: true", "pe_rows", "got True (boolean)"),
        ("glb_kib: yes", "glb_kib", "got True (boolean)"),
        ("glb_kib: [64]", "glb_kib", "got [64] (list)"),
        ("dram_gbps: fast", "dram_gbps", "got 'fast'"),
        ("pe_cols: 0", "pe_cols", "got 0"),
        ("rf_bytes: -4", "rf_bytes", "got -4"),
        ("glb_kib: -1.5", "glb_kib", "got -1.5"),
        ("freq_mhz: .nan", "freq_mhz", "got nan"),
        ("freq_mhz: .inf", "freq_mhz", "got inf"),
        ("dataflow: rs", "dataflow", "got 'rs'"),
        ("template: maestro", "template", "got 'maestro'"),
        ("dram_type: DDR3", "dram_type", "got 'DDR3'"),
        ("double_buffered: 1", "double_buffered", "got 1 (integer)"),
    ],
)
def test_yaml_bad_values_name_key_and_value(
    tmp_path: Path, text: str, key: str, fragment: str
) -> None:
    p = _write(tmp_path, "a.yaml", text + "\n")
    with pytest.raises(InputError) as info:
        load_accelerator_yaml(p)
    assert info.value.key == key
    assert fragment in info.value.message
    assert str(info.value).startswith(f"{p}: {key}: ")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty file"),
        ("- pe_rows\n- 32\n", "got a list"),
        ("32\n", "got a integer"),
        ("just a string\n", "got a string"),
        ("pe_rows: [32\n", "malformed YAML"),
        ("pe_rows: 32\n  pe_cols: 4\n", "malformed YAML"),
        ("\tpe_rows: 32\n", "malformed YAML"),
    ],
)
def test_yaml_bad_documents(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(InputError) as info:
        load_accelerator_yaml(_write(tmp_path, "a.yaml", text))
    assert info.value.key == "file"
    assert fragment in info.value.message


def test_yaml_python_tags_are_rejected_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    text = f'!!python/object/apply:os.system ["touch {marker}"]\n'
    with pytest.raises(InputError) as info:
        load_accelerator_yaml(_write(tmp_path, "evil.yaml", text))
    assert "unsupported YAML tag" in info.value.message
    assert "python/object/apply:os.system" in info.value.message
    assert not marker.exists()
    nested = f'pe_rows: !!python/object/apply:os.system ["touch {marker}"]\n'
    with pytest.raises(InputError, match="unsupported YAML tag"):
        load_accelerator_yaml(_write(tmp_path, "evil2.yaml", nested))
    assert not marker.exists()


def test_yaml_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        load_accelerator_yaml(tmp_path / "nope.yaml")
    assert (info.value.key, info.value.message) == ("file", "not found")


def test_yaml_all_problems_are_collected(tmp_path: Path) -> None:
    p = _write(tmp_path, "a.yaml", "pe_rows: 0\nbogus: 1\ndataflow: xx\nglb_kib: 64\n")
    spec, problems = accelerator_yaml_problems(p)
    assert spec is None
    assert [e.key for e in problems] == ["pe_rows", "bogus", "dataflow"]
    with pytest.raises(InputError) as info:
        load_accelerator_yaml(p)
    assert info.value.key == "pe_rows"
    assert "2 more" in info.value.message and "bogus" in info.value.message


def test_yaml_good_file_has_no_problems(tmp_path: Path) -> None:
    spec, problems = accelerator_yaml_problems(
        _write(tmp_path, "a.yaml", "dataflow: os\nrf_bytes: 8\nzero_gating: false\n")
    )
    assert problems == []
    assert spec == AcceleratorSpec(dataflow="os", rf_bytes=8, zero_gating=False)
