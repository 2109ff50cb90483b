"""Section 2: the MobileNets paper's tables (arXiv 1704.04861), recounted from the architecture.

Every figure of ours comes from architecture.count() on mobilenet_v1_specs(); the paper's own
figures are printed beside them. Parameters are counted as the paper does (conv and FC
weights, no biases or batch norm: LayerSpec.weight_count); PyTorch's count (with batch norm)
is given as well. Our figure "matches" when it rounds to the paper's figure at the paper's
precision; the rows that do not are explained in the report, not hidden.
"""
from ..architecture import count, mobilenet_v1_specs
from ..ops.dense import KIND as DENSE
from ..ops.depthwise import KIND as DEPTHWISE
from ..ops.pointwise import KIND as POINTWISE
from ..ops.stem import KIND as STEM

NUM_CLASSES = 1000
SIZE = 224

# Table 2: (paper's row name, our layer kind, % of mult-adds, % of parameters).
TABLE2 = (("Conv 1x1", POINTWISE, 94.86, 74.59), ("Conv DW 3x3", DEPTHWISE, 3.06, 1.06),
          ("Conv 3x3 (stem)", STEM, 1.19, 0.02), ("Fully Connected", DENSE, 0.18, 24.33))
# Table 4: (model, million mult-adds, million parameters).
TABLE4 = (("Conv MobileNet", 4866, 29.3), ("MobileNet", 569, 4.2))
# Table 6: (width multiplier, million mult-adds, million parameters), at 224x224.
TABLE6 = ((1.0, 569, 4.2), (0.75, 325, 2.6), (0.5, 149, 1.3), (0.25, 41, 0.5))
# Table 7: (resolution, million mult-adds), at width 1.0.
TABLE7 = ((224, 569), (192, 418), (160, 290), (128, 186))


def totals(width=1.0, size=SIZE, standard_convs=False):
    """(mult-adds, paper-rule parameters, PyTorch parameters) of one image."""
    rows = count(mobilenet_v1_specs(width, NUM_CLASSES, standard_convs=standard_convs),
                 size, size)
    return (sum(row[4] for row in rows), sum(row[0].weight_count for row in rows),
            sum(row[3] for row in rows))


def paper_tables():
    """{"table2", "table4", "table6", "table7"}: lists of rows with the paper's figure, ours
    (exact counts and rounded to the paper's precision), `matches`, and a `note` on rows that
    differ."""
    return {"table2": _table2(), "table4": _table4(), "table6": _table6(),
            "table7": _table7()}


def _table2():
    rows = count(mobilenet_v1_specs(1.0, NUM_CLASSES), SIZE, SIZE)
    all_macs = sum(row[4] for row in rows)
    all_weights = sum(row[0].weight_count for row in rows)
    per_kind = {}  # kind name -> [mult-adds, weights]
    for spec, _, _, _, macs in rows:
        sums = per_kind.setdefault(spec.kind, [0, 0])
        sums[0] += macs
        sums[1] += spec.weight_count
    table = []
    for name, kind, paper_macs, paper_params in TABLE2:
        macs, weights = per_kind[kind.name]
        macs_share = round(100.0 * macs / all_macs, 2)
        params_share = round(100.0 * weights / all_weights, 2)
        row = {"layer_type": name, "kind": kind.name, "macs": macs, "params": weights,
               "macs_percent": macs_share, "params_percent": params_share,
               "paper_macs_percent": paper_macs, "paper_params_percent": paper_params,
               "matches": macs_share == paper_macs and params_share == paper_params}
        if not row["matches"]:
            row["note"] = (f"the paper's four mult-add shares add up to "
                           f"{sum(r[2] for r in TABLE2):.2f}%, ours to 100% before rounding: "
                           f"{macs / 1e6:.2f} M / {all_macs / 1e6:.2f} M is {macs_share:.2f}%, "
                           f"so the paper's {paper_macs:.2f} looks like swapped digits")
        table.append(row)
    return table


def _table4():
    table = []
    for name, paper_macs, paper_params in TABLE4:
        standard = name == "Conv MobileNet"
        macs, weights, torch_params = totals(standard_convs=standard)
        row = {"model": name, "macs": macs, "params": weights, "pytorch_params": torch_params,
               "macs_millions": round(macs / 1e6), "params_millions": round(weights / 1e6, 1),
               "paper_macs_millions": paper_macs, "paper_params_millions": paper_params}
        row["matches"] = (row["macs_millions"] == paper_macs
                          and row["params_millions"] == paper_params)
        if not row["matches"]:
            fc_macs = mobilenet_v1_specs(1.0, NUM_CLASSES)[-1].macs(1, 1)
            row["note"] = (f"{macs / 1e6:.2f} M with the FC layer, "
                           f"{(macs - fc_macs) / 1e6:.2f} M without it")
            if round((macs - fc_macs) / 1e6) == paper_macs:
                row["note"] += (": the paper's figure matches the count without the FC layer, "
                                "while its 569 M for MobileNet includes it")
        table.append(row)
    return table


def _table6():
    table = []
    for width, paper_macs, paper_params in TABLE6:
        macs, weights, torch_params = totals(width=width)
        row = {"width": width, "macs": macs, "params": weights, "pytorch_params": torch_params,
               "macs_millions": round(macs / 1e6), "params_millions": round(weights / 1e6, 1),
               "paper_macs_millions": paper_macs, "paper_params_millions": paper_params}
        row["matches"] = (row["macs_millions"] == paper_macs
                          and row["params_millions"] == paper_params)
        table.append(row)
    return table


def _table7():
    table = []
    for size, paper_macs in TABLE7:
        macs, _, _ = totals(size=size)
        row = {"resolution": size, "macs": macs, "macs_millions": round(macs / 1e6),
               "paper_macs_millions": paper_macs}
        row["matches"] = row["macs_millions"] == paper_macs
        if not row["matches"]:
            row["note"] = (f"{macs / 1e6:.2f} M rounds to {row['macs_millions']}; the paper "
                           f"prints {paper_macs}")
        table.append(row)
    return table
