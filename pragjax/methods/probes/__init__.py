"""Truth probes: activation bags, sAwMIL, baselines, conformal prediction and metrics.

- `activations`: residual-stream bags of statements, streamed to disk in float16; entity-disjoint splits.
- `svm`: linear SVMs with per-point margins and costs, solved to a certified duality gap (dual coordinate descent on CPU, preconditioned FISTA on accelerators).
- `sawmil`: the sAwMIL probe (sMIL, relabelling, final SVM; C by cross-validation).
- `baselines`: mean-difference, last-token SVM and logistic-regression probes.
- `conformal`: inductive conformal prediction for one-vs-all probes, three-way sets, multiclass variant.
- `metrics`: MCC, average precision, coverage, abstention.
"""
