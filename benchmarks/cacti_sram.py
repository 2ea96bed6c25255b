"""Run CACTI 7 on 45 nm SRAM arrays; print the leakage table of evaluators/hardware/tables.py.

The leakage term of the accelerator model (``tables.SRAM_LEAKAGE_MW``) comes from this script:
CACTI 7.0 as shipped (and compiled) inside the ``zigzag-dse`` wheel, run on one-bank,
single-read-port/single-write-port RAMs with a 64-bit word at 45 nm, 360 K (CACTI's and
ZigZag's default temperature), no ECC, for the three ITRS device flavours CACTI models
(``itrs-hp`` high performance, ``itrs-lop`` low operating power, ``itrs-lstp`` low standby
power). It prints, per flavour and capacity: leakage (subthreshold + gate, mW), the dynamic
read energy of a 64-bit access (pJ) next to Horowitz's 45 nm figure where one exists, and the
array area (mm^2). CACTI is not a project dependency; run this from ZigZag's virtualenv::

    python3 -m venv /tmp/zigzag-venv && /tmp/zigzag-venv/bin/pip install zigzag-dse==3.9.1 six
    /tmp/zigzag-venv/bin/python benchmarks/cacti_sram.py       # about 20 s

``--cacti PATH`` names another CACTI binary (its directory must hold CACTI's tech_params).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
import tempfile
from pathlib import Path

FLAVOURS = ("itrs-hp", "itrs-lop", "itrs-lstp")
CAPACITIES_BYTES = tuple(1024 * 2**i for i in range(15))  # 1 KiB .. 16 MiB
HOROWITZ_64B_PJ = {8 * 1024: 10.0, 32 * 1024: 20.0, 1024 * 1024: 100.0}  # ISSCC 2014, 45 nm

# Substitutions into the cache.cfg_temp file shipped next to the binary (CACTI reads every
# line of it, including the I/O model's, even for a plain RAM).
EDITS = (
    (r"^-size \(bytes\) .*$", "-size (bytes) {size}"),
    (r"^-block size \(bytes\) .*$", "-block size (bytes) 8"),
    (r"^-output/input bus width .*$", "-output/input bus width 64"),
    (r"^-technology \(u\) .*$", "-technology (u) 0.045"),
    (r"^-operating temperature \(K\) .*$", "-operating temperature (K) 360"),
    (r'^-Add ECC - .*$', '-Add ECC - "false"'),
    (r'^-(Data|Tag) array (cell|peripheral) type - "itrs-hp"', r'-\1 array \2 type - "{flavour}"'),
)


def _find_cacti() -> Path:
    spec = importlib.util.find_spec("zigzag")
    if spec is None or spec.origin is None:
        sys.exit("zigzag-dse is not installed here; pass --cacti PATH (see the docstring)")
    return Path(spec.origin).parent / "cacti" / "cacti_master" / "cacti"


def _number(text: str, label: str) -> float:
    m = re.search(re.escape(label) + r"[^:]*:\s*([-0-9.eE+]+)", text)
    if m is None:
        raise RuntimeError(f"CACTI output has no {label!r}:\n{text[-2000:]}")
    return float(m.group(1))


def run(cacti: Path, size: int, flavour: str, workdir: Path) -> dict[str, float]:
    cfg = workdir / f"{flavour}-{size}.cfg"
    text = (cacti.parent / "cache.cfg_temp").read_text()
    for pattern, repl in EDITS:
        text, n = re.subn(pattern, repl.format(size=size, flavour=flavour), text, flags=re.M)
        if n == 0:
            raise RuntimeError(f"cache.cfg_temp has no line matching {pattern!r}")
    cfg.write_text(text)
    out = subprocess.run(
        [str(cacti), "-infile", str(cfg)], cwd=cacti.parent, capture_output=True, text=True,
        timeout=300, check=True,
    ).stdout
    height, width = (float(x) for x in re.search(
        r"Cache height x width \(mm\):\s*([0-9.eE+-]+)\s*x\s*([0-9.eE+-]+)", out).groups())
    return {
        "leak_mw": _number(out, "Total leakage power of a bank")
        + _number(out, "Total gate leakage power of a bank"),
        "read_pj": 1e3 * _number(out, "Total dynamic read energy per access"),
        "area_mm2": height * width,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cacti", type=Path, default=None, help="CACTI binary")
    args = ap.parse_args()
    cacti = args.cacti or _find_cacti()
    if not cacti.exists():
        sys.exit(f"no CACTI binary at {cacti}")
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for flavour in FLAVOURS:
            results[flavour] = [run(cacti, c, flavour, Path(tmp)) for c in CAPACITIES_BYTES]
    print(f"CACTI 7 at 45 nm, 360 K, 64-bit word, 1 bank ({cacti})\n")
    print(f"{'flavour':10s} {'KiB':>7s} {'leak mW':>10s} {'read pJ':>9s} {'Horowitz':>9s} "
          f"{'area mm2':>9s}")
    for flavour, rows in results.items():
        for c, r in zip(CAPACITIES_BYTES, rows):
            hz = HOROWITZ_64B_PJ.get(c)
            print(f"{flavour:10s} {c // 1024:7d} {r['leak_mw']:10.4g} {r['read_pj']:9.4g} "
                  f"{'' if hz is None else f'{hz:g}':>9s} {r['area_mm2']:9.4g}")
    print("\n# for evaluators/hardware/tables.py")
    print(f"SRAM_LEAKAGE_KIB = {tuple(c // 1024 for c in CAPACITIES_BYTES)}")
    print("SRAM_LEAKAGE_MW = {")
    for flavour, rows in results.items():
        leaks = ", ".join(f"{r['leak_mw']:.4g}" for r in rows)
        print(f"    {flavour!r}: ({leaks}),")
    print("}")


if __name__ == "__main__":
    main()
