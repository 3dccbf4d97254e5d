"""The training report image: ROC curves of both models and XGBoost feature importance."""

from __future__ import annotations

from pathlib import Path


def write_report(path: Path, y_true, probabilities: dict, importance: dict[str, float], top: int = 15) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, (roc, imp) = plt.subplots(1, 2, figsize=(12, 5))
    for name, prob in probabilities.items():
        fpr, tpr, _ = roc_curve(y_true, prob)
        roc.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y_true, prob):.3f})")
    roc.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    roc.set(title="ROC on the holdout", xlabel="false positive rate", ylabel="true positive rate")
    roc.legend(loc="lower right")
    ranked = sorted(importance.items(), key=lambda kv: kv[1], reverse=True)[:top][::-1]
    imp.barh([k for k, _ in ranked], [v for _, v in ranked], color="tab:blue")
    imp.set(title=f"XGBoost feature importance (gain, top {top})", xlabel="gain")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
