"""`mobinumba bench`: the benchmark report (report.md, report.json, report.png).

runner.py runs the sections in order and writes the files; one module per section:
environment.py (1), paper.py (2), separable.py (3), latency.py (4, with coldstart.py as the
fresh process it starts), layers.py (5), peers.py (6, with torch_model.py for the PyTorch and
ONNX Runtime engines). synthetic.py makes random-weight models, timing.py holds the timers
and statistics, markdown.py and charts.py render a finished report.
"""
