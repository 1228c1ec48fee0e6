"""A failed `madopd eval --reference` says which categories and items failed and why."""

from madopd.commands.eval import explain_failures


def test_failures_are_grouped_by_category_and_reason_and_excused_items_dropped():
    records = [
        {"id": "a_0", "category": "multi_turn_base", "correct": False,
         "error_type": "checker:error:isolation", "stderr_tail": ""},
        {"id": "a_1", "category": "multi_turn_base", "correct": False,
         "error_type": "checker:error:isolation"},
        {"id": "a_2", "category": "multi_turn_base", "correct": True, "error_type": ""},
        {"id": "s_9", "category": "simple", "correct": False, "error_type": "type_error"},
        {"id": "g_1", "category": "simple", "correct": False, "error_type": "gold"},
        {"task_id": "HumanEval/3", "passed": False, "status": "fail", "reason": "assertion",
         "detail": "boom"},
    ]
    lines = explain_failures(records, excused=["g_1"])
    text = "\n".join(lines)
    assert "multi_turn_base: 2 gold answer(s) failed" in text
    assert "2 x checker:error:isolation: a_0; a_1" in text
    assert "simple: 1 gold answer(s) failed" in text and "g_1" not in text
    assert "1 x fail:assertion: HumanEval/3 (boom)" in text
    assert explain_failures([{"id": "x", "correct": True}]) == []
