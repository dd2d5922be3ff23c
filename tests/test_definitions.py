"""Definition generation: answer validation and the metrics workers export. Real vLLM runs,
killed and resumed, are in tests/test_cluster_e2e.py (and tests/test_models.py)."""

import pytest

from biolord_ray.definitions import validate

PROMPT = ('Write a definition of the biomedical concept "Nocturnal enuresis" in one or two '
          "sentences. Facts from a knowledge graph:\n- also called: bedwetting; sleep "
          "enuresis\n- is a kind of: enuresis\nAnswer with the definition only.")
TERMS = ["Nocturnal enuresis", "bedwetting", "sleep enuresis", "enuresis"]
GOOD = ("Nocturnal enuresis is involuntary urination during sleep in a child old enough to "
        "be expected to stay dry at night.")


@pytest.mark.parametrize("answer, finish, reason", [
    (GOOD, "stop", ""),
    ("Bedwetting: involuntary passing of urine while asleep, common in young children.",
     "stop", ""),  # a synonym counts as mentioning the concept
    ("   \n", "stop", "empty"),
    (GOOD[:60], "length", "truncated"),
    ("I'm sorry, but I cannot provide medical definitions for this concept.", "stop",
     "refusal"),
    ("As an AI language model I do not define diseases.", "stop", "refusal"),
    ("Facts from a knowledge graph: also called bedwetting; sleep enuresis, is a kind of "
     "enuresis.", "stop", "repeats_prompt"),
    ("Enuresis at night.", "stop", "too_short"),
    ("A common fruit with yellow skin that grows in tropical climates worldwide.", "stop",
     "off_topic"),
])
def test_validation_rules_on_hand_made_answers(answer, finish, reason):
    assert validate.check(answer, finish, PROMPT, TERMS) == reason


def test_every_reason_is_listed():
    assert set(validate.REASONS) == {"empty", "truncated", "refusal", "repeats_prompt",
                                     "too_short", "off_topic"}


def test_answer_metrics_reach_the_node_metrics_endpoint(ray_local, node_metrics):
    """Counters incremented in Ray workers appear on the node's Prometheus endpoint."""
    from biolord_ray.definitions import generate

    @ray_local.remote(num_cpus=0)
    def answer(reason, tokens):
        generate._record_answer(reason, tokens)

    ray_local.get([answer.remote("", 12), answer.remote("off_topic", 5)])
    node_metrics.wait_for("ray_biolord_definitions_generated_total", lambda lines: all(
        any(f'outcome="{o}"' in line for line in lines) for o in ("valid", "off_topic")))
