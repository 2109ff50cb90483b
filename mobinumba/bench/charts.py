"""report.png: four charts of a finished report, drawn with matplotlib when it is installed."""


def render_charts(report, path):
    """Draw the charts into `path` (PNG); returns False, writing nothing, without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(14, 10))
    _layer_times(axes[0][0], report["layers"])
    _separable_speedups(axes[0][1], report["separable"])
    _pointwise_gflops(axes[1][0], report["layers"]["pointwise_vs_blas"])
    _peer_latency(axes[1][1], report["peers"])
    config = report["config"]
    figure.suptitle(f"mobinumba: MobileNetV1 width {config['width']:g}, batch {config['batch']}"
                    f", {config['size']}x{config['size']}, {config['threads']} thread(s)")
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=80)
    plt.close(figure)
    return True


def _layer_times(ax, layers):
    rows = layers["layers"]
    colors = {"conv": "tab:red", "dwconv": "tab:orange", "pwconv": "tab:blue",
              "pool": "tab:gray", "dense": "tab:green"}
    ax.bar(range(len(rows)), [row["ms"] for row in rows],
           color=[colors.get(row["kind"], "black") for row in rows])
    ax.set_xticks(range(len(rows)), [row["layer"] for row in rows], rotation=90, fontsize=7)
    ax.set_ylabel("ms (median)")
    ax.set_title("Per-layer time (red stem, orange depthwise, blue pointwise)")


def _separable_speedups(ax, separable):
    blocks = separable["blocks"]
    positions = range(1, len(blocks) + 1)
    ax.plot(positions, [b["theoretical_speedup"] for b in blocks], "k--", label="theoretical")
    ax.plot(positions, [b["im2col_speedup"] for b in blocks], "o-", label="im2col / (dw+pw)")
    ax.plot(positions, [b["direct_speedup"] for b in blocks], "s-", label="direct / (dw+pw)")
    ax.set_yscale("log")
    ax.set_xlabel("block")
    ax.set_ylabel("speedup of depthwise-separable")
    ax.set_title("Depthwise-separable vs standard 3x3 conv, per block")
    ax.legend()


def _pointwise_gflops(ax, blas):
    shapes = blas["shapes"]
    positions = range(len(shapes))
    width = 0.4
    ax.bar([p - width / 2 for p in positions], [s["ours_gflops"] for s in shapes], width,
           label="mobinumba GEMM")
    ax.bar([p + width / 2 for p in positions], [s["blas_gflops"] for s in shapes], width,
           label="numpy BLAS")
    ax.set_xticks(list(positions), [f"{s['m']}x{s['k']}x{s['n']}" for s in shapes],
                  rotation=30, fontsize=7)
    ax.set_ylabel("GFLOP/s")
    ax.set_title("Pointwise layers: our GEMM vs numpy BLAS")
    ax.legend()


def _peer_latency(ax, peers):
    engines = peers["engines"]
    ax.bar(range(len(engines)), [e["p50_ms"] for e in engines], color="tab:blue")
    labels = [e["label"] for e in engines] + [f"{s['label']}\n(skipped)" for s in peers["skipped"]]
    ax.bar(range(len(engines), len(labels)), [0] * len(peers["skipped"]))
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("p50 latency, ms")
    ax.set_title(f"Engines, batch {peers['batch']}, same weights and threads")
