"""``python -m hemet.warmup`` runs a real (tiny) private inference: its logits match the model."""
from hemet import warmup


def test_warmup_runs_a_correct_private_inference():
    assert warmup.run() < 1e-3
